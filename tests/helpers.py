"""Helpers shared by the tests: waiting, MIDI checks, the audio capture client.

Test files import these from here, never from one another.
"""

from __future__ import annotations

import json
import os
import re
import signal
import gc
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

CAPTURE = Path(__file__).with_name("jack_audio_capture.py")
LINK_PEER = Path(__file__).with_name("link_peer.py")
ROOT = Path(__file__).resolve().parents[1]
LIVEHOST_RUN = [sys.executable, "-m", "host.cli", "--log-format", "json", "run"]
# Under `pw-jack` (PipeWire's JACK interface): its libjack comes first on the library path.
ON_PIPEWIRE = "pipewire" in os.environ.get("LD_LIBRARY_PATH", "")


# A MIDI kernel that counts the notes it played (from 30, on the runtime's channel): a restart
# that restored the state goes on from the count, not from 30.
COUNTER_PATCH = '''from compiler_bridge.api import note_off, note_on


class State:
    count = 0


def midi(s, ctx, ev):
    if ctx.tick % 6 == 0:
        note_on(ev, 30 + s.count % 60, 100)
    elif ctx.tick % 6 == 3:
        note_off(ev, 30 + s.count % 60)
        s.count += 1
'''


def rig_project(tmp_path: Path, toml: str, patch: str) -> Path:
    """A project ``tmp_path/rig`` with this ``livehost.toml`` and ``patch.py``."""
    proj = tmp_path / "rig"
    proj.mkdir()
    (proj / "livehost.toml").write_text(toml)
    (proj / "patch.py").write_text(patch)
    return proj


def wait_for(predicate, timeout_s: float = 60.0, poll_s: float = 0.005) -> None:
    """Wait until *predicate()* is true; fail the test after *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(poll_s)


def stuck_notes(messages: Iterable[Sequence[int]]) -> set[tuple[int, int]]:
    """Return the ``(channel, note)`` pairs left sounding by raw *messages*.

    A NoteOn with velocity > 0 starts a note; a NoteOff, or a NoteOn with
    velocity 0, ends it. Other messages are ignored.
    """
    sounding: set[tuple[int, int]] = set()
    for data in messages:
        _note(sounding, data)
    return sounding


def _note(sounding: set[tuple[int, int]], data: Sequence[int]) -> None:
    """Start or end the note of one raw MIDI message in *sounding*."""
    if len(data) < 3 or data[0] & 0xF0 not in (0x80, 0x90):
        return
    key = (data[0] & 15, data[1])
    if data[0] & 0xF0 == 0x90 and data[2] > 0:
        sounding.add(key)
    else:
        sounding.discard(key)


# --- xruns of a non-real-time server --------------------------------------------
#
# On a dummy server without real-time scheduling, a client thread that the
# machine wakes late (a busy or virtual CPU) makes the server report an xrun;
# the late client's cycle is lost or shifted for everyone downstream. That is
# the rig's noise, not livehost's: what the tests judge is what no xrun touched.
# A MIDI capture (jack_midi_capture.py) notes JACK's frame time when each xrun
# notice arrives (from its notification thread, after the late cycle).

XRUN_BEFORE = 14400  # frames (0.3 s at 48 kHz) before a notice's arrival that its xrun may have touched
XRUN_AFTER = 2400  # ... and after it


def jack_frame_of(report: dict, k: int) -> int:
    """JACK's frame time of frame *k* of an audio capture's take (its report's ``jumps``: a cycle
    the capture missed leaves a gap in JACK's frames, not in the take's)."""
    take, jack = next((t, j) for t, j in reversed(report["jumps"]) if t <= k)
    return jack + k - take


def clear_of(frames, xrun_frames: Sequence[int]) -> np.ndarray:
    """For each of *frames*: True when no xrun (noticed at one of *xrun_frames*) can have touched it."""
    f = np.asarray(frames, np.int64).reshape(-1, 1)
    x = np.asarray(list(xrun_frames), np.int64).reshape(1, -1)
    return ~((f >= x - XRUN_BEFORE) & (f <= x + XRUN_AFTER)).any(axis=1)


def touched(first: int, last: int, xrun_frames: Sequence[int]) -> bool:
    """Whether an xrun (noticed at one of *xrun_frames*) may have touched frames *first* to *last*."""
    return any(x - XRUN_BEFORE <= last and x + XRUN_AFTER >= first for x in xrun_frames)


def stuck_notes_clear_of(events: Iterable[tuple[int, Sequence[int]]], xrun_frames: Sequence[int]):
    """:func:`stuck_notes` of ``(frame, data)`` *events*, judged where no xrun reached.

    Events an xrun may have touched are left out, and a note sounding when an
    xrun's reach begins is forgotten (its NoteOff may be what was lost); every
    note started after that must still end.
    """
    events = list(events)
    clear = clear_of([f for f, _ in events], xrun_frames)
    starts = sorted(int(x) - XRUN_BEFORE for x in xrun_frames)
    sounding: set[tuple[int, int]] = set()
    k = 0
    for (frame, data), ok in zip(events, clear):
        while k < len(starts) and starts[k] <= frame:
            sounding.clear()
            k += 1
        if ok:
            _note(sounding, data)
    return sounding


def expected_sequencer_events(ticks: int, channel: int = 0):
    """Sixteenths at 24 ppqn: NoteOn on tick 6k, NoteOff on tick 6k + 3."""
    notes = [36, 38, 42, 38]
    events = []
    for k in range(ticks // 6 + 1):
        note = notes[k % 4]
        if 6 * k < ticks:
            events.append((6 * k, "note_on", note))
        if 6 * k + 3 < ticks:
            events.append((6 * k + 3, "note_off", note))
    return events


class CaptureProcess:
    """Drives tests/jack_audio_capture.py over its line protocol."""

    def __init__(self, channels: int, tmp_path: Path, sine_hz: float = 1000.0) -> None:
        self.tmp_path = tmp_path
        self.proc = subprocess.Popen([sys.executable, str(CAPTURE), "--channels", str(channels),
                                      "--sine-hz", str(sine_hz)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()
        self.takes = 0

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"capture client exited ({self.proc.wait()})")
        return json.loads(line)

    def cmd(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def ports(self, regex: str) -> list[str]:
        return self.cmd(f"ports {regex}")["ports"]

    def connect(self, src: str, dst: str) -> None:
        self.cmd(f"connect {src} {dst}")

    def start(self) -> None:
        self.cmd("start")

    def stop(self) -> tuple[np.ndarray, dict]:
        """Stop recording; return the first channel's samples and the report."""
        x, report = self.stop_all()
        return x[:, 0], report

    def stop_all(self) -> tuple[np.ndarray, dict]:
        """Stop recording; return every channel (frames x channels) and the report."""
        self.takes += 1
        path = self.tmp_path / f"take{self.takes}.npy"
        report = self.cmd(f"stop {path}")
        return np.load(path), report

    def follow(self, prefix: str) -> None:
        """Connect output ports ``PREFIX<N>`` to input N mod channels + 1 whenever they are (re)registered."""
        self.cmd(f"follow {re.escape(prefix)}([0-9]+)")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def portaudio_client_name() -> str:
    """The JACK client name of this process's PortAudio (after ``import sounddevice``)."""
    import ctypes.util

    import sounddevice  # noqa: F401  (initialises PortAudio's JACK client)

    lib = ctypes.CDLL(ctypes.util.find_library("portaudio"))
    name = ctypes.c_char_p()
    assert lib.PaJack_GetClientName(ctypes.byref(name)) == 0
    return name.value.decode()


