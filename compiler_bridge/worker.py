"""The persistent compile worker: a separate, pre-warmed, low-priority process.

The host never compiles (a numba compile holds the GIL for tens to hundreds
of milliseconds). Requests and replies are JSON lines on a private pipe, so
a patch that prints cannot corrupt them. A compile that does not return in
time (an endless loop in a kernel's test run) kills the worker; a fresh one
is started for the next request.
"""

from __future__ import annotations

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

from .compile import ERROR_NAME, livehost_dir, write_json_atomic
from .config import PATCH_NAME
from .errors import PatchError

WORKER_NICE = 10
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

    def __init__(self, *, timeout_s: float = 30.0, warm: tuple[str, ...] = ()) -> None:
        """*warm* names modules whose numba code the worker builds into numba's
        cache before its first compile (the engines: ``livehost run`` passes
        them; this package imports nothing from ``runtimes``)."""
        self.warm = tuple(warm)
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
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
            [sys.executable, "-m", "compiler_bridge.worker", *self.warm], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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
        """Compile *project_dir* in the worker; never raises for a bad project."""
        project_dir = Path(project_dir).resolve()
        t0 = time.perf_counter()
        with self._lock:
            self._ensure()
            try:
                self._proc.stdin.write(json.dumps({"project": str(project_dir)}) + "\n")
                self._proc.stdin.flush()
                line = self._read_line(self.timeout_s)
            except BrokenPipeError:
                line = ""
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
        with self._lock:
            if self._proc is None:
                return
            self._proc.stdin.close()
            try:
                self._proc.wait(CLOSE_WAIT_S)  # a compile under way is not waited for: shutdown stays quick
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc.stdout.close()
            self._proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _warm(modules: list[str]) -> None:
    """Import numba and build the shared native code (and *modules*') into numba's cache."""
    import importlib

    import numba
    import numpy as np

    for module in ("compiler_bridge.abi", "compiler_bridge.api", *modules):  # cfuncs compile (or load) at import
        importlib.import_module(module)
    numba.njit(lambda x: x + 1)(np.float64(1.0))  # first compile pays LLVM's start-up


def main() -> None:
    from .compile import compile_project, die_with_parent
    from .errors import SourceError

    die_with_parent()  # a host killed with -9 leaves no worker behind

    # Ctrl-C in a terminal reaches the whole process group: the host decides
    # when this worker ends (it closes our stdin), so ignore it here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # a patch's print() goes to stderr, never into the protocol
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass
    _warm(sys.argv[1:])
    proto.write(json.dumps({"ready": True}) + "\n")
    proto.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"ok": True, "compiled": compile_project(Path(request["project"]))}
        except SourceError as exc:
            reply = {"ok": False, "error": exc.to_json()}
        except Exception as exc:  # a bug of ours must not kill the worker
            text = "".join(traceback.format_exception_only(exc)).strip()
            reply = {"ok": False, "error": SourceError(request["project"], None,
                                                       f"internal compile error: {text}").to_json()}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


if __name__ == "__main__":
    main()
