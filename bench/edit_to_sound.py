"""Save to sound: how soon a performer hears a save under ``livehost run``.

``livehost run --headless`` plays a tone project in a process of its own; a
JACK capture client in another process records it. Each save writes new
text through a temp file and a rename, as editors do. Times run from the
save to the first captured frame of the new program (the tone's second
channel carries a marker that changes with the pitch) or, for a switch to
MIDI, to the first MIDI byte at a MIDI capture client: they come from the
captures, not from livehost's logs. Measured, in one run:

* default edits: ``freq_hz = ...`` in ``class State`` (no recompile);
* number edits: a float factor inside the kernel (a live number: no recompile);
* code edits: the same factor written as a quotient of ints, ``(1002 / 1000)``
  (ints are compiled in: a real numba compile each time);
* runtime switches: ``selected_runtime`` audio -> MIDI and back;
* the same default edit by stopping ``livehost run``, saving and starting it
  again: what a user without hot swap does (timed from the stop request).

The last output line is one JSON object. Needs a running JACK server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from extras import require  # noqa: E402  (bench/ is on sys.path: the script's folder)

require("jack")  # before anything imports them

from floor import numba_floor_s  # noqa: E402
from helpers import CaptureProcess, save  # noqa: E402
from jack_midi_capture import Capture  # noqa: E402

RATE = 48000
MIDI_CAPTURE = "lhbench-midi"
MARK = 0.0001  # the marker channel carries MARK * freq_hz * factor
START_S = 120.0  # a first start compiles the engines and the patch
WARM_SAVES = 3

PATCH = '''\
"""A sine at freq_hz; the second channel says which program plays."""

import math

from compiler_bridge.api import note_off, note_on


class State:
    freq_hz = {freq!r}
    phase = 0.0
    step = 0


def audio(s, ctx, inp, out):
    step = 2.0 * math.pi * s.freq_hz * {factor} / ctx.sample_rate
    mark = {mark!r} * s.freq_hz * {factor}
    for i in range(out.shape[0]):
        out[i, 0] = 0.2 * math.sin(s.phase)
        out[i, 1] = mark
        s.phase = (s.phase + step) % (2.0 * math.pi)


def midi(s, ctx, ev):
    t = ctx.tick % 6
    if t == 0:
        note_on(ev, 60 + s.step, 90)
    elif t == 3:
        note_off(ev, 60 + s.step)
        s.step = (s.step + 1) % 12
'''

CONFIG = '''\
name = "tone"
tempo_bpm = 120.0
selected_runtime = {selected}

[[runtime_settings]]
runtime = "audio"
crossfade_ms = 10.0

[[runtime_settings]]
runtime = "midi"
connect_to = "{midi_capture}:in"
'''


class Rig:
    """The project, ``livehost run`` on it, and the two capture clients."""

    def __init__(self, work: Path, stack: contextlib.ExitStack) -> None:
        self.project = work / "tone"
        self.project.mkdir()
        self.log_path = work / "livehost.log"
        self.freq, self.factor, self.selected = 440.0, 1.0, 0
        self.factor_text = repr(self.factor)
        self._write("patch.py", self._patch())
        self._write("livehost.toml", CONFIG.format(selected=0, midi_capture=MIDI_CAPTURE))
        self.audio = CaptureProcess(2, work)
        stack.callback(self.audio.close)
        # heard again at once whenever livehost reopens its ports (a restarted process may get another name)
        self.audio.cmd("follow livehost[^:]*:out_([0-9]+)")
        self.midi = stack.enter_context(Capture(MIDI_CAPTURE))
        self.proc: subprocess.Popen | None = None
        stack.callback(self.stop)

    def _patch(self) -> str:
        return PATCH.format(freq=self.freq, factor=self.factor_text, mark=MARK)

    def marker(self) -> float:
        return float(np.float32(MARK * self.freq * self.factor))

    def _write(self, name: str, text: str) -> float:
        """Save as an editor does (temp file, rename); return when the save completed."""
        return save(self.project / name, text)

    def save_patch(self, freq: float | None = None, factor: float | None = None, thousandths: int | None = None) -> float:
        """Save a new default (*freq*), a new number in the kernel (*factor*), or new code
        (the factor as ``(thousandths / 1000)``: ints are compiled in)."""
        self.freq = self.freq if freq is None else freq
        if factor is not None:
            self.factor, self.factor_text = factor, repr(factor)
        if thousandths is not None:
            self.factor, self.factor_text = thousandths / 1000, f"({thousandths} / 1000)"
        return self._write("patch.py", self._patch())

    def select(self, index: int) -> float:
        self.selected = index
        return self._write("livehost.toml", CONFIG.format(selected=index, midi_capture=MIDI_CAPTURE))

    def start(self) -> None:
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "host.cli", "--log-format", "json", "run",
                                      str(self.project), "--headless"], cwd=ROOT, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()

    def wait_log(self, text: str, after: int = 0, timeout_s: float = START_S, count: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log_path.read_text()[after:].count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"livehost run exited ({self.proc.returncode}); log: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        raise SystemExit(f"no {text!r} in livehost's log within {timeout_s:g} s")

    def log_size(self) -> int:
        return len(self.log_path.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def take(self, seconds: float, action) -> tuple[np.ndarray, float, dict]:
        """Record *seconds* around *action* (called 0.1 s in, returns its time); the frames,
        the action's time and the capture's report."""
        self.audio.start()
        time.sleep(0.1)
        t_action = action()
        time.sleep(seconds)
        path = self.audio.tmp_path / "take.npy"
        report = self.audio.cmd(f"stop {path}")
        return np.load(path), t_action, report


def _time_of(report: dict, index: int) -> float:
    """When frame *index* of a take was played: its JACK frame (the take skips the cycles the
    capture missed, a starting livehost on two cores can starve it) on the first cycle's time."""
    take, jack = next((t, j) for t, j in reversed(report["jumps"]) if t <= index)
    frame = (jack + index - take - report["first_cycle_frame"]) & 0xFFFFFFFF
    return report["first_cycle_time"] + frame / RATE


