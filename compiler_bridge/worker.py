"""The persistent compile worker: a separate, pre-warmed, low-priority process.

The host never compiles (a numba compile holds the GIL for tens to hundreds
of milliseconds). Requests and replies are JSON lines on a private pipe, so
a patch that prints cannot corrupt them. A compile that does not return in
time (an endless loop in a kernel's test run) kills the worker; a fresh one
is started for the next request.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .compile import ERROR_NAME, livehost_dir
from .config import PATCH_NAME
from .errors import PatchError
from .files import write_json_atomic

WORKER_NICE = 10
NO_SPARE = "--no-spare"  # the worker's flag: no child kept warm for a save of new code
CLOSE_WAIT_S = 0.5


@dataclass
class CompileResult:
    ok: bool
    compiled: dict | None
    error: dict | None  # {"file", "line", "message", "text"}
    seconds: float

    @property
    def text(self) -> str:
        return "" if self.ok else self.error["text"]


class CompileWorker:
    """Owns one worker process; :meth:`compile` is safe from any one thread."""

    def __init__(self, *, timeout_s: float = 30.0, warm: tuple[str, ...] = (), spare: bool = True) -> None:
        """*warm* names modules whose numba code the worker builds into numba's
        cache before its first compile (the engines: ``livehost run`` passes
        them; this package imports nothing from ``runtimes``). *spare*: keep a
        warmed-up child ready for a save of new code (see
        :mod:`compiler_bridge.compile.standby`), about 0.3 s of CPU at low
        priority after each such save."""
        self.warm = tuple(warm)
        self.spare = spare
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.restarts = 0

    def start(self) -> "CompileWorker":
        with self._lock:
            self._ensure()
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "compiler_bridge.worker", *self.warm, *([] if self.spare else [NO_SPARE])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
        )
        ready = self._read_line(60.0)
        if not ready or json.loads(ready).get("ready") is not True:
            self._kill()
            raise OSError("the compile worker did not start")

    def _read_line(self, timeout_s: float) -> str | None:
        """One reply line; ``""`` when the worker has exited, None on a timeout."""
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                return None
        return self._proc.stdout.readline()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for f in (self._proc.stdin, self._proc.stdout):
                f.close()
            self._proc = None

    def compile(self, project_dir: Path) -> CompileResult:
        """Compile *project_dir* in the worker (started on first use); never raises for a bad project.

        A compile cut short by :meth:`close` returns a failed result and writes no error.
        """
        project_dir = Path(project_dir).resolve()
        t0 = time.perf_counter()
        with self._lock:
            if self._closed.is_set():
                return CompileResult(False, None, _stopped(project_dir), 0.0)
            try:
                self._ensure()
            except OSError as exc:
                error = _stopped(project_dir) if self._closed.is_set() else PatchError(
                    str(project_dir / PATCH_NAME), None, f"cannot compile: {exc}").to_json()
                return CompileResult(False, None, error, time.perf_counter() - t0)
            try:
                self._proc.stdin.write(json.dumps({"project": str(project_dir)}) + "\n")
                self._proc.stdin.flush()
                line = self._read_line(self.timeout_s)
            except (BrokenPipeError, ValueError):  # ValueError: close() closed the pipe under us
                line = ""
            if not line and self._closed.is_set():
                self._kill()
                return CompileResult(False, None, _stopped(project_dir), time.perf_counter() - t0)
            if not line:
                code = self._proc.wait() if line == "" else None
                self._kill()
                self.restarts += 1
                why = (f"the compile worker exited (code {code}) while compiling" if code is not None else
                       f"compile and test run did not return within {self.timeout_s:g} s (an endless loop in a kernel?)")
                error = PatchError(str(project_dir / PATCH_NAME), None, why).to_json()
                write_json_atomic(livehost_dir(project_dir) / ERROR_NAME, {**error, "time": time.time()})
                return CompileResult(False, None, error, time.perf_counter() - t0)
        reply = json.loads(line)
        return CompileResult(reply["ok"], reply.get("compiled"), reply.get("error"), time.perf_counter() - t0)

    def close(self) -> None:
        """End the worker; a compile under way is not waited for, so shutdown stays quick."""
        self._closed.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
            except (OSError, ValueError):  # a compile thread is writing: it is ended all the same
                pass
            try:
                proc.wait(CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with self._lock:  # a compile thread, if any, has seen the end by now
            if self._proc is not None:
                self._kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _stopped(project_dir: Path) -> dict:
    return PatchError(str(project_dir / PATCH_NAME), None, "compile stopped: livehost is shutting down").to_json()


def _warm(modules: list[str]) -> None:
    """Import numba and build the shared native code (and *modules*') into numba's cache."""
    import importlib

    import numba
    import numpy as np

    for module in ("compiler_bridge.abi", "compiler_bridge.api", *modules):  # cfuncs compile (or load) at import
        importlib.import_module(module)
    numba.njit(lambda x: x + 1)(np.float64(1.0))  # first compile pays LLVM's start-up
    numba.typeof(np.zeros(1))  # an array's type imports numpy.ma (30 ms): not in every compile's child


WARM_PATCH = """import math
from compiler_bridge.api import note_off, note_on

class State:
    phase = 0.0
    step = 0

def audio(s, ctx, inp, out):
    for i in range(out.shape[0]):
        out[i, 0] = 0.1 * math.sin(s.phase)
        s.phase = (s.phase + 0.01) % (2.0 * math.pi)

def midi(s, ctx, ev):
    if ctx.tick % 6 == 0:
        note_on(ev, 60, 90)
    elif ctx.tick % 6 == 3:
        note_off(ev, 60)
"""


def _compile_once_here(checked: bool = True, like=None) -> None:
    """Compile a small patch in this process: each compile runs in a child forked
    from here, and starts from the typing and code-generation state it leaves
    (about 0.15 s less per compile here). The standby child for any build runs it
    too (without the *checked* part), to take its own copy of that state: there it
    compiles the last good compile's patch and settings, *like* (a Sources), when
    there is one. The next save is most often an edit of that patch, and numba
    then meets the functions, types and operations it has just compiled."""
    import tempfile

    from .compile.parts import compile_here
    from .config import CONFIG_NAME

    with tempfile.TemporaryDirectory(prefix="livehost-warm-") as folder:
        project = Path(folder)  # .livehost/ is empty here: a real compile, whatever the project has built
        (project / CONFIG_NAME).write_text(like.config.text if like else '[[runtime_settings]]\nruntime = "audio"\n')
        (project / PATCH_NAME).write_text(like.source if like else WARM_PATCH)
        compile_here(project, checked=checked)


def _exit_with_parent(poll_s: float = 0.1) -> None:
    """End this process once its parent is gone (it is then adopted: another parent id).

    Not PR_SET_PDEATHSIG: that follows the parent *thread*, and the host starts
    the worker from the thread of its first compile, which ends right after it
    (the worker was killed after every first compile, and a save coming just
    then failed).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(0)

    threading.Thread(target=watch, name="livehost-worker-parent", daemon=True).start()


def main() -> None:
    from .compile import STANDBY, compile_project, fork_standby
    from .errors import SourceError

    _exit_with_parent()  # a host killed with -9 leaves no worker behind

    # Ctrl-C in a terminal reaches the whole process group: the host decides
    # when this worker ends (it closes our stdin), so ignore it here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # a patch's print() goes to stderr, never into the protocol
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass
    modules = [a for a in sys.argv[1:] if a != NO_SPARE]
    _warm(modules)
    proto.write(json.dumps({"ready": True}) + "\n")
    proto.flush()
    warmed = False
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"ok": True, "compiled": compile_project(Path(request["project"]), standby=True)}
        except SourceError as exc:
            reply = {"ok": False, "error": exc.to_json()}
        except Exception as exc:  # a bug of ours must not kill the worker
            text = "".join(traceback.format_exception_only(exc)).strip()
            reply = {"ok": False, "error": SourceError(request["project"], None,
                                                       f"internal compile error: {text}").to_json()}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()
        if not warmed:  # after the first reply, so the first sound does not wait for it
            _compile_once_here()
            if NO_SPARE not in sys.argv[1:]:
                STANDBY.warm_up = functools.partial(_compile_once_here, checked=False)
            warmed = True
        fork_standby()  # after the reply too: the next save of this build waits only for its test run
    STANDBY.close()


if __name__ == "__main__":
    main()
