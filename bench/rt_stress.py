"""Late cycles under the GIL stress on a real-time JACK server: livehost's, or the machine's?

On ``jackd -R`` (SCHED_FIFO, how jackd runs by default) livehost's callback
cannot be preempted by a compile or the host's threads. The audio tests'
GIL stress (a busy thread at nice 19 that builds 400k objects, then a full
gc) still made a cycle late now and then. This bench tells whose fault it is.

It starts its own ``jackd -R -d dummy`` (as root) and, for each mode
(``unlocked``, ``locked`` = mlockall as ``livehost run`` does by default), a
fresh process that plays ``examples/sine`` through the audio runtime, beside
a plain C client (``jack_simple_client``). Attempts alternate where the
stress runs:

* ``livehost``: in livehost's own process (its threads, its memory);
* ``elsewhere``: in this bench's process, with livehost playing untouched.

Per attempt it counts livehost's late callbacks (PortAudio's xrun flags,
late starts, overruns), the callback thread's page faults, the server's own
xrun reports with their reason from jackd's log (``JackTimedDriver``: the
server's timer woke late; ``client = X was not finished``: a client was
late), and the stalls of the machine: a probe per CPU, a SCHED_FIFO thread
above JACK's priority with its memory locked, in a process of its own, wakes
every 1 ms and notes each wake more than 1 ms late. Nothing in the guest but
an interrupt can hold such a thread; a probe late on both CPUs at once is the
virtual machine not running. Before the attempts, the C client is held for
50 ms (SIGSTOP): the server must report it as a late client, or the bench
stops (it could not read a late client from jackd's log).

Usage: ``sudo .venv/bin/python bench/rt_stress.py [--rounds 50]`` (a round is
one attempt of each place). The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SERVER = "livehost_rt_stress"
CONTROL = "lh-rt-control"
PROBE_PERIOD_NS = 1_000_000
PROBE_NOTE_MS = 0.5  # probe wakes later than this are written down
STALL_MS = 1.0  # a stall: a probe wake later than this
PROBE_PRIORITY = 98  # above JACK's threads (jackd -R: 10, its clients below it)
PLACES = ("livehost", "elsewhere")


def now_s() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def probe(cpu: int) -> None:
    """Wake every PROBE_PERIOD_NS on *cpu* at SCHED_FIFO; print ``time late_ms`` for each wake
    later than PROBE_NOTE_MS (CLOCK_MONOTONIC seconds)."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PROBE_PRIORITY))
    ctypes.CDLL(None, use_errno=True).mlockall(3)  # MCL_CURRENT | MCL_FUTURE: no page fault of its own
    due = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    while True:
        due += PROBE_PERIOD_NS
        ahead = due - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if ahead > 0:
            time.sleep(ahead / 1e9)
        late = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - due
        if late > PROBE_NOTE_MS * 1e6:
            print(f"{due / 1e9:.6f} {late / 1e6:.3f}", flush=True)
            due += late  # no burst of catching up


def child(mode: str) -> None:
    """Play a sine; answer each ``stress`` (the stress here) or ``quiet`` (none here) on stdin
    with the figures of livehost's callback since the last answer (JSON)."""
    import logging

    from compiler_bridge.compile import compile_project
    from compiler_bridge.program import Program
    from compiler_bridge.settings import AUDIO
    from helpers import hold_gil_and_collect
    from host.memory import lock_memory
    from runtimes.audio import AudioRuntime

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
        before, faults_before = engine.stats(), engine.callback_faults()
        for line in sys.stdin:
            if line.strip() not in ("stress", "quiet"):
                break
            if line.strip() == "stress":
                hold_gil_and_collect()
            after, faults_after = engine.stats(), engine.callback_faults()
            minor = None
            if faults_before and faults_after:
                minor = faults_after[0] - faults_before[0]
            grew = {k: after[k] - before[k] for k in ("xruns", "xruns_flagged", "xruns_late", "overruns")}
            print(json.dumps({"late": grew["xruns"], "flagged": grew["xruns_flagged"], "timing": grew["xruns_late"],
                              "overruns": grew["overruns"], "minor_faults": minor}), flush=True)
            before, faults_before = after, faults_after


