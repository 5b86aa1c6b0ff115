"""MIDI clock precision: livehost's clock vs a plain ``time.sleep(period)`` loop.

Both run side by side in one run on the JACK server, at 120 and 300 BPM, each
into its own recording JACK client (``tests/jack_midi_capture.py``), which
timestamps every clock byte with its absolute frame. Jitter is each clock
interval's deviation from ``60 / (bpm * 24)`` s; drift is the span's error in
ppm. A second pass repeats it with a patch compile running in parallel.

The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from extras import require  # noqa: E402  (bench/ is on sys.path: the script's folder)

require("jack")  # before anything imports them

from jack_midi_capture import Capture  # noqa: E402

from compiler_bridge.compile import compile_project  # noqa: E402
from compiler_bridge.program import Program  # noqa: E402
from compiler_bridge.settings import MIDI  # noqa: E402
from runtimes.midi import MidiRuntime  # noqa: E402

RATE = 48000  # the JACK server's sample rate (Hz)
TEMPOS = (120.0, 300.0)

COMPILE_LOOP = """
import shutil, sys, tempfile
from pathlib import Path
from compiler_bridge.compile import compile_project
n = 0
while True:
    d = Path(tempfile.mkdtemp(dir=sys.argv[2])) / "p"  # inside the bench's folder: removed with it
    shutil.copytree(sys.argv[1], d)
    with open(d / "patch.py", "a") as f:
        f.write(f"\\n# variant {n}\\n")  # a new source hash: a real numba compile each time
    compile_project(d)
    shutil.rmtree(d.parent)
    n += 1
"""


def _sleep_loop(port, period_s: float, ticks: int, stop: threading.Event) -> None:
    """The reference: what most Python live-coding tools do."""
    import mido

    clock = mido.Message("clock")
    for _ in range(ticks):
        if stop.is_set():
            return
        port.send(clock)
        time.sleep(period_s)


def _figures(frames: np.ndarray, bpm: float, ticks: int) -> dict[str, float]:
    """Jitter (ms) of clock intervals and drift (ppm) over the span.

    ``ticks`` is how many clock bytes the capture client saw; fewer than asked
    means it missed some (a missed byte shows as a doubled interval).
    """
    frames = frames[:ticks]
    period = RATE * 60.0 / (bpm * 24)
    dev_ms = np.abs(np.diff(frames) - period) / RATE * 1e3
    span = (frames[-1] - frames[0]) / ((len(frames) - 1) * period)
    return {"ticks": int(len(frames)), "jitter_p50_ms": round(float(np.percentile(dev_ms, 50)), 4),
            "jitter_p99_ms": round(float(np.percentile(dev_ms, 99)), 4),
            "jitter_max_ms": round(float(dev_ms.max()), 4), "drift_ppm": round(float((span - 1) * 1e6), 2)}


def _pass(program: Program, ticks: int, label: str) -> dict[str, dict]:
    """Run livehost and the sleep loop at each tempo at once; return figures."""
    import mido

    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
    runtimes, threads = [], []
    stop = threading.Event()
    # Exit stacks, so that an error, Ctrl-C or SIGTERM still ends every
    # capture child, runtime, port and thread, not only a finished pass.
    with contextlib.ExitStack() as children:
        caps = {(who, bpm): children.enter_context(Capture(f"bench-{who}-{int(bpm)}"))
                for who in ("livehost", "sleep") for bpm in TEMPOS}
        with contextlib.ExitStack() as players:
            for bpm in TEMPOS:
                rt = players.enter_context(
                    MidiRuntime(MIDI.resolve({"connect_to": caps["livehost", bpm].inport, "tempo_bpm": bpm})))
                rt.start(program, program.new_state())
                runtimes.append(rt)
                port = players.enter_context(backend.open_output(caps["sleep", bpm].inport))
                threads.append(threading.Thread(target=_sleep_loop, args=(port, 60.0 / (bpm * 24), ticks + 1, stop)))
            players.callback(_stop_threads, threads, stop)  # runs first: no send on a closed port
            time.sleep(0.3)  # rtmidi connects asynchronously
            for t in threads:
                t.start()
            for rt in runtimes:
                while rt.stats()["ticks"] < ticks + 2:
                    time.sleep(0.05)
            for t in threads:
                t.join()
            time.sleep(0.1)
        own = {bpm: rt.stats() for bpm, rt in zip(TEMPOS, runtimes)}
        recorded = {key: cap.stop() for key, cap in caps.items()}
    out = {}
    for (who, bpm), events in recorded.items():
        frames = np.array([f for f, d in events if d == [0xF8]], np.int64)
        out[f"{who}_{int(bpm)}"] = _figures(frames, bpm, ticks)
        if who == "livehost" and bpm in own:
            # the runtime's own view on JACK's frame timeline: tells a late tick
            # from an event the Python capture client missed under load
            out[f"{who}_{int(bpm)}"].update(runtime_late_ticks=own[bpm]["late_ticks"],
                                            runtime_jitter_p99_us=own[bpm]["jitter_p99_us"])
        print(label, who, bpm, out[f"{who}_{int(bpm)}"], flush=True)
    return out


def _stop_threads(threads: list[threading.Thread], stop: threading.Event) -> None:
    stop.set()
    for t in threads:
        if t.is_alive():
            t.join()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))  # run the clean-up below
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=10_000, help="clock ticks per tempo and pass")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="livehost-bench-"))
    load = None
    try:
        shutil.copytree(ROOT / "examples" / "sequencer", work / "seq")
        program = Program.from_compiled(compile_project(work / "seq"))

        idle = _pass(program, args.ticks, "idle")
        load = subprocess.Popen([sys.executable, "-c", COMPILE_LOOP, str(ROOT / "examples" / "switch"), str(work)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loaded = _pass(program, args.ticks, "compile-load")
    finally:
        if load is not None:
            load.terminate()
            load.wait()
        shutil.rmtree(work, ignore_errors=True)

    def worst(figures: dict, who: str, key: str) -> float:
        return max(abs(figures[f"{who}_{int(bpm)}"][key]) for bpm in TEMPOS)

    summary = {
        "ticks": args.ticks, "tempos_bpm": list(TEMPOS),
        "jitter_p99_ms": worst(idle, "livehost", "jitter_p99_ms"),
        "baseline_jitter_p99_ms": worst(idle, "sleep", "jitter_p99_ms"),
        "drift_ppm": worst(idle, "livehost", "drift_ppm"),
        "baseline_drift_ppm": worst(idle, "sleep", "drift_ppm"),
        "loaded_jitter_p99_ms": worst(loaded, "livehost", "jitter_p99_ms"),
        "baseline_loaded_jitter_p99_ms": worst(loaded, "sleep", "jitter_p99_ms"),
        "jitter_max_ms": worst(idle, "livehost", "jitter_max_ms"),
        "loaded_jitter_max_ms": worst(loaded, "livehost", "jitter_max_ms"),
        "idle": idle, "loaded": loaded,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
