"""The supervisor of a headless rig: restarts ``livehost run`` when it crashes or hangs.

``livehost run --headless`` runs the host in a child process of its own and
stays a small parent that imports neither numba nor any audio library, so
nothing that goes wrong in the host can take it down. The child writes a
heartbeat line every :data:`HEARTBEAT_S` on a private pipe, saying which
program plays, as long as its engine's callback (or clock thread) keeps
returning, whatever it plays -- silence, a clock that waits for its leader's
Start, a stopped transport -- and while the runtime waits for its device.
Alive means the engine runs, not that music moves.

The supervisor restarts the child with backoff when it

* exits with an error, is killed (``kill -9``) or crashes in native code,
* says that a call of its engine began and has not returned for
  :data:`HANG_S` (an endless loop in a kernel cannot be interrupted
  in-process: the process is ended), or
* sends nothing for :data:`HEARTBEAT_TIMEOUT_S` (the host's own threads stopped).

A program is set aside (quarantined) only on evidence that it caused the
fault: its kernel was inside the call that hung (one hang is enough), or it
was playing at two crashes in native code in a row. A host that was killed
from outside, exited with an error or went silent is restarted, nothing more.
The restarted host restores the state from the snapshot the previous one wrote
every few seconds, and ends the notes the previous one may have left sounding.
SIGTERM and Ctrl-C are passed to the child; ``--duration`` ends the run
whatever the child is doing; the supervisor exits with the child's code.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("livehost.host")

HEARTBEAT_S = 0.25  # how often a healthy child says so
HANG_S = 0.75  # a call of the engine begun this long ago and not returned: a hang (the child says so)
HEARTBEAT_TIMEOUT_S = 3.0  # silence that means the child's own threads hang
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # waits before restarts in a row
HEALTHY_S = 30.0  # a child that ran this long resets the backoff and the crash count
STOP_WAIT_S = 1.5  # after SIGTERM, how long the child gets before it is killed
CRASHES_TO_QUARANTINE = 2  # native crashes in a row with the same program playing
CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT)


@dataclass
class Ending:
    """How one child ended: its exit code (None: ended here), what it played last, and why."""

    code: int | None
    playing: str | None = None
    hung: bool = False  # it said a call of its engine did not return
    in_kernel: bool = False  # ... with a kernel inside it: evidence against that program

    def describe(self) -> str:
        if self.hung:
            where = "a kernel" if self.in_kernel else "the engine"
            return f"hung in {where} (a call did not return for {HANG_S:g} s) and was ended"
        if self.code is None:
            return f"sent no heartbeat for {HEARTBEAT_TIMEOUT_S:g} s and was ended"
        if self.code < 0:
            return f"was killed by {signal.Signals(-self.code).name}"
        return f"exited with code {self.code}"

    def crashed(self) -> bool:
        return self.code is not None and -self.code in CRASH_SIGNALS


def supervise(child_args: list[str], duration_s: float | None = None) -> int:
    """Run ``livehost <child_args> --supervised`` until it exits by itself, we are told to stop,
    or *duration_s* have passed."""
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    deadline = None if duration_s is None else time.monotonic() + duration_s
    failures = 0
    crashes: list[str] = []  # the program playing at each native crash in a row
    quarantined: list[str] = []
    while True:
        started = time.monotonic()
        left_s = None if deadline is None else max(deadline - started, 0.0)
        ending = _run_child(child_args, quarantined, stopping, left_s)
        if stopping or ending.code == 0:
            return ending.code or 0
        if _past(deadline):
            return 0
        healthy = time.monotonic() - started > HEALTHY_S
        failures = 1 if healthy else failures + 1
        if healthy or not ending.crashed():
            crashes = []
        if ending.crashed():
            crashes.append(ending.playing or "")
        suspect = None
        if ending.hung and ending.in_kernel:
            suspect, why = ending.playing, "its kernel hung"
        elif ending.playing and crashes[-CRASHES_TO_QUARANTINE:] == [ending.playing] * CRASHES_TO_QUARANTINE:
            suspect, why = ending.playing, f"it was playing at {CRASHES_TO_QUARANTINE} crashes in a row"
        if suspect and suspect not in quarantined:
            quarantined.append(suspect)
            log.error("Program %s quarantined (%s): the program before it plays until the next save",
                      suspect, why)
        wait_s = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
        log.error("livehost run %s; restarting in %.1f s", ending.describe(), wait_s)
        until = time.monotonic() + wait_s
        while not stopping and time.monotonic() < until and not _past(deadline):
            time.sleep(0.05)
        if stopping or _past(deadline):
            return 0


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _run_child(child_args: list[str], quarantined: list[str], stopping: list, left_s: float | None) -> Ending:
    """Run one child to its end (at most *left_s* seconds)."""
    read_fd, write_fd = os.pipe()
    args = [sys.executable, "-m", "host.cli", *child_args, "--supervised", str(write_fd)]
    started = time.monotonic()
    if left_s is not None:  # the child ends itself at this end (CLOCK_MONOTONIC is the machine's), first
        args += ["--duration", f"{left_s:.3f}", "--ends-at", f"{started + left_s:.3f}"]
    for digest in quarantined:
        args += ["--quarantine", digest]
    child = subprocess.Popen(args, pass_fds=(write_fd,))
    os.close(write_fd)
    ending = Ending(code=None)
    last_beat = started
    end_by = None if left_s is None else started + left_s + STOP_WAIT_S  # then it is stopped
    buffer = b""
    with selectors.DefaultSelector() as sel, os.fdopen(read_fd, "rb", buffering=0) as pipe:
        sel.register(pipe, selectors.EVENT_READ)
        try:
            while child.poll() is None:
                if stopping or _past(end_by):
                    ending.code = _stop(child)
                    return ending
                if ending.hung or time.monotonic() - last_beat > HEARTBEAT_TIMEOUT_S:
                    child.kill()
                    child.wait()
                    ending.code = None
                    return ending
                if sel.select(0.05):
                    chunk = pipe.read(4096)
                    if not chunk:  # the child closed the pipe: it is ending
                        sel.unregister(pipe)
                        continue
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        last_beat = time.monotonic()
                        beat = json.loads(line)
                        ending.playing = beat.get("playing") or ending.playing
                        if beat.get("hung"):
                            ending.hung, ending.in_kernel = True, bool(beat.get("in_kernel"))
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    ending.code = child.returncode
    return ending


def _stop(child: subprocess.Popen) -> int:
    """Pass SIGTERM on; a child that ends by it, or is killed for taking too long, stopped as asked."""
    child.send_signal(signal.SIGTERM)
    try:
        code = child.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return 0
    return 0 if code == -signal.SIGTERM else code


class Heartbeat:
    """The child's side: JSON lines on *fd* (see :func:`_run_child` for what they say)."""

    def __init__(self, fd: int) -> None:
        self._pipe = os.fdopen(fd, "wb", buffering=0)

    def beat(self, playing: str | None) -> None:
        self._send({"playing": playing})

    def hung(self, playing: str | None, in_kernel: bool) -> None:
        """A call of the engine began :data:`HANG_S` ago and has not returned."""
        self._send({"playing": playing, "hung": True, "in_kernel": in_kernel})

    def _send(self, message: dict) -> None:
        try:
            self._pipe.write(json.dumps(message).encode() + b"\n")
        except (BrokenPipeError, OSError):  # the supervisor is gone: nothing to tell
            pass

    def close(self) -> None:
        try:
            self._pipe.close()
        except OSError:
            pass


def previous_path(project_dir: Path) -> Path:
    return Path(project_dir) / ".livehost" / "previous.json"
