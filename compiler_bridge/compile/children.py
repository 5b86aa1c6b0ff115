"""Forked compile children: their budget, their reports, their deadlines and their end.

A child tells its parent how it is getting on, one JSON object a line on a
pipe: ``testing`` (a kernel's test run starts: its time limit starts now),
``tested``, and last ``result``, ``error`` (a performer's) or ``internal``
(a bug of ours). The parent reads them against the deadlines, and reaps
every child it forked.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import select
import signal
import time
from dataclasses import dataclass

from ..errors import ConfigError, PatchError

TEST_RUN_TIMEOUT_S = 1.2  # from the start of a kernel's test run (a sound one takes well under 0.4 s): an endless
# loop is refused this soon, within 2 s of the save with the compile before it
COMPILE_TIMEOUT_S = 60.0  # the whole compile, numba's included
MEMORY_BUDGET_BYTES = 768 << 20  # what the patch's top-level code, its compile and test run may add


@dataclass
class Child:
    part: str
    pid: int
    deadline: float
    buffer: bytes = b""
    testing: tuple | None = None  # (kernel, line) whose test run is under way
    done: bool = False  # it sent its last word
    open: bool = True


def fork(life, *closed_in_child: int) -> int:
    """Fork a child that closes *closed_in_child* and runs *life* (which never returns); its pid."""
    # The child's garbage collector must not walk this process's objects: touching
    # them all copies every page (a collection in a child took 150 ms here).
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        for fd in closed_in_child:
            os.close(fd)
        life()
    gc.unfreeze()
    return pid


def report_to(fd: int):
    """A child's way of telling its parent: one JSON object a line on *fd*."""
    return lambda message: os.write(fd, (json.dumps(message) + "\n").encode())


@contextlib.contextmanager
def quieted(*fds: int):
    """File descriptors *fds* to /dev/null meanwhile."""
    saved = [os.dup(fd) for fd in fds]
    quiet = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(quiet, fd)
    try:
        yield
    finally:
        for fd, kept in zip(fds, saved):
            os.dup2(kept, fd)
            os.close(kept)
        os.close(quiet)


def over_budget(shown: str, line: int | None, exc: MemoryError) -> PatchError:
    return PatchError(shown, line, f"over the memory budget of {MEMORY_BUDGET_BYTES >> 20} MiB for top-level code, "
                                   f"compile and test run ({exc})")


def await_children(children: dict[int, Child], patch_path: str) -> dict:
    """Read the children's reports until each has succeeded, one fails, one dies, or a deadline passes.

    An error any reports ends the compile at once; a child that dies without
    a word is reported once every other has had its say.
    """
    results: dict[str, dict] = {}
    died: PatchError | None = None
    while any(c.open for c in children.values()):
        now = time.monotonic()
        waiting = {fd: c for fd, c in children.items() if c.open}
        soonest = min(waiting.values(), key=lambda c: c.deadline)
        ready = select.select(list(waiting), [], [], max(soonest.deadline - now, 0.0))[0]
        if not ready:
            raise _overdue(soonest, patch_path)
        for fd in ready:
            child = children[fd]
            chunk = os.read(fd, 65536)
            if not chunk:
                child.open = False
                status = reap(child.pid)
                if not child.done and died is None:
                    died = _child_died(status, patch_path, child.testing)
                continue
            child.buffer += chunk
            while b"\n" in child.buffer:
                line, child.buffer = child.buffer.split(b"\n", 1)
                _heard(child, json.loads(line), results, patch_path)
    if died is not None:
        raise died
    return results["build"]


def _heard(child: Child, message: dict, results: dict[str, dict], patch_path: str) -> None:
    """What one line of *child*'s report means: a deadline, its result, or an error raised here."""
    if "testing" in message:
        child.testing = (message["testing"], message["line"])
        child.deadline = time.monotonic() + TEST_RUN_TIMEOUT_S
    elif "tested" in message:  # that test run is over: compiling again
        child.testing = None
        child.deadline = time.monotonic() + COMPILE_TIMEOUT_S
    elif "result" in message:
        results[child.part], child.done = message["result"], True
        child.deadline = time.monotonic() + COMPILE_TIMEOUT_S  # only its exit is left
    elif "error" in message:
        e = message["error"]
        raise (ConfigError if message["kind"] == "ConfigError" else PatchError)(e["file"], e["line"], e["message"])
    else:
        raise PatchError(patch_path, None, f"internal compile error (a livehost bug, not the "
                                           f"patch): {message['internal']}")


def _overdue(child: Child, patch_path: str) -> PatchError:
    if child.testing:
        kernel, line = child.testing
        return PatchError(patch_path, line, f"{kernel}() did not finish its test run within "
                                            f"{TEST_RUN_TIMEOUT_S:g} s: an endless loop, or far slower "
                                            "than its budget")
    return PatchError(patch_path, None, f"the compile did not finish within {COMPILE_TIMEOUT_S:g} s")


def _child_died(status: int | None, patch_path: str, testing) -> PatchError:
    how = (f"signal {signal.Signals(-status).name}" if status is not None and status < 0 else f"code {status}")
    if testing:
        return PatchError(patch_path, testing[1], f"{testing[0]}() crashed its test run ({how})")
    return PatchError(patch_path, None, f"the compile exited ({how}) while compiling")


def end(pid: int) -> None:
    """Kill the child and reap it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    reap(pid)


def reap(pid: int) -> int | None:
    """Wait for the child; its exit code, or minus the signal that ended it (None if already reaped)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


def limit_memory(budget_bytes: int = MEMORY_BUDGET_BYTES) -> None:
    """Cap this process's address space at what it uses now plus *budget_bytes*."""
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + budget_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def die_with_parent() -> None:
    """Have the kernel end this process when its parent dies (Linux), so nothing is left orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
