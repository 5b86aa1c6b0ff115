"""The audio callback on a real-time JACK server under the GIL stress: late callbacks and page faults.

On ``jackd -R`` (SCHED_FIFO, how jackd runs by default) livehost's callback
cannot be preempted by a compile or the host's threads, yet a thread that
allocates and frees memory in its process (the stress: a busy thread started,
400k objects built and collected) can still hold it up: a first touch of a
page, or a page given back and touched again, faults, and the fault waits on
the process's memory-map lock that the allocating thread holds.

This bench shows which: it starts its own ``jackd -R -d dummy`` (as root),
then for each mode (``unlocked``, ``locked`` = mlockall as ``livehost run``
does by default) a fresh process plays a sine through the audio runtime and
runs the stress ``--attempts`` times. Per attempt: livehost's own late
callbacks (callbacks that overran their block or started more than two
blocks late, and PortAudio's xrun flags), the callback thread's minor and
major page faults during the stress (``/proc/self/task/<tid>/stat``), and the
server's xruns seen by a capture client. Beside them, in the same run, a
plain C client (``jack_simple_client``) under the same stress in this
process: the machine's own noise.

Usage: ``sudo .venv/bin/python bench/rt_stress.py [--attempts 20]``. The last
line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from extras import require  # noqa: E402  (bench/ is on sys.path: the script's folder)

require("jack")  # before anything imports them

SERVER = "livehost_rt_stress"


def child(mode: str) -> None:
    """Play a sine, answer each "go" on stdin with one stressed attempt's figures (JSON)."""
    import logging

    from compiler_bridge.compile import compile_project
    from compiler_bridge.program import Program
    from helpers import hold_gil_and_collect
    from host.memory import lock_memory
    from runtimes.audio import AudioRuntime
    from compiler_bridge.settings import AUDIO

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    locked = lock_memory(mode == "locked")
    project = Path(tempfile.mkdtemp(prefix="rt-stress-")) / "sine"
    shutil.copytree(ROOT / "examples" / "sine", project)
    program = Program.from_compiled(compile_project(project))
    with AudioRuntime(AUDIO.resolve({})) as rt:
        rt.start(program, program.new_state())
        engine = rt._engine
        time.sleep(1.0)
        print(json.dumps({"ready": True, "locked": locked}), flush=True)
        for line in sys.stdin:
            if line.strip() != "go":
                break
            before, faults_before = engine.stats(), engine.callback_faults()
            hold_gil_and_collect()
            time.sleep(0.1)
            after, faults_after = engine.stats(), engine.callback_faults()
            minor = major = None
            if faults_before and faults_after:
                minor, major = (a - b for a, b in zip(faults_after, faults_before))
            grew = {k: after[k] - before[k] for k in ("xruns", "xruns_flagged", "xruns_late", "overruns")}
            print(json.dumps({"late": grew["xruns"], "flagged": grew["xruns_flagged"], "timing": grew["xruns_late"],
                              "overruns": grew["overruns"], "minor_faults": minor, "major_faults": major}),
                  flush=True)


def _server() -> subprocess.Popen:
    proc = subprocess.Popen(["jackd", "-n", SERVER, "-R", "-d", "dummy", "-r", "48000", "-p", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if subprocess.run(["jack_wait", "-s", SERVER, "-c"], capture_output=True, text=True).stdout.startswith("running"):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("jackd -R did not start (it needs root, or a user allowed real-time scheduling)")


def _livehost(mode: str, attempts: int, cap) -> list[dict]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        ready = json.loads(proc.stdout.readline())
        rows = []
        for _ in range(attempts):
            cap.start()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            row = json.loads(proc.stdout.readline())
            _, report = cap.stop()
            rows.append({**row, "server_xruns": report["xruns"], "locked": ready["locked"]})
            print(mode, rows[-1], flush=True)
        proc.stdin.write("end\n")
        proc.stdin.flush()
        proc.wait(30)
        return rows
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _c_client(attempts: int, cap) -> list[dict]:
    from helpers import hold_gil_and_collect

    client = subprocess.Popen(["jack_simple_client", "lh-rt-control"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        rows = []
        for _ in range(attempts):
            cap.start()
            hold_gil_and_collect()
            time.sleep(0.1)
            _, report = cap.stop()
            rows.append({"server_xruns": report["xruns"], "late_cycles": report["late_cycles"]})
            print("c client", rows[-1], flush=True)
        return rows
    finally:
        client.terminate()
        client.wait()


def _sum(rows: list[dict], key: str) -> int:
    return sum(r[key] or 0 for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=20)
    parser.add_argument("--child", choices=("unlocked", "locked"))
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if shutil.which("jack_simple_client") is None:
        raise SystemExit("jack_simple_client (Debian package jackd2) is needed for the control")
    os.environ["JACK_DEFAULT_SERVER"] = SERVER
    from helpers import CaptureProcess

    server = _server()
    cap = CaptureProcess(1, Path(tempfile.mkdtemp(prefix="rt-stress-cap-")))
    try:
        runs = {mode: _livehost(mode, args.attempts, cap) for mode in ("unlocked", "locked")}
        control = _c_client(args.attempts, cap)
    finally:
        cap.close()
        server.terminate()
        server.wait()
    figures = {"attempts": args.attempts}
    for mode, rows in runs.items():
        figures[mode] = {"locked": rows[0]["locked"], "attempts_late": sum(r["late"] > 0 for r in rows),
                         "late_callbacks": _sum(rows, "late"), "flagged_by_portaudio": _sum(rows, "flagged"),
                         "late_by_timing": _sum(rows, "timing"), "overruns": _sum(rows, "overruns"),
                         "minor_faults": _sum(rows, "minor_faults"),
                         "major_faults": _sum(rows, "major_faults"),
                         "attempts_with_faults": sum((r["minor_faults"] or 0) > 0 for r in rows),
                         "server_xruns": _sum(rows, "server_xruns")}
    figures["c_client"] = {"attempts_with_xruns": sum(r["server_xruns"] > 0 for r in control),
                           "server_xruns": _sum(control, "server_xruns")}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
