"""Children kept ready for the next save.

A save of defaults (the commonest edit on stage) reuses the build, and its compile is a
quick test run of cached code; forking a child and loading that code into it took most of
its time. So the worker forks the next child once a compile is answered, and it loads
that build ahead: a save of the same build hands it the sources, and only the test run
is left. A save of another build discards it.

A save of new code is compiled in a child too, and a freshly forked child pays for every
page of the worker's compiler state it touches (copy on write): about 0.1 s of a 0.45 s
compile. So a second child is kept ready for any build: it compiles the last good compile's
patch once (or the worker's small warm-up patch) to take its own copy of those pages
and of what numba keeps of the functions and types it met, says so, and waits. A save
of another build uses it when it is ready, and forks as before while it is still warming.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import select
import time
from pathlib import Path

from .children import COMPILE_TIMEOUT_S, Child, end, fork, quieted
from .patch import Sources

PIPE_BYTES = 1 << 20  # a request bigger than the pipe holds takes the usual path
WARMED = b'{"warmed": true}\n'  # what a child ready for any build says first

# Modules and bounds-checked kernels a standby child loaded, by (build, name): None elsewhere,
# so that every other compile loads the build afresh.
_LOADED: dict | None = None


class StandbySlot:
    """The compile worker's standby children, and the sources of the last good compile."""

    def __init__(self) -> None:
        self.child: tuple[int, int, int, Path] | None = None  # pid, request fd, report fd, build
        self.any: tuple[int, int, int] | None = None  # pid, request fd, report fd: ready for any build
        self.compiled: Sources | None = None
        self.warm_up = None  # the worker's throwaway compile, which the child for any build runs first

    def take(self, sources: Sources) -> tuple[int, Child] | None:
        """Hand *sources* to a standby child: the one that holds their build, else the one
        ready for any build once it has warmed up. Its report fd and record, or None."""
        child, self.child = self.child, None
        if child is not None:
            pid, request_fd, report_fd, build = child
            if build != sources.build:  # of no use: it ends
                _end_standby(pid, request_fd, report_fd)
            elif _hand(sources, pid, request_fd, report_fd):
                return report_fd, Child("build", pid, time.monotonic() + COMPILE_TIMEOUT_S)
        if self.any is None or not select.select([self.any[2]], [], [], 0)[0]:
            return None  # none, or still warming up: a fresh fork is sooner
        (pid, request_fd, report_fd), self.any = self.any, None
        if os.read(report_fd, len(WARMED)) == WARMED and _hand(sources, pid, request_fd, report_fd):
            return report_fd, Child("build", pid, time.monotonic() + COMPILE_TIMEOUT_S)
        return None

    def fork(self, life) -> None:
        """Fork a standby child for the last good compile's build, and one for any build,
        unless they are ready. Each runs ``life(sources, report_fd, request_fd, warm_up)``."""
        if self.child is None and self.compiled is not None and self.compiled.build.exists():
            pid, request_w, report_r = _fork_standby(life, self.compiled)
            self.child = (pid, request_w, report_r, self.compiled.build)
        if self.any is None and self.warm_up is not None:
            like = self.compiled  # the child warms up on the patch the next save most likely edits
            self.any = _fork_standby(life, None, lambda: self.warm_up(like=like))

    def forget(self) -> None:
        """In a forked child: close the standby children's pipes, inherited from the worker."""
        for held in (self.child, self.any):
            if held is not None:
                os.close(held[1])
                os.close(held[2])
        self.child = self.any = None

    def close(self) -> None:
        child, self.child = self.child, None
        spare, self.any = self.any, None
        for held in (child, spare):
            if held is not None:
                _end_standby(*held[:3])


STANDBY = StandbySlot()


def _hand(sources: Sources, pid: int, request_fd: int, report_fd: int) -> bool:
    """Write *sources* to a standby child; when that cannot be done, end the child (it ends at EOF too)."""
    request = pickle.dumps(sources)
    try:
        if len(request) > PIPE_BYTES or os.write(request_fd, request) != len(request):
            raise OSError("too big")
    except OSError:  # too big, or the child is gone
        _end_standby(pid, request_fd, report_fd)
        return False
    os.close(request_fd)  # EOF: the request is whole
    return True


def _end_standby(pid: int, request_fd: int, report_fd: int) -> None:
    """Close a standby child's pipes and end it."""
    os.close(request_fd)
    os.close(report_fd)
    end(pid)


def _fork_standby(life, prepared: Sources | None, warm_up=None) -> tuple[int, int, int]:
    """Fork a standby child that loads *prepared*'s build, or runs *warm_up*; its pid, request and report fds."""
    request_r, request_w = os.pipe()
    report_r, report_w = os.pipe()
    try:
        fcntl.fcntl(request_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # a smaller limit: big requests take the usual path
        pass
    pid = fork(lambda: life(prepared, report_w, request_r, warm_up), request_w, report_r)
    os.close(request_r)
    os.close(report_w)
    return pid, request_w, report_r


def wait(load, request_fd: int, report_fd: int | None = None) -> Sources:
    """In a standby child: call *load* (it loads a build by compiling it once, or warms up)
    unheard; with *report_fd* (ready for any build), keep nothing of it and say so there.
    Then read the request: the sources of the compile this child is for."""
    global _LOADED
    _LOADED = {}
    with quieted(1, 2):  # the patch's top-level print()s were shown by its own compile
        try:
            load()
        except Exception:  # the build changed under us (pruned): the request's own compile says what is wrong
            pass
    if report_fd is not None:
        _LOADED = None  # nothing of the warm-up is kept for the request
        os.write(report_fd, WARMED)
    chunks = []
    while chunk := os.read(request_fd, PIPE_BYTES):
        chunks.append(chunk)
    if not chunks:  # discarded
        os._exit(0)
    return pickle.loads(b"".join(chunks))


def kept(key: tuple, make):
    """``make()``, or in a standby child what it made for *key* before."""
    if _LOADED is None:
        return make()
    if key not in _LOADED:
        _LOADED[key] = make()
    return _LOADED[key]


def loaded_ahead() -> bool:
    """Whether this is a standby child, which loads its build ahead of the request."""
    return _LOADED is not None