class Rig:
    """jackd -R with its log, a stall probe per CPU, the C client: what every attempt is read against."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen] = []
        self.log_path = work / "jackd.log"
        self._log_at = 0
        self._start()

    def _spawn(self, args: list[str], out) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT if out is not subprocess.DEVNULL else out)
        self.procs.append(proc)
        return proc

    def _start(self) -> None:
        with open(self.log_path, "w") as log:
            self._spawn(["jackd", "-n", SERVER, "-R", "-d", "dummy", "-r", "48000", "-p", "256"], log)
        for _ in range(100):
            if subprocess.run(["jack_wait", "-s", SERVER, "-c"], capture_output=True, text=True).stdout.startswith("running"):
                break
            time.sleep(0.1)
        else:
            raise SystemExit("jackd -R did not start (it needs root, or a user allowed real-time scheduling)")
        self.cpus = sorted(os.sched_getaffinity(0))
        for cpu in self.cpus:
            with open(self.work / f"probe{cpu}.txt", "w") as out:
                self._spawn([sys.executable, __file__, "--probe", str(cpu)], out)
        self.control = self._spawn(["jack_simple_client", CONTROL], subprocess.DEVNULL)
        time.sleep(1.0)

    def late_control(self) -> list[str]:
        """The C client held for 50 ms (SIGSTOP): the server's report of a late client, read as
        every attempt's is (the bench's negative control: it sees a late client when there is one)."""
        self.server_xruns()
        self.control.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        self.control.send_signal(signal.SIGCONT)
        time.sleep(0.2)
        return self.server_xruns()

    def server_xruns(self) -> list[str]:
        """jackd's xrun reports since the last call, each as its reason."""
        text = self.log_path.read_text(errors="replace")
        new, self._log_at = text[self._log_at:], len(text)
        reasons = []
        for line in new.splitlines():
            if "JackTimedDriver" in line and "XRun" in line:
                reasons.append("server timer late")
            elif m := re.search(r"client = (.+?) was not finished", line):
                reasons.append(f"{m[1]} not finished")
            elif m := re.search(r"client (.+?) finished after current callback", line):
                reasons.append(f"{m[1]} finished late")
        return reasons

    def stalls(self, t0: float, t1: float) -> dict[int, list[tuple[float, float]]]:
        """Each CPU's probe wakes later than STALL_MS, due between *t0* and *t1*: (due time, ms late)."""
        found = {}
        for cpu in self.cpus:
            rows = [tuple(map(float, line.split())) for line in (self.work / f"probe{cpu}.txt").read_text().splitlines()
                    if line.count(" ") == 1]
            found[cpu] = [(t, late) for t, late in rows if t0 <= t <= t1 and late > STALL_MS]
        return found

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _both_cpus(stalls: dict[int, list[tuple[float, float]]]) -> bool:
    """Whether every CPU's probe was held at one moment (their stalls overlap)."""
    spans = [[(t, t + late / 1e3) for t, late in rows] for rows in stalls.values()]  # (due, woke)
    if len(spans) < 2 or not all(spans):
        return False
    return any(all(any(a < e and s < b for s, e in other) for other in spans[1:]) for a, b in spans[0])


