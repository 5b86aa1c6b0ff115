"""What bounds-checked entry points cost a kernel while it plays.

Each example's kernels are built twice from the same templates, with bounds
checks (what livehost plays) and without, in one process; the two are called
in turns, block by block (or tick by tick), on the same inputs, so the
machine's noise falls on both alike. Prints the median time per call of
each and their ratio; one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from compiler_bridge import abi
from compiler_bridge.compile.patch import exec_patch, kernels_and_layout
from compiler_bridge.compile.templates import entry_text
from compiler_bridge.compile.testrun import RunShape, fresh_buffers, next_call
from compiler_bridge.config import PATCH_NAME, load_config
from compiler_bridge.program import load_build

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("sine", "fm", "input_effect", "sequencer", "switch")


def _entry_source(kernels: list[str], layout, checked: bool) -> str:
    text = entry_text(layout.dtype.descr, kernels)
    assert "boundscheck=True" in text
    return text if checked else text.replace("boundscheck=True", "boundscheck=False")


def _measure(example: str, calls: int, folder: Path) -> dict:
    project = ROOT / "examples" / example
    source = (project / PATCH_NAME).read_text()
    config = load_config(project)
    kernels, layout = kernels_and_layout(exec_patch(source, str(project / PATCH_NAME)), source, example)
    shape = RunShape.of(config)
    build = folder / example
    build.mkdir()
    shutil.copy(project / PATCH_NAME, build / PATCH_NAME)
    entries = {}
    for checked in (True, False):
        name = "checked_entry" if checked else "plain_entry"
        (build / f"{name}.py").write_text(_entry_source(kernels, layout, checked))
        module = load_build(build, name)
        entries[checked] = {k: abi.KERNEL_CFUNCTYPE(getattr(module, f"{k}_entry").address) for k in kernels}
    if example == "sequencer":  # the control: only the checked build refuses s.notes[s.step] out of range
        outcome, hook = {}, sys.unraisablehook
        sys.unraisablehook = lambda unraisable: None  # (numba reports what the checked one raised)
        for checked in (True, False):
            state, ctx, inp, out, ev = fresh_buffers(layout, shape)
            state["step"] = 4
            next_call(ctx, ev, 0, shape, "midi", inp)
            outcome[checked] = entries[checked]["midi"](state.ctypes.data, ctx.ctypes.data, inp.ctypes.data,
                                                       out.ctypes.data, ev.ctypes.data)
        sys.unraisablehook = hook
        print(f"control, s.step = 4 past s.notes: the bounds-checked entry returned {outcome[True]} (raised), "
              f"the unchecked one {outcome[False]} (read past the array)", flush=True)
        assert outcome == {True: 0, False: 1}, outcome
    figures = {}
    for kernel in kernels:
        buffers = {checked: fresh_buffers(layout, shape) for checked in (True, False)}
        times = {True: [], False: []}
        for i in range(calls):
            for checked in ((True, False) if i % 2 else (False, True)):  # who goes first alternates
                state, ctx, inp, out, ev = buffers[checked]
                next_call(ctx, ev, i, shape, kernel, inp)
                fn = entries[checked][kernel]
                t0 = time.perf_counter_ns()
                ok = fn(state.ctypes.data, ctx.ctypes.data, inp.ctypes.data, out.ctypes.data, ev.ctypes.data)
                times[checked].append(time.perf_counter_ns() - t0)
                assert ok == 1, (example, kernel, i)
        # the same inputs give the same output: the checks change nothing but the time
        assert (buffers[True][0] == buffers[False][0]).all() and (buffers[True][3] == buffers[False][3]).all()
        checked_us, plain_us = (statistics.median(times[c]) / 1000 for c in (True, False))
        figures[f"{example}.{kernel}"] = {"checked_us": round(checked_us, 3), "plain_us": round(plain_us, 3),
                                          "ratio": round(checked_us / plain_us, 3)}
        print(f"{example}.{kernel}: bounds-checked {checked_us:.2f} us per call, unchecked {plain_us:.2f} us: "
              f"x{checked_us / plain_us:.2f}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls of each kernel, each way")
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory(prefix="livehost-bench-") as folder:
        for example in EXAMPLES:
            figures.update(_measure(example, args.calls, Path(folder)))
    ratios = [f["ratio"] for f in figures.values()]
    print(json.dumps({"max_ratio": max(ratios), "median_ratio": statistics.median(ratios), "kernels": figures}))


if __name__ == "__main__":
    main()
