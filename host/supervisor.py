"""The supervisor of a headless rig: restarts ``livehost run`` when it crashes or hangs.

``livehost run --headless`` runs the host in a child process of its own and
stays a small parent that imports neither numba nor any audio library, so
nothing that goes wrong in the host can take it down. The child writes one
heartbeat line a second on a private pipe, saying which program plays, as
long as its engine keeps completing blocks or ticks (or it is waiting for a
device, which is no hang). The supervisor restarts the child with backoff
when it

* exits with an error, is killed (``kill -9``) or crashes in native code, or
* sends no heartbeat for :data:`HEARTBEAT_TIMEOUT_S` (an engine stuck in an
  endless loop cannot be interrupted in-process: the process is ended).

The restarted host restores the state from the snapshot the previous one
wrote every few seconds, and ends the notes the previous one may have left
sounding. A program that was playing when the child crashed or hung twice in
a row is quarantined: the next start plays the program before it.
SIGTERM and Ctrl-C are passed to the child; the supervisor exits with its code.
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
from pathlib import Path

log = logging.getLogger("livehost.host")

HEARTBEAT_S = 0.5  # how often a healthy child says so
HEARTBEAT_TIMEOUT_S = 3.0  # silence that means the child hangs
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # waits before restarts in a row
HEALTHY_S = 30.0  # a child that ran this long resets the backoff and the crash count
STOP_WAIT_S = 1.5  # after SIGTERM, how long the child gets before it is killed
QUARANTINE_AFTER = 2  # crashes or hangs in a row with the same program playing


def supervise(child_args: list[str]) -> int:
    """Run ``livehost <child_args> --supervised`` until it exits by itself or we are told to stop."""
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    failures = 0
    suspects: list[str] = []  # the program playing at each failure in a row
    quarantined: list[str] = []
    while True:
        started = time.monotonic()
        code, playing = _run_child(child_args, quarantined, stopping)
        if stopping or code == 0:
            return code if code is not None else 0
        healthy = time.monotonic() - started > HEALTHY_S
        failures = 1 if healthy else failures + 1
        suspects = ([] if healthy else suspects) + [playing or ""]
        if playing and suspects[-QUARANTINE_AFTER:] == [playing] * QUARANTINE_AFTER and playing not in quarantined:
            quarantined.append(playing)
            log.error("Program %s failed %d times in a row: quarantined, the program before it plays",
                      playing, QUARANTINE_AFTER)
        wait_s = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
        log.error("livehost run %s; restarting in %.1f s", _describe(code), wait_s)
        deadline = time.monotonic() + wait_s
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.05)
        if stopping:
            return 0


def _describe(code: int | None) -> str:
    if code is None:
        return f"sent no heartbeat for {HEARTBEAT_TIMEOUT_S:g} s (a hung engine) and was ended"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _run_child(child_args: list[str], quarantined: list[str], stopping: list) -> tuple[int | None, str | None]:
    """Run one child to its end; return its exit code (None: it hung) and the program it last played."""
    read_fd, write_fd = os.pipe()
    args = [sys.executable, "-m", "host.cli", *child_args, "--supervised", str(write_fd)]
    for digest in quarantined:
        args += ["--quarantine", digest]
    child = subprocess.Popen(args, pass_fds=(write_fd,))
    os.close(write_fd)
    playing = None
    last_beat = time.monotonic()
    buffer = b""
    with selectors.DefaultSelector() as sel, os.fdopen(read_fd, "rb", buffering=0) as pipe:
        sel.register(pipe, selectors.EVENT_READ)
        try:
            while child.poll() is None:
                if stopping:
                    return _stop(child), playing
                if time.monotonic() - last_beat > HEARTBEAT_TIMEOUT_S:
                    child.kill()
                    child.wait()
                    return None, playing
                if sel.select(0.1):
                    chunk = pipe.read(4096)
                    if not chunk:  # the child closed the pipe: it is ending
                        sel.unregister(pipe)
                        continue
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        last_beat = time.monotonic()
                        playing = json.loads(line).get("playing") or playing
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    return child.returncode, playing


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
    """The child's side: one JSON line per :data:`HEARTBEAT_S` on *fd* while *alive()* holds."""

    def __init__(self, fd: int) -> None:
        self._pipe = os.fdopen(fd, "wb", buffering=0)

    def beat(self, playing: str | None) -> None:
        try:
            self._pipe.write(json.dumps({"playing": playing}).encode() + b"\n")
        except (BrokenPipeError, OSError):  # the supervisor is gone: nothing to tell
            pass

    def close(self) -> None:
        try:
            self._pipe.close()
        except OSError:
            pass


def previous_path(project_dir: Path) -> Path:
    return Path(project_dir) / ".livehost" / "previous.json"
