"""Playing together: how close to the others' beat livehost plays.

Measured in one run, on a running JACK server, each against the same kind of capture:

* **Link**: livehost (``link = true``, the JACK MIDI runtime, a note on every
  beat) and another Link peer (``tests/link_peer.py``, its own process) on
  loopback; each captured onset against the peer's own timeline.
* **The usual Python way**, beside it: a loop in another process that awaits
  aalink's ``sync(1)`` and sends a note through python-rtmidi (JACK API) at
  each beat, in the same session, against the same timeline.
* **MIDI clock in**: a leader client sends Start and clock bytes at 120 BPM with
  +-0.5 ms of jitter, then 140 BPM; livehost follows (``clock_source = "midi"``).
  Its beat onsets against the leader's beat grid (the un-jittered one), and the
  beats after the change until the tempo it gives the kernel is within 0.1 BPM.

Captured frames are put on Link's clock with ``jack_frames_to_time`` (JACK's
clock and Link's are CLOCK_MONOTONIC_RAW on Linux). The last output line is
one JSON object. Needs a running JACK server and the bench extra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from extras import require  # noqa: E402  (bench/ is on sys.path: the script's folder)

require("jack", "link", "aalink")  # before anything imports them

from compiler_bridge.compile import compile_project  # noqa: E402
from compiler_bridge.program import Program  # noqa: E402
from compiler_bridge.settings import MIDI  # noqa: E402
from helpers import LinkPeer, mark, on_link_clock, phase_errors_ms, wait_for  # noqa: E402
from host import Host  # noqa: E402
from jack_midi_capture import Capture  # noqa: E402
from runtimes.midi.runtime import MidiRuntime  # noqa: E402
from test_link import PATCH as LINK_PATCH  # noqa: E402

RATE = 48000
AALINK_NOTE = 72

LINK_TOML = '''\
tempo_bpm = 120.0
link = true
quantum = 4

[[runtime_settings]]
runtime = "midi"
connect_to = "synccap:in"
send_clock = false
'''

AALINK_LOOP = '''
import asyncio, sys
import rtmidi
from aalink import Link

async def main():
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="aaloop")
    out.open_virtual_port("out")
    link = Link(120)
    link.enabled = True
    link.quantum = 4
    print("ready", flush=True)
    while True:
        await link.sync(1)
        out.send_message([0x90, 72, 100])
        out.send_message([0x80, 72, 0])

asyncio.run(main())
'''

def _figures(errors_ms: np.ndarray) -> dict:
    a = np.abs(errors_ms)
    return {"n": int(len(a)), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "max_ms": round(float(a.max()), 3)}


def _onsets_us(events: list, marks: list[tuple[int, int]], loop: bool) -> np.ndarray:
    """NoteOn times on Link's clock: the aalink loop's (note 72, *loop*) or livehost's (the others)."""
    return on_link_clock([f for f, d in events if d[0] & 0xF0 == 0x90 and d[2] > 0 and (d[1] == AALINK_NOTE) == loop],
                         marks)


def link_phase(work: Path, seconds: float) -> dict:
    proj = work / "linked"
    proj.mkdir()
    (proj / "patch.py").write_text(LINK_PATCH)
    (proj / "livehost.toml").write_text(LINK_TOML)
    compile_project(proj)
    with contextlib.ExitStack() as stack:
        peer = LinkPeer(120.0)
        stack.callback(peer.close)
        loop = subprocess.Popen([sys.executable, "-c", AALINK_LOOP], stdout=subprocess.PIPE, text=True)
        stack.callback(lambda: (loop.kill(), loop.wait(), loop.stdout.close()))
        assert loop.stdout.readline().strip() == "ready"
        cap = stack.enter_context(Capture("synccap"))
        wait_for(lambda: "aaloop:out" in subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout, 10)
        cap.connect("aaloop:out", "synccap:in")
        host = stack.enter_context(Host(proj, debounce_s=0.02))
        wait_for(lambda: host.runtime is not None and host.status()["link_peers"] == 2, 30)
        wait_for(lambda: host.runtime.stats()["ticks"] > 24 * 4, 30)
        marks = [mark(cap)]  # (frame, time) every second: JACK's frame rate is measured, not nominal
        for _ in range(int(seconds)):
            time.sleep(1.0)
            marks.append(mark(cap))
        t0 = marks[0][1]
        samples = peer.samples()
        stack.pop_all().close()  # host, capture, loop and peer end here (in reverse)
    events = cap.stop()
    ours = _onsets_us(events, marks, loop=False)
    ours = ours[(ours > t0) & (ours < marks[-1][1])]
    theirs = _onsets_us(events, marks, loop=True)
    theirs = theirs[(theirs > t0) & (theirs < marks[-1][1])]
    return {"livehost": _figures(phase_errors_ms(ours, samples)),
            "aalink_loop": _figures(phase_errors_ms(theirs, samples)), "capture_xruns": cap.xruns}


