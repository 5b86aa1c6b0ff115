"""Cost of livehost's native audio callback and speed of a numba kernel, against C.

Measured in this run, on this machine (no device needed):

1. Per-block cost of the livehost trampoline (``runtimes.audio.engine.audio_callback``)
   playing an empty kernel, vs a minimal C PortAudio callback that writes
   silence; both called through the same C timing loop, 256 stereo frames.
2. Throughput of a 64-oscillator additive synth: the patch compiled by
   livehost (numba), called through its native entry by the same C loop, vs
   the same loop in C ``-O2`` (gcc, compiled here), vs numpy-vectorised, vs
   pure Python.

The last output line is one JSON object; ``callback_overhead_ratio`` is
livehost callback cost / C callback cost, ``kernel_speed_vs_c`` is C time /
numba time (1.0 = as fast as C).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from compiler_bridge.abi import new_context, new_events
from compiler_bridge.compile import compile_project
from runtimes.audio.engine import NativeEngine, audio_callback
from runtimes.base import offer
from compiler_bridge.program import Program

SAMPLE_RATE = 48000.0  # Hz
BLOCK_FRAMES = 256
CHANNELS = 2
OSCILLATORS = 64

C_SOURCE = r"""
#include <math.h>
#include <string.h>
#include <time.h>

typedef int (*pa_callback)(const void *, void *, unsigned long, const void *, unsigned long, void *);
typedef int (*kernel)(void *, void *, void *, void *, void *);

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The reference: the least a PortAudio callback can do, write silence. */
int silence_callback(const void *in, void *out, unsigned long frames, const void *time_info,
                     unsigned long flags, void *user) {
    memset(out, 0, frames * (unsigned long)(long)user * sizeof(float));
    return 0;
}

/* Mean ns per call of a PortAudio callback, over `calls` calls. */
double time_callback(pa_callback cb, void *user, float *out, unsigned long frames, long calls) {
    long long t0 = now_ns();
    for (long i = 0; i < calls; i++) cb(0, out, frames, 0, 0, user);
    return (double)(now_ns() - t0) / calls;
}

/* Mean ns per call of a livehost kernel entry. */
double time_kernel(kernel k, void *state, void *ctx, void *in, void *out, void *ev, long calls) {
    long long t0 = now_ns();
    for (long i = 0; i < calls; i++) k(state, ctx, in, out, ev);
    return (double)(now_ns() - t0) / calls;
}

/* The same additive synth as the patch, in C. */
void additive(double *phase, const double *inc, const double *amp, int oscillators, float *out,
              int frames, int channels) {
    const double two_pi = 6.283185307179586;
    for (int i = 0; i < frames; i++) {
        double acc = 0.0;
        for (int k = 0; k < oscillators; k++) {
            acc += amp[k] * sin(phase[k]);
            phase[k] += inc[k];
            if (phase[k] >= two_pi) phase[k] -= two_pi;
        }
        for (int c = 0; c < channels; c++) out[i * channels + c] = (float)acc;
    }
}

double time_additive(double *phase, const double *inc, const double *amp, int oscillators, float *out,
                     int frames, int channels, long calls) {
    long long t0 = now_ns();
    for (long i = 0; i < calls; i++) additive(phase, inc, amp, oscillators, out, frames, channels);
    return (double)(now_ns() - t0) / calls;
}
"""

EMPTY_PATCH = '''
class State:
    unused = 0.0


def audio(s, ctx, inp, out):
    pass
'''

ADDITIVE_PATCH = '''
import math

import numpy as np
from compiler_bridge.api import array

N = {oscillators}


class State:
    phase = array(N)
    inc = array([2.0 * math.pi * 55.0 * (k + 1) / {sample_rate} for k in range(N)])
    amp = array([0.5 / (k + 1) for k in range(N)])


def audio(s, ctx, inp, out):
    two_pi = 2.0 * math.pi
    for i in range(out.shape[0]):
        acc = 0.0
        for k in range(N):
            acc += s.amp[k] * math.sin(s.phase[k])
            s.phase[k] += s.inc[k]
            if s.phase[k] >= two_pi:
                s.phase[k] -= two_pi
        for c in range(out.shape[1]):
            out[i, c] = acc
'''

TOML = f"""name = "bench"
tempo_bpm = 120.0
selected_runtime = 0

