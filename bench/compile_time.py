"""Compile times of examples/sine: cold and warm, in the worker, and the
host's load of a finished build, measured side by side in one run; and
numba's floor: the sine kernel alone compiled by numba in a warm process
(no entry point, bounds checks, test run or process), what a code edit can
never be faster than.

Prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compiler_bridge.worker import CompileWorker
from floor import numba_floor_s  # (bench/ is on sys.path: the script's folder)

ROOT = Path(__file__).resolve().parents[1]
PAUSE_S = 1.0  # between code edits, as between a performer's saves: the worker's standby children get ready
LOAD_SNIPPET = """
import json, sys, time
from compiler_bridge.program import Program, read_compiled
times = []
for path in sys.argv[1:]:
    t0 = time.perf_counter()
    Program.from_compiled(read_compiled(path))
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def edit(patch: Path, freq: float) -> None:
    text = patch.read_text()
    start = text.index("freq_hz = ") + len("freq_hz = ")
    end = text.index("\n", start)
    patch.write_text(text[:start] + repr(freq) + text[end:])


def edit_code(patch: Path, thousandths: int) -> None:
    """A code edit: a factor in the kernel's phase step, as a quotient of ints (a new build)."""
    text = patch.read_text()
    start = text.index("s.freq_hz") + len("s.freq_hz")
    end = text.index(" / ctx.sample_rate", start)
    patch.write_text(text[:start] + f" * ({thousandths} / 1000)" + text[end:])


def main(rounds: int = 10) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "sine"
        shutil.copytree(ROOT / "examples" / "sine", project, ignore=shutil.ignore_patterns(".livehost"))
        plain = Path(tmp) / "plain"  # the same edits, compiled by a worker that keeps no spare child
        shutil.copytree(project, plain)
        t0 = time.perf_counter()
        worker, no_spare = CompileWorker(), CompileWorker(spare=False)
        try:  # not `with`: a start cut short by Ctrl-C or SIGTERM must end the workers too
            worker.start()
            start_s = time.perf_counter() - t0
            no_spare.start()
            cold = worker.compile(project)
            assert cold.ok, cold.text
            assert no_spare.compile(plain).ok
            warm = []
            for i in range(rounds):
                edit(project / "patch.py", 440.0 + 10 * (i + 1))
                result = worker.compile(project)
                assert result.ok, result.text
                warm.append(result.seconds)
            code, code_no_spare = [], []
            for i in range(rounds):  # side by side, in turns
                first = project / ".livehost" / "first.json"  # the build before the last: paths relative to .livehost/
                shutil.copy(project / ".livehost" / "compiled.json", first)
                for w, folder, times in ((worker, project, code), (no_spare, plain, code_no_spare)):
                    time.sleep(PAUSE_S)
                    edit_code(folder / "patch.py", 1000 + 10 * (i + 1))
                    result = w.compile(folder)
                    assert result.ok, result.text
                    times.append(result.seconds)
        finally:
            worker.close()
            no_spare.close()
        loads = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(first),
                                  str(project / ".livehost" / "compiled.json")],
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            loads.append(json.loads(out.stdout.strip().splitlines()[-1]))
    sine = (ROOT / "examples" / "sine" / "patch.py").read_text()
    floor = numba_floor_s([sine.replace("step = 2.0", f"step = ({1000 + k} / 1000) * 2.0") for k in range(rounds + 1)])
    figures = {
        "worker_start_s": round(start_s, 3),
        "cold_compile_s": round(cold.seconds, 3),
        "warm_compile_s": round(statistics.median(warm), 3),
        "code_edit_compile_s": round(statistics.median(code), 3),
        "code_edit_compile_no_spare_s": round(statistics.median(code_no_spare), 3),
        "spare_vs_no_spare_ratio": round(statistics.median(code) / statistics.median(code_no_spare), 3),
        "numba_floor_s": round(floor, 3),
        "code_edit_vs_numba_floor_ratio": round(statistics.median(code) / floor, 3),
        "host_first_load_s": round(statistics.median(x[0] for x in loads), 4),
        "host_load_s": round(statistics.median(x[1] for x in loads), 4),
        "warm_vs_cold_ratio": round(statistics.median(warm) / cold.seconds, 3),
        "host_load_vs_warm_compile_ratio": round(statistics.median(x[1] for x in loads) / statistics.median(warm), 4),
    }
    print(f"worker start (import numba, warm-up)  {figures['worker_start_s']:.3f} s")
    print(f"cold compile + test run of sine       {figures['cold_compile_s']:.3f} s")
    print(f"a default edit's compile (median)     {figures['warm_compile_s']:.3f} s")
    print(f"a code edit's compile (median)        {figures['code_edit_compile_s']:.3f} s")
    print(f"... by a worker with no spare child   {figures['code_edit_compile_no_spare_s']:.3f} s")
    print(f"numba alone, the kernel (median)      {figures['numba_floor_s']:.3f} s")
    print(f"host: first kernel load in a process  {figures['host_first_load_s']:.4f} s")
    print(f"host: a later build's load            {figures['host_load_s']:.4f} s")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))  # run the clean-up in main()
    main()
