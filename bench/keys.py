"""From a key to its sound: the ``jack`` runtime beside what a Python user has today.

A JACK MIDI client sends notes at random frames; a JACK audio client records
the output; on one server both share one frame clock. For each note the
figure is the frames from the note's frame to the first sample of its sound.

* ``livehost``: the ``jack`` runtime playing a one-voice synth whose
  ``midi_in()`` starts the voice (``livehost:in``, ``livehost:audio_out_1``).
* ``baseline``: python-rtmidi's input callback sets a field that a
  ``sounddevice`` callback (PortAudio on the same JACK server) reads at its
  next block: the nearest thing in plain Python.

Also, on the ``jack`` runtime: a ``midi()`` note and an ``audio()`` click at
the same tick (every beat), their frames compared (``midi_audio_offset_frames_max``).

Usage: ``python bench/keys.py [--notes 200]`` with a JACK server running
(``pw-jack python bench/keys.py`` for PipeWire). The last line is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from extras import require  # noqa: E402

require("jack")

from compiler_bridge.compile import compile_project  # noqa: E402
from compiler_bridge.program import Program  # noqa: E402
from compiler_bridge.settings import SCHEMAS  # noqa: E402
from helpers import CaptureProcess, clear_of, jack_frame_of  # noqa: E402
from jack_midi_capture import Capture  # noqa: E402
from runtimes.joint import JackRuntime  # noqa: E402

SPACING = 4800  # frames between notes: each has ended (released in 10 ms) before the next

PATCH = '''
import math

from compiler_bridge.api import note_off, note_on


class State:
    level = 0.0
    phase = 0.0
    held = 0
    clicks = 1.0


def midi_in(s, ctx, status, data1, data2):
    if status & 0xF0 == 0x90 and data2 > 0:
        s.held, s.phase = 1, 0.0
    elif status & 0xF0 == 0x80 or status & 0xF0 == 0x90:
        s.held = 0


def audio(s, ctx, inp, out):
    for i in range(out.shape[0]):
        s.level = 1.0 if s.held == 1 else max(s.level - 0.002, 0.0)
        s.phase += 2.0 * math.pi * 440.0 / ctx.sample_rate
        v = s.level * (0.5 + 0.5 * math.cos(s.phase))  # positive from its first sample
        out[i, 0] = v
        # a click on the beat's own frame: the block starts there when a tick is due
        beat = ctx.beat + i * ctx.tempo_bpm / 60.0 / ctx.sample_rate
        out[i, 1] = s.clicks if i == 0 and abs(beat - round(beat)) < 1e-9 else 0.0


def midi(s, ctx, ev):
    if ctx.tick % ctx.ppqn == 0:
        note_on(ev, 60, 100)
    elif ctx.tick % ctx.ppqn == ctx.ppqn // 2:
        note_off(ev, 60)
'''


def onsets(x: np.ndarray, report: dict, frames: list[int]) -> list[int | None]:
    """For each JACK frame in *frames*: frames from it to the first sound after it (None: none)."""
    take, jack = report["jumps"][0]
    out = []
    for f in frames:
        t = f - jack + take
        after = np.flatnonzero(x[t: t + SPACING // 2] > 0.0)
        out.append(int(after[0]) if after.size else None)
    return out


def figures(delays: list[int | None]) -> dict:
    found = [d for d in delays if d is not None]
    p50, p99 = (float(np.percentile(found, q)) if found else None for q in (50, 99))
    return {"note_to_sound_frames_p50": p50, "note_to_sound_frames_p99": p99,
            "note_to_sound_frames_max": max(found) if found else None, "missed_notes": len(delays) - len(found)}


def _plan(notes: int, seed: int) -> tuple[list, list[int]]:
    rng = random.Random(seed)
    ons = [k * SPACING + rng.randrange(0, 1024) for k in range(notes)]
    plan = []
    for on in ons:
        plan += [[on, [0x90, 60, 100]], [on + 480, [0x80, 60, 0]]]
    return plan, ons


def run_livehost(program: Program, notes: int, tmp: Path) -> dict:
    plan, ons = _plan(notes, 1)
    # the sender and the recorder are two clients: one that both fed livehost and heard it would
    # form a loop JACK breaks by hearing livehost a cycle late
    with Capture("keys-src") as midi, Capture("keys-rec") as recorder:
        cap = CaptureProcess(2, tmp)
        rt = JackRuntime(SCHEMAS["jack"].resolve({"connect_from": "keys-src:out", "connect_to": "keys-rec:in",
                                                  "connect_audio": False, "send_clock": False}))
        try:
            rt.start(program, program.new_state())
            cap.connect(rt.ports["audio_out_1"], cap.info["inputs"][0])
            cap.connect(rt.ports["audio_out_2"], cap.info["inputs"][1])
            time.sleep(0.3)
            cap.start()
            base = midi.schedule(plan)
            while midi.clock()[0] < base + plan[-1][0] + 4800:
                time.sleep(0.05)
            x, report = cap.stop_all()
            stats = rt.stats()
        finally:
            rt.close()
            cap.close()
        midi.stop()
        events = recorder.stop()
    out = figures(onsets(x[:, 0], report, [base + f for f in ons]))
    # the click of each beat on the audio port against the NoteOn midi() sent at that tick
    take, jack = report["jumps"][0]
    clicks = [int(k) - take + jack for k in np.flatnonzero(x[:, 1] > 0.5)]
    notes_out = [f for f, d in events if d[:1] == [0x90]]
    pairs = [(f, min(clicks, key=lambda c: abs(c - f))) for f in notes_out if clicks and clicks[0] <= f <= clicks[-1]]
    # a pair an xrun may have touched (a capture that missed a cycle hears the next one's) is left out
    xrun_frames = [*midi.xrun_frames, *recorder.xrun_frames, *(jack_frame_of(report, k) for k in report["xrun_at"])]
    clear = clear_of([f for f, _ in pairs], xrun_frames) if pairs else []
    kept = [pair for pair, ok in zip(pairs, clear) if ok]
    out["midi_audio_offset_frames_max"] = max((abs(c - f) for f, c in kept), default=None)
    out["midi_audio_pairs"] = len(kept)
    out["midi_audio_pairs_left_out"] = len(pairs) - len(kept)
    out["server_xruns"] = midi.xruns + recorder.xruns + report["xruns"]
    out["overruns"] = stats["overruns"]
    return out


def run_baseline(notes: int, tmp: Path) -> dict:
    """rtmidi's callback sets a field; a sounddevice callback plays from its next block on."""
    import rtmidi
    import sounddevice as sd

    plan, ons = _plan(notes, 2)
    held = [0]
    with Capture("keys-src") as midi:
        cap = CaptureProcess(1, tmp)
        midi_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="baseline")
        midi_in.open_virtual_port("in")
        midi_in.set_callback(lambda message, data=None: held.__setitem__(0, int(message[0][0] & 0xF0 == 0x90
                                                                               and message[0][2] > 0)))

        def callback(outdata, frames, time_info, status):
            outdata[:, 0] = 1.0 if held[0] else 0.0

        stream = sd.OutputStream(channels=1, samplerate=48000, callback=callback, dtype="float32")
        stream.start()
        try:
            time.sleep(0.3)
            ports = cap.ports(".*baseline.*in.*") or cap.ports(".*RtMidi.*")
            midi.connect(midi.outport, [p for p in ports if "in" in p][0])
            outs = [p for p in cap.ports(".*") if p.startswith(("PortAudio", "python")) and "out" in p]
            cap.connect(outs[0], cap.info["inputs"][0])
            time.sleep(0.3)
            cap.start()
            base = midi.schedule(plan)
            while midi.clock()[0] < base + plan[-1][0] + 4800:
                time.sleep(0.05)
            x, report = cap.stop()
        finally:
            stream.close()
            midi_in.close_port()
            cap.close()
        midi.stop()
    out = figures(onsets(x, report, [base + f for f in ons]))
    out["server_xruns"] = midi.xruns + report["xruns"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "keys"
        project.mkdir()
        (project / "patch.py").write_text(PATCH)
        (project / "livehost.toml").write_text('name = "keys-bench"\ntempo_bpm = 120.0\n'
                                               '[[runtime_settings]]\nruntime = "jack"\nchannels_out = 2\n')
        program = Program.from_compiled(compile_project(project))
        livehost = run_livehost(program, args.notes, Path(tmp))
        print("livehost", json.dumps(livehost), flush=True)
        try:
            baseline = run_baseline(args.notes, Path(tmp))
        except Exception as exc:  # python-rtmidi's own libjack cannot join PipeWire (pw-jack swaps the system's)
            baseline = {"unavailable": f"{type(exc).__name__}: {exc}"}
        print("baseline", json.dumps(baseline), flush=True)
    summary = {"notes": args.notes, **livehost, **{f"baseline_{k}": v for k, v in baseline.items()}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