[[runtime_settings]]
runtime = "audio"
sample_rate = {int(SAMPLE_RATE)}
block_frames = {BLOCK_FRAMES}
channels_out = {CHANNELS}
"""


def build_c(workdir: Path) -> ctypes.CDLL:
    """Compile the C reference with gcc -O2 into a shared library and load it."""
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is needed for the C reference (apt-get install gcc)")
    src, lib = workdir / "reference.c", workdir / "libreference.so"
    src.write_text(C_SOURCE)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src), "-lm"], check=True)
    c = ctypes.CDLL(str(lib))
    c.time_callback.restype = c.time_kernel.restype = c.time_additive.restype = ctypes.c_double
    c.time_callback.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_long]
    c.time_kernel.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_long]
    c.time_additive.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                                        ctypes.c_long]
    return c


def compile_patch(workdir: Path, name: str, patch: str) -> Program:
    project = workdir / name
    project.mkdir()
    (project / "livehost.toml").write_text(TOML)
    (project / "patch.py").write_text(patch)
    return Program.from_compiled(compile_project(project))


def best_ns(measure, repeats: int) -> float:
    """The fastest of *repeats* runs: the least disturbed by other processes."""
    return min(measure() for _ in range(repeats))


def callback_costs(c: ctypes.CDLL, program: Program, calls: int, repeats: int) -> tuple[float, float]:
    """ns per block of the livehost callback (empty kernel) and of the C silence callback."""
    engine = NativeEngine(SAMPLE_RATE, 0, CHANNELS, BLOCK_FRAMES, crossfade_ms=0.0)
    engine.request_swap(offer(program))
    out = np.zeros((BLOCK_FRAMES, CHANNELS), np.float32)
    callback = ctypes.cast(c.silence_callback, ctypes.c_void_p).value
    ours = best_ns(lambda: c.time_callback(audio_callback.address, engine.address, out.ctypes.data,
                                           BLOCK_FRAMES, calls), repeats)
    theirs = best_ns(lambda: c.time_callback(callback, CHANNELS, out.ctypes.data, BLOCK_FRAMES, calls), repeats)
    return ours, theirs


def additive_inputs(program: Program) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    state = program.new_state()
    return state["phase"][0].copy(), state["inc"][0].copy(), state["amp"][0].copy()


def numba_block_ns(c: ctypes.CDLL, program: Program, calls: int, repeats: int) -> tuple[float, np.ndarray]:
    state = program.new_state()
    ctx = new_context(sample_rate=SAMPLE_RATE, block_frames=BLOCK_FRAMES, channels_out=CHANNELS)
    inp, out, ev = np.zeros((BLOCK_FRAMES, 1), np.float32), np.zeros((BLOCK_FRAMES, CHANNELS), np.float32), new_events()
    c.time_kernel(program.kernels["audio"], state.ctypes.data, ctx.ctypes.data, inp.ctypes.data, out.ctypes.data,
                  ev.ctypes.data, 1)
    first = out[:, 0].copy()
    ns = best_ns(lambda: c.time_kernel(program.kernels["audio"], state.ctypes.data, ctx.ctypes.data, inp.ctypes.data,
                                       out.ctypes.data, ev.ctypes.data, calls), repeats)
    return ns, first


def c_block_ns(c: ctypes.CDLL, program: Program, calls: int, repeats: int) -> tuple[float, np.ndarray]:
    phase, inc, amp = additive_inputs(program)
    out = np.zeros((BLOCK_FRAMES, CHANNELS), np.float32)
    args = (phase.ctypes.data, inc.ctypes.data, amp.ctypes.data, OSCILLATORS, out.ctypes.data, BLOCK_FRAMES, CHANNELS)
    c.time_additive(*args, 1)
    first = out[:, 0].copy()
    return best_ns(lambda: c.time_additive(*args, calls), repeats), first


def numpy_block(phase: np.ndarray, inc: np.ndarray, amp: np.ndarray, out: np.ndarray) -> None:
    """The synth vectorised over frames and oscillators (phase advanced in place)."""
    phases = phase + inc * np.arange(BLOCK_FRAMES)[:, None]
    out[:] = (np.sin(phases) @ amp).astype(np.float32)[:, None]
    np.remainder(phase + inc * BLOCK_FRAMES, 2.0 * math.pi, out=phase)


def python_block(phase: list, inc: list, amp: list, out: list) -> None:
    two_pi = 2.0 * math.pi
    for i in range(BLOCK_FRAMES):
        acc = 0.0
        for k in range(OSCILLATORS):
            acc += amp[k] * math.sin(phase[k])
            phase[k] += inc[k]
            if phase[k] >= two_pi:
                phase[k] -= two_pi
        out[i] = acc


def python_timed(block, args, calls: int, repeats: int) -> float:
    def measure() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            block(*args)
        return (time.perf_counter_ns() - t0) / calls

    return best_ns(measure, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="callback calls per measurement")
    parser.add_argument("--blocks", type=int, default=400, help="synth blocks per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="livehost-bench-") as tmp:
        workdir = Path(tmp)
        c = build_c(workdir)
        empty = compile_patch(workdir, "empty", EMPTY_PATCH)
        additive = compile_patch(workdir, "additive",
                                 ADDITIVE_PATCH.format(oscillators=OSCILLATORS, sample_rate=SAMPLE_RATE))
        ours_ns, c_callback_ns = callback_costs(c, empty, args.calls, args.repeats)
        numba_ns, numba_first = numba_block_ns(c, additive, args.blocks, args.repeats)
        c_ns, c_first = c_block_ns(c, additive, args.blocks, args.repeats)
        if not np.allclose(numba_first, c_first, atol=1e-5):
            raise SystemExit("numba and C synth outputs differ: the comparison would be unfair")
        phase, inc, amp = additive_inputs(additive)
        numpy_ns = python_timed(numpy_block, (phase, inc, amp, np.zeros((BLOCK_FRAMES, 1), np.float32)),
                                args.blocks, args.repeats)
        phase, inc, amp = additive_inputs(additive)
        python_ns = python_timed(python_block, (list(phase), list(inc), list(amp), [0.0] * BLOCK_FRAMES),
                                 max(args.blocks // 40, 3), 2)
    block_us = BLOCK_FRAMES / SAMPLE_RATE * 1e6
    print(f"block: {BLOCK_FRAMES} frames x {CHANNELS} ch at {SAMPLE_RATE:g} Hz = {block_us:.0f} us")
    print(f"callback, empty kernel: livehost {ours_ns:8.0f} ns   C silence {c_callback_ns:8.0f} ns")
    print(f"{OSCILLATORS}-oscillator additive synth per block:")
    for name, ns in (("C -O2", c_ns), ("numba", numba_ns), ("numpy", numpy_ns), ("pure Python", python_ns)):
        print(f"  {name:12s} {ns / 1e3:10.1f} us   {ns / 1e3 / block_us:8.3f} of the block")
    print(json.dumps({
        "callback_overhead_ratio": round(ours_ns / c_callback_ns, 3),
        "kernel_speed_vs_c": round(c_ns / numba_ns, 3),
        "numpy_vs_numba": round(numba_ns / numpy_ns, 3),
        "python_vs_numba": round(numba_ns / python_ns, 5),
        "livehost_callback_ns": round(ours_ns, 1),
        "c_callback_ns": round(c_callback_ns, 1),
        "numba_block_us": round(numba_ns / 1e3, 2),
        "c_block_us": round(c_ns / 1e3, 2),
        "numpy_block_us": round(numpy_ns / 1e3, 2),
        "python_block_us": round(python_ns / 1e3, 1),
        "block_frames": BLOCK_FRAMES,
        "oscillators": OSCILLATORS,
    }))


if __name__ == "__main__":
    main()