def our_ports(cap: CaptureProcess, kind: str) -> list[str]:
    """This process's PortAudio ports of *kind* (``out`` or ``in``)."""
    return cap.ports(f"^{portaudio_client_name()}:{kind}_")


class LivehostRun:
    """``livehost run PROJECT --headless [extra...]`` in its own process group,
    as a performer starts it; its JSON log lines go to a file."""

    def __init__(self, project: Path, *extra: str, env: dict | None = None, exit_s: float = 2.0,
                 start_s: float = 60.0) -> None:
        self.log_path = project.parent / f"{project.name}-livehost.log"
        self.exit_s, self.start_s = exit_s, start_s
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([*LIVEHOST_RUN, str(project), "--headless", *extra], cwd=ROOT,
                                         env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)

    def records(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # what libraries print themselves
                continue
        return out

    def messages(self, text: str) -> list[dict]:
        return [r for r in self.records() if text in r["message"]]

    def wait_for(self, text: str, timeout_s: float | None = None, count: int = 1) -> dict:
        """The *count*-th log record containing *text*, once there is one."""
        deadline = time.monotonic() + (self.start_s if timeout_s is None else timeout_s)
        while len(self.messages(text)) < count and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        found = self.messages(text)
        assert len(found) >= count, f"livehost ({self.proc.poll()}) logged no {text!r}:\n{self.log_path.read_text()}"
        return found[count - 1]

    def terminate(self, how: signal.Signals = signal.SIGTERM) -> float:
        """Send *how* (SIGINT to the process group, as Ctrl-C in a terminal does); return how long it
        took to exit, which it must do with status 0."""
        sent = time.monotonic()
        if how == signal.SIGINT:
            os.killpg(self.proc.pid, how)
        else:
            self.proc.send_signal(how)
        try:
            code = self.proc.wait(self.exit_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"livehost did not exit within {self.exit_s} s of {how.name}:\n"
                                 f"{self.log_path.read_text()}") from None
        assert code == 0, self.log_path.read_text()
        return time.monotonic() - sent

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the compile worker too
        self.proc.wait()


def save(path: Path, text: str) -> float:
    """Save *text* as an editor does (a temp file renamed over *path*); return when it was saved."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    tmp.replace(path)
    return time.time()


# --- hearing livehost run's audio ----------------------------------------------------


def pitch_hz(x: np.ndarray, rate: int = 48000) -> float:
    """The frequency of a clean sine: upward zero crossings, placed between samples."""
    up = np.flatnonzero((x[:-1] < 0) & (x[1:] >= 0))
    assert len(up) >= 10, "no sine in the take"
    t = up + x[up] / (x[up] - x[up + 1])  # linear interpolation of each crossing
    return (len(t) - 1) * rate / (t[-1] - t[0])


def follow_livehost(cap: CaptureProcess, before: set[str]) -> None:
    """Have *cap* hear the audio client (PortAudio's, named livehost) that appeared after *before* (livehost's), at once and
    again whenever it reopens its ports."""
    found: list[str] = []

    def appeared() -> bool:
        found[:] = [p for p in cap.ports(r"^livehost[^:]*:out_0$") if p not in before]
        return bool(found)

    wait_for(appeared, 60, 0.05)
    cap.follow(found[0].removesuffix("0"))


def portaudio_ports(cap: CaptureProcess) -> set[str]:
    return set(cap.ports(r"^livehost[^:]*:out_0$"))


def take_clean(cap: CaptureProcess, seconds: float) -> tuple[np.ndarray, dict]:
    """Record *seconds* of what plays now; taken again (up to twice more) when the server
    reported an xrun meanwhile: a capture that missed a cycle lost frames, not livehost."""
    xruns = []
    for _ in range(3):
        cap.start()
        time.sleep(seconds)
        x, report = cap.stop_all()
        xruns.append(report["xruns"])
        if not report["xruns"]:
            break
    if len(xruns) > 1:
        print(f"\n(xruns reported by the server in each take: {xruns})")
    return x, report


# --- an Ableton Link peer, and Link's clock ------------------------------------------


class LinkPeer:
    """Another Ableton Link peer in a process of its own (``link_peer.py``)."""

    def __init__(self, tempo: float, quantum: float = 4.0) -> None:
        self.proc = subprocess.Popen([sys.executable, str(LINK_PEER), str(tempo), str(quantum)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def ask(self, line: str) -> list[str]:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().split()

    def state(self) -> tuple[int, float]:
        _, peers, tempo = self.ask("state")
        return int(peers), float(tempo)

    def samples(self) -> np.ndarray:
        self.proc.stdin.write("samples\n")
        self.proc.stdin.flush()
        return np.array(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def mark(cap) -> tuple[int, int]:
    """A frame of the capture's and its time on Link's clock (CLOCK_MONOTONIC_RAW), read by the
    capture itself: not through the server's frame-to-time conversion, whose clock is RAW on
    jackd but CLOCK_MONOTONIC on PipeWire."""
    return cap.raw_clock()


def on_link_clock(frames: list[int], marks: list[tuple[int, int]]) -> np.ndarray:
    """Captured frames in microseconds of Link's clock, between the *marks* taken during the take."""
    f, t = np.array(marks, float).T
    slope = np.diff(t) / np.diff(f)
    i = np.clip(np.searchsorted(f, frames) - 1, 0, len(slope) - 1)
    return t[i] + (np.asarray(frames, float) - f[i]) * slope[i]


def phase_errors_ms(onsets_us: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Each onset's distance from the nearest beat of the peer's timeline (sampled every 2 ms)."""
    t, beat = samples[:, 0], samples[:, 1]
    i = np.clip(np.searchsorted(t, onsets_us), 1, len(t) - 1)
    slope = (beat[i] - beat[i - 1]) / (t[i] - t[i - 1])  # beats per microsecond: the tempo there
    at = beat[i - 1] + (onsets_us - t[i - 1]) * slope
    return (at - np.round(at)) / slope / 1000.0


def hold_gil_and_collect(objects: int = 400_000) -> None:
    """Hold the GIL 2 x 500 ms, then run a full gc over *objects* containers.

    Runs in a thread of its own at nice 19: it holds the GIL just the same,
    but leaves the CPU to the audio threads, so what is measured is waiting
    for the GIL, not a core taken away on a 2-core machine.
    """
    worker = threading.Thread(target=_stress, args=(objects,), name="gil-stress")
    worker.start()
    worker.join()


def _stress(objects: int) -> None:
    """The switch interval goes to 1 s, else Python hands the GIL to a waiting thread every 5 ms."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    graph = [[i, {"i": i}] for i in range(objects // 2)]
    for a, b in zip(graph, graph[1:]):
        a.append(b)  # a chain of references gc has to walk
    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        for _ in range(2):
            end = time.perf_counter() + 0.5
            while time.perf_counter() < end:
                pass
        gc.collect()
    finally:
        sys.setswitchinterval(old)
    del graph


def write_audio_project(root: Path, name: str, toml_extra: str, patch: str) -> Path:
    """A project folder *name* under *root* for the audio runtime, with *patch* and extra settings."""
    path = root / name
    path.mkdir()
    (path / "livehost.toml").write_text(
        f'name = "{name}"\ntempo_bpm = 120.0\nselected_runtime = 0\n\n[[runtime_settings]]\nruntime = "audio"\n'
        + toml_extra)
    (path / "patch.py").write_text(patch)
    return path
