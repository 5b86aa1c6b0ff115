"""Shared fixtures: a real JACK server, example projects, leak checks.

Nothing here imports sounddevice: PortAudio lists devices when first
imported, and collection runs before the JACK fixture starts the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
JACK_CMD = ["jackd", "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "256"]


def pytest_addoption(parser):
    parser.addoption("--soak-builds", type=int, default=100,
                     help="distinct builds in the soak test (the issue's full length: 1000)")
    parser.addoption("--soak-switch-every", type=int, default=10,
                     help="builds between runtime switches in the soak test")


def _jack_running() -> bool:
    try:
        return subprocess.run(["jack_wait", "-c"], capture_output=True, text=True, timeout=10).stdout.startswith("running")
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def jack_server():
    """A running JACK server (dummy driver, 48 kHz, 256 frames).

    Started here when none runs. Under ``CI=true`` a server that cannot be had
    fails the test instead of skipping it.
    """
    proc = None
    if not _jack_running():
        if shutil.which("jackd") is None:
            if os.environ.get("CI") == "true":
                pytest.fail("jackd is not installed (apt-get install jackd2)")
            pytest.skip("jackd is not installed")
        proc = subprocess.Popen(JACK_CMD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        SESSION_PIDS.add(proc.pid)
        deadline = time.monotonic() + 10
        while not _jack_running():
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                msg = "could not start jackd --no-realtime -d dummy"
                pytest.fail(msg) if os.environ.get("CI") == "true" else pytest.skip(msg)
            time.sleep(0.1)
    yield {"sample_rate": 48000, "block_frames": 256}
    if proc is not None:
        # Leave the server before stopping it: PortAudio's atexit Pa_Terminate
        # against a dead server aborts the interpreter (pa_jack.c: Assertion
        # 'err == 0'), and a MIDI runtime's atexit close would wait on it.
        import sys
        if (midi := sys.modules.get("runtimes.midi.runtime")) is not None:
            midi._close_all()
        if (sd := sys.modules.get("sounddevice")) is not None:
            while sd._initialized:  # sounddevice's own atexit handler then does nothing
                sd._terminate()
        proc.terminate()
        proc.wait(10)


@pytest.fixture(autouse=True)
def _jack_for_marked(request):
    if request.node.get_closest_marker("jack"):
        request.getfixturevalue("jack_server")


@pytest.fixture
def project(tmp_path):
    """Copy an example into tmp_path: ``project("sine")`` -> its folder."""

    def make(name: str, dest: str | None = None) -> Path:
        path = tmp_path / (dest or name)
        shutil.copytree(EXAMPLES / name, path, ignore=shutil.ignore_patterns(".livehost", "__pycache__"))
        return path

    return make


# Child processes that live for the whole session by design (jackd, warm workers).
SESSION_PIDS: set[int] = set()


def _children() -> set[int]:
    pids = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            pass
    return pids


# Threads that may outlive a test by design (none of livehost's own).
_ALLOWED_THREAD_PREFIXES = ("pydevd",)


def _open_files() -> set[str]:
    """Regular files this process holds open (sockets, pipes, devices left out)."""
    files = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        # (PipeWire's JACK library maps its buffers from memfds: /memfd:...)
        if target.startswith("/") and not target.startswith(("/dev/", "/proc/", "/memfd:")):
            files.add(f"{fd.name} -> {target}")
    return files


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail a test that leaves a thread, a child process or an open file behind."""
    threads_before = set(threading.enumerate())
    children_before = _children()
    files_before = _open_files()
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()
                  and not t.name.startswith(_ALLOWED_THREAD_PREFIXES)]
        new_children = {p for p in _children() - children_before - SESSION_PIDS if Path(f"/proc/{p}").exists()
                        and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]}
        new_files = _open_files() - files_before
        if not leaked and not new_children and not new_files or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"leaked threads: {[t.name for t in leaked]}"
    assert not new_children, f"leaked child processes: {sorted(new_children)}"
    assert not new_files, f"leaked open files: {sorted(new_files)}"