def clock_follow(work: Path, seed: int) -> dict:
    from test_clock_in import JITTER, PATCH as FOLLOW_PATCH, _period  # a note every sixteenth (beats: 60 + 4k)

    proj = work / "follow"
    proj.mkdir()
    (proj / "patch.py").write_text(FOLLOW_PATCH)
    (proj / "livehost.toml").write_text('[[runtime_settings]]\nruntime = "midi"\n')
    program = Program.from_compiled(compile_project(proj))
    rng = random.Random(seed)
    leader, grid, frame = [(0, [0xFA])], [], 500.0
    for bpm, beats in ((120.0, 8), (140.0, 8)):
        for k in range(beats * 24):
            if k % 24 == 0:
                grid.append((frame, bpm))
            leader.append((int(round(frame)) + rng.randint(-JITTER, JITTER), [0xF8]))
            frame += _period(bpm)
    with Capture("leader") as lead, Capture("fcap") as cap:
        rt = MidiRuntime(MIDI.resolve({"clock_source": "midi", "connect_to": "fcap:in", "send_clock": False,
                                       "channel": 1}))
        rt.start(program, program.new_state())
        lead.connect("leader:out", rt.ports["input"])
        wait_for(lambda: rt.engine.get("cycles") > 4)
        base = lead.schedule(leader)
        wait_for(lambda: rt.engine.get("clocks_in") >= len(leader) - 1, 30, 0.05)
        tempos = rt.snapshot()[1]["tempos"][0]
        rt.close()
        events = cap.stop()
        lead.stop()
    onsets = np.array([f - base for f, d in events if d[0] == 0x90 and d[2] > 0 and (d[1] - 60) % 4 == 0], float)
    beats = np.array([f for f, _ in grid])
    errors = np.array([(onsets[np.abs(onsets - b).argmin()] - b) / RATE * 1000 for b in beats])
    after = np.abs(tempos[8:16] - 140.0)
    settle = next((k for k, e in enumerate(after) if (after[k:] < 0.1).all()), None)
    return {"phase": _figures(errors), "tempo_error_bpm_per_beat_after_change": np.round(after, 3).tolist(),
            "settle_beats": settle, "xruns": [lead.xruns, cap.xruns], "late_leader_bytes": lead.late}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the Link take")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="livehost-sync-") as folder:
        work = Path(folder)
        link = link_phase(work, args.seconds)
        print("Link, livehost's onsets against the peer's beats:", link["livehost"])
        print("Link, an aalink sync() loop sending through rtmidi:", link["aalink_loop"])
        follow = clock_follow(work, seed=11)
        print("MIDI clock in, livehost's beat onsets against the leader's grid:", follow["phase"])
        print("tempo error per beat after 120 -> 140 BPM:", follow["tempo_error_bpm_per_beat_after_change"])
    print(json.dumps({
        "link_phase_p50_ms": link["livehost"]["p50_ms"], "link_phase_p99_ms": link["livehost"]["p99_ms"],
        "link_phase_max_ms": link["livehost"]["max_ms"],
        "aalink_loop_phase_p50_ms": link["aalink_loop"]["p50_ms"],
        "aalink_loop_phase_p99_ms": link["aalink_loop"]["p99_ms"],
        "aalink_loop_phase_max_ms": link["aalink_loop"]["max_ms"],
        "clock_follow_phase_p99_ms": follow["phase"]["p99_ms"],
        "clock_follow_settle_beats": follow["settle_beats"],
        "link": link, "clock_follow": follow,
    }))


if __name__ == "__main__":
    main()