def _mode(mode: str, rounds: int, rig: Rig) -> list[dict]:
    from helpers import hold_gil_and_collect

    proc = subprocess.Popen([sys.executable, __file__, "--child", mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        rig.server_xruns()  # what starting it cost is no attempt's
        rows = []
        for r in range(rounds):
            for place in PLACES:
                t0 = now_s()
                if place == "elsewhere":
                    hold_gil_and_collect()
                time.sleep(0.1)  # a late cycle at the stress's end is the attempt's
                proc.stdin.write("stress\n" if place == "livehost" else "quiet\n")
                proc.stdin.flush()
                row = json.loads(proc.stdout.readline())
                if place == "livehost":
                    time.sleep(0.1)
                t1 = now_s()
                time.sleep(0.05)  # jackd's log and the probes catch up
                stalls = rig.stalls(t0, t1)
                held = [late for rows_ in stalls.values() for _, late in rows_]
                rows.append({**row, "mode": mode, "place": place, "locked": ready["locked"],
                             "server_xruns": rig.server_xruns(), "max_stall_ms": max(held, default=0.0),
                             "stalls": len(held), "both_cpus": _both_cpus(stalls)})
                if row["late"] or rows[-1]["server_xruns"] or held:
                    print(mode, place, r, json.dumps({k: rows[-1][k] for k in (
                        "late", "flagged", "timing", "overruns", "minor_faults", "server_xruns", "max_stall_ms",
                        "both_cpus")}), flush=True)
        proc.stdin.write("end\n")
        proc.stdin.flush()
        proc.wait(30)
        return rows
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _figures(rows: list[dict]) -> dict:
    late = [r for r in rows if r["late"] or r["server_xruns"]]
    return {
        "attempts": len(rows),
        "attempts_late": len(late),
        "late_callbacks": sum(r["late"] for r in rows),
        "flagged_by_portaudio": sum(r["flagged"] for r in rows),
        "late_by_timing": sum(r["timing"] for r in rows),
        "overruns": sum(r["overruns"] for r in rows),
        "callback_thread_minor_faults": sum(r["minor_faults"] or 0 for r in rows),
        "server_xruns": sum(len(r["server_xruns"]) for r in rows),
        "server_xrun_reasons": sorted({x for r in rows for x in r["server_xruns"]}),
        "attempts_with_stall": sum(r["stalls"] > 0 for r in rows),
        "attempts_with_stall_on_all_cpus": sum(r["both_cpus"] for r in rows),
        "late_attempts_with_stall": sum(r["stalls"] > 0 for r in late),
        "max_stall_ms": max((r["max_stall_ms"] for r in rows), default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="attempts of each place, per mode")
    parser.add_argument("--modes", default="unlocked,locked")
    parser.add_argument("--child", choices=("unlocked", "locked"))
    parser.add_argument("--probe", type=int, metavar="CPU")
    args = parser.parse_args()
    if args.probe is not None:
        probe(args.probe)
        return
    if args.child:
        child(args.child)
        return
    if shutil.which("jack_simple_client") is None:
        raise SystemExit("jack_simple_client (Debian package jackd2) is needed for the control")
    os.environ["JACK_DEFAULT_SERVER"] = SERVER
    rig = Rig(Path(tempfile.mkdtemp(prefix="rt-stress-")))
    try:
        control = rig.late_control()
        print("control, the C client held 50 ms:", control, flush=True)
        if not any(CONTROL in reason for reason in control):
            raise SystemExit(f"jackd's log did not name the held C client ({control}): the xrun reasons cannot be read")
        rows = [row for mode in args.modes.split(",") for row in _mode(mode, args.rounds, rig)]
    finally:
        rig.close()
    figures = {"rounds": args.rounds, "stall_ms": STALL_MS, "control": control}
    for mode in args.modes.split(","):
        figures[mode] = {place: _figures([r for r in rows if r["mode"] == mode and r["place"] == place])
                         for place in PLACES}
        figures[mode]["locked"] = any(r["locked"] for r in rows if r["mode"] == mode)
    for mode in args.modes.split(","):
        for place in PLACES:
            f = figures[mode][place]
            print(f"{mode:8} stress {place:9}: {f['attempts_late']}/{f['attempts']} attempts late "
                  f"(server xruns {f['server_xruns']} {f['server_xrun_reasons']}), "
                  f"{f['attempts_with_stall']} with a stall > {STALL_MS:g} ms ({f['attempts_with_stall_on_all_cpus']} "
                  f"on all CPUs at once, largest {f['max_stall_ms']:.1f} ms), "
                  f"late attempts with a stall: {f['late_attempts_with_stall']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