def _departure_ms(x: np.ndarray, t_save: float, report: dict, new_mark: float) -> float | None:
    """Save to the first frame whose marker left the old program's, if the new program then plays."""
    marks = x[:, 1]
    if len(marks) == 0 or abs(marks[-1] - new_mark) > 1e-6:
        return None  # the new program never played within the take
    moved = np.flatnonzero(np.abs(marks - marks[0]) > 1e-6)
    return None if len(moved) == 0 else (_time_of(report, int(moved[0])) - t_save) * 1e3


def _first_ms(mask: np.ndarray, t_save: float, report: dict) -> float | None:
    hit = np.flatnonzero(mask)
    return None if len(hit) == 0 else (_time_of(report, int(hit[0])) - t_save) * 1e3


def _figures(name: str, samples: list[float | None]) -> dict:
    got = np.array([s for s in samples if s is not None])
    out = {"n": len(samples), "missed": int(sum(s is None for s in samples))}
    if len(got):
        out.update(p50_ms=round(float(np.percentile(got, 50)), 1), p99_ms=round(float(np.percentile(got, 99)), 1),
                   max_ms=round(float(got.max()), 1), min_ms=round(float(got.min()), 1))
    print(name, out, flush=True)
    return out


def main() -> None:
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))  # run the clean-up below
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=50, help="default edits, number edits and code edits (each)")
    parser.add_argument("--switches", type=int, default=5, help="audio -> MIDI -> audio round trips")
    parser.add_argument("--restarts", type=int, default=3, help="stop-edit-start rounds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="livehost-bench-"))
    xruns = 0
    try:
        with contextlib.ExitStack() as stack:
            rig = Rig(work, stack)
            rig.start()
            rig.wait_log("Successfully initialized runtime: audio")
            for k in range(WARM_SAVES):  # the worker warms itself up after its first compile: not measured
                rig.save_patch(freq=430.0 - k)
                rig.wait_log("Compiled", count=k + 2)
            time.sleep(0.5)

            default, number, code = [], [], []
            for k in range(args.edits):
                x, t_save, rep = rig.take(0.5, lambda: rig.save_patch(freq=440.0 + 5.0 * (k + 1)))
                default.append(_departure_ms(x, t_save, rep, rig.marker()))
                xruns += rep["xruns"]
            for k in range(args.edits):
                x, t_save, rep = rig.take(0.5, lambda: rig.save_patch(factor=1.0 + 0.002 * (k + 1)))
                number.append(_departure_ms(x, t_save, rep, rig.marker()))
                xruns += rep["xruns"]
            for k in range(args.edits):
                x, t_save, rep = rig.take(2.0, lambda: rig.save_patch(thousandths=1200 + 2 * (k + 1)))
                code.append(_departure_ms(x, t_save, rep, rig.marker()))
                xruns += rep["xruns"]

            to_midi_saves, to_audio = [], []
            frame0, wall0 = rig.midi.clock()
            for _ in range(args.switches):
                to_midi_saves.append(rig.select(1))
                time.sleep(1.5)
                x, t_save, rep = rig.take(1.5, lambda: rig.select(0))
                to_audio.append(_first_ms(np.abs(x[:, 0]) > 1e-3, t_save, rep))
                xruns += rep["xruns"]
                time.sleep(0.5)

            restart = []
            for k in range(args.restarts):
                rig.audio.start()
                time.sleep(0.1)
                size = rig.log_size()
                t_stop = time.time()  # the performer stops livehost, saves, starts it again
                rig.stop()
                rig.save_patch(freq=300.0 + 5.0 * k)
                rig.start()
                rig.wait_log("Successfully initialized runtime: audio", after=size)  # the last build, then
                rig.wait_log("Compiled", after=size)  # the edited one (a worker that starts cold)
                time.sleep(1.0)
                path = rig.audio.tmp_path / "take.npy"
                rep = rig.audio.cmd(f"stop {path}")
                x = np.load(path)
                restart.append(_first_ms(np.abs(x[:, 1] - rig.marker()) < 1e-6, t_stop, rep))
                xruns += rep["xruns"]
            rig.stop()
            events = rig.midi.stop()
            compile_s = [float(m.group(1)) for m in re.finditer(r"Compiled \w+ in ([0-9.]+) s", rig.log_path.read_text())]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # MIDI: the first byte after each switch to MIDI, placed on the wall clock
    event_times = np.array([wall0 + (f - frame0) / RATE for f, _ in events])
    to_midi = []
    for t_save in to_midi_saves:
        later = event_times[event_times > t_save]
        to_midi.append(None if len(later) == 0 else (later[0] - t_save) * 1e3)

    d, n, c = _figures("default edit", default), _figures("number edit", number), _figures("code edit", code)
    a2m, m2a = _figures("switch audio -> midi", to_midi), _figures("switch midi -> audio", to_audio)
    r = _figures("stop, edit, restart", restart)
    print("livehost's own compile times (s), in order:", compile_s, flush=True)
    # numba alone on the same code edits of the same kernel, in a warm process of its own, now
    floor_s = numba_floor_s([PATCH.format(freq=440.0, factor=f"({1100 + k} / 1000)", mark=MARK)
                             for k in range(args.edits + 1)])
    ratio = round(c["p50_ms"] / (floor_s * 1e3), 2) if c.get("p50_ms") else None
    print(f"numba alone, the edited kernel (median): {floor_s * 1e3:.1f} ms; code edit p50 over it: {ratio}")
    print(json.dumps({
        "default_edit_p50_ms": d.get("p50_ms"), "default_edit_p99_ms": d.get("p99_ms"),
        "number_edit_p50_ms": n.get("p50_ms"), "number_edit_p99_ms": n.get("p99_ms"),
        "edit_p50_ms": c.get("p50_ms"), "edit_p99_ms": c.get("p99_ms"),
        "switch_audio_to_midi_ms": a2m.get("p50_ms"), "switch_midi_to_audio_ms": m2a.get("p50_ms"),
        "switch_audio_to_midi_max_ms": a2m.get("max_ms"), "switch_midi_to_audio_max_ms": m2a.get("max_ms"),
        "restart_ms": r.get("p50_ms"),
        "default_edit": d, "number_edit": n, "edit": c, "switch_audio_to_midi": a2m, "switch_midi_to_audio": m2a, "restart": r,
        "capture_xruns": xruns, "compile_s_p50": round(float(np.median(compile_s)), 3) if compile_s else None,
        "numba_floor_ms": round(floor_s * 1e3, 1), "edit_vs_numba_floor": ratio,
    }))


if __name__ == "__main__":
    main()
