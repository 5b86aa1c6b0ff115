"""The test run: kernels called on fresh default state as a runtime calls them, before any host sees them.

A kernel is refused when it raises, writes NaN/inf (to its output or its
state), or takes longer per call than a block (or tick) lasts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np

from .. import abi
from ..config import ProjectConfig
from ..errors import PatchError
from .children import quieted
from .diagnostics import line_of_def, patch_error_from

TEST_BLOCKS = 16
TEST_TICKS = 96
# What midi_in() is fed in its test run: a chord pressed and released, a controller swept,
# pitch bend and aftertouch, then every note on and off (as a keyboard may send them).
TEST_MESSAGES = [(0x90, 60, 100), (0x90, 64, 90), (0x90, 67, 80), (0xB0, 1, 0), (0xB0, 1, 127), (0xE0, 0, 64),
                 (0xD0, 50, 0), (0x80, 60, 0), (0x90, 64, 0), (0x80, 67, 64),
                 *[(0x90 | (n % 16), n, 1 + n % 127) for n in range(128)], *[(0x80, n, 0) for n in range(128)]]
CHECKED_SLACK = 4.0  # how much slower the bounds-checked test pass may be than the budget


@dataclass(frozen=True)
class RunShape:
    """What a test run feeds the kernels: the selected runtime's settings, else
    those of the first entry that has them (a device's own rate and block
    size are not known here: 48 kHz and 256 frames, JACK's usual)."""

    sample_rate: int = 48000
    block_frames: int = 256
    channels_in: int = 0
    channels_out: int = 2
    ppqn: int = 24
    channel: int = 0  # 0-15
    tempo_bpm: float = 120.0

    @classmethod
    def of(cls, config: ProjectConfig) -> "RunShape":
        entries = config.runtime_settings
        selected = entries[config.selected_runtime] if 0 <= config.selected_runtime < len(entries) else {}

        def pick(kinds: tuple[str, ...]) -> dict:
            if selected.get("runtime") in kinds:
                return selected
            return next((e for e in entries if e.get("runtime") in kinds), {})

        audio, midi = pick(("audio", "jack", "offline")), pick(("midi", "jack", "logic", "offline"))
        return cls(audio.get("sample_rate") or 48000, audio.get("block_frames") or 256,
                   audio.get("channels_in") or 0, audio.get("channels_out") or 2, midi.get("ppqn") or 24,
                   (midi.get("channel") or 1) - 1, midi.get("tempo_bpm") or config.tempo_bpm)


def checked_run(kernel, checked, layout, shape, shown, real, patch_mod, report) -> None:
    """Run the bounds-checked *kernel* on fresh default state, called from Python:
    an out-of-range index or an exception is reported with its line instead of
    corrupting memory later in the audio thread."""
    n_calls, (state, ctx, inp, out, ev) = _start_test_run(kernel, layout, shape, patch_mod, report)
    times = []
    for i in range(n_calls):
        next_call(ctx, ev, i, shape, kernel, inp)
        args = _test_args(kernel, shape, state, ctx, inp, out, ev)
        t0 = time.perf_counter()
        try:
            checked(*args)
        except Exception as exc:
            err = patch_error_from(exc, shown, real)
            line = err.line or line_of_def(patch_mod, kernel)
            raise PatchError(shown, line, f"{kernel}() raised {err.message} in the test run") from None
        times.append(time.perf_counter() - t0)
        if i >= 3:  # far over budget even allowing for the bounds checks: say so now, not at the time limit
            _check_block_time(times[1:], shape, kernel, shown, patch_mod, CHECKED_SLACK)


class KernelRaised(Exception):
    """The entry point returned 0 in test call *call*: the kernel raised."""

    def __init__(self, call: int) -> None:
        super().__init__(call)
        self.call = call


def entry_run(kernel, address, layout, shape, shown, patch_mod, report) -> None:
    """Run *kernel*'s native entry point on fresh default state as a runtime calls
    it: NaN/inf output or state, and the time per block or tick, are checked; a
    call that raised raises :class:`KernelRaised`."""
    fn = abi.KERNEL_CFUNCTYPE(address)
    n_calls, (state, ctx, inp, out, ev) = _start_test_run(kernel, layout, shape, patch_mod, report)
    times = []
    with quieted(2):  # numba prints what a C callback raised: the checked run says it better
        for i in range(n_calls):
            next_call(ctx, ev, i, shape, kernel, inp)
            t0 = time.perf_counter()
            ok = fn(state.ctypes.data, ctx.ctypes.data, inp.ctypes.data, out.ctypes.data, ev.ctypes.data)
            times.append(time.perf_counter() - t0)
            if ok == 0:
                raise KernelRaised(i)
            if kernel == "audio" and not np.isfinite(out).all():
                raise PatchError(shown, line_of_def(patch_mod, kernel), f"audio() wrote NaN or inf in test block {i}")
            _check_state(layout, state, kernel, i, shown, patch_mod)
            if i >= 3:  # the first call may page memory in
                _check_block_time(times[1:], shape, kernel, shown, patch_mod)


def kernel_signature(kernel: str, layout, shape: RunShape) -> tuple:
    """The numba types of *kernel*'s arguments in a test run."""
    return tuple(numba.typeof(a) for a in _test_args(kernel, shape, *fresh_buffers(layout, shape)))


def _start_test_run(kernel: str, layout, shape: RunShape, patch_mod, report) -> tuple[int, tuple]:
    """How many calls *kernel*'s test run makes, and fresh buffers; *report* is told the
    run starts (its time limit starts then)."""
    buffers = fresh_buffers(layout, shape)
    next_call(buffers[1], buffers[4], 0, shape, kernel, buffers[2])  # numba's own helpers compile (or load) now, not
    report({"testing": kernel, "line": line_of_def(patch_mod, kernel)})  # within the time limit
    return {"audio": TEST_BLOCKS, "midi": TEST_TICKS}.get(kernel, len(TEST_MESSAGES)), buffers


def fresh_buffers(layout, shape: RunShape):
    """Fresh buffers of a call: default state, context, input (an audio block, or room for
    midi_in()'s message as well), output and events."""
    ctx = abi.new_context(sample_rate=shape.sample_rate, block_frames=shape.block_frames,
                          channels_in=shape.channels_in, channels_out=shape.channels_out,
                          tempo_bpm=shape.tempo_bpm, ppqn=shape.ppqn, channel=shape.channel)
    return (layout.defaults(), ctx, np.zeros((max(shape.block_frames, abi.MIDI_IN_BYTES), max(shape.channels_in, 1)),
                                              np.float32),
            np.zeros((shape.block_frames, shape.channels_out), np.float32), abi.new_events(shape.channel))


def _test_args(kernel: str, shape: RunShape, state, ctx, inp, out, ev) -> tuple:
    """A bounds-checked kernel's arguments (a native entry point gets the raw buffers)."""
    if kernel == "audio":
        return state[0], ctx[0], inp[:, : shape.channels_in], out
    if kernel == "midi_in":
        status, data1, data2 = _message(inp)  # (int32, as the entry point passes them)
        return state[0], ctx[0], status, data1, data2
    return state[0], ctx[0], ev


def _message(inp: np.ndarray) -> np.ndarray:
    """The int32 message a midi_in() entry point reads at the input pointer."""
    return inp.reshape(-1).view(np.int32)[: abi.MIDI_IN_BYTES]


def next_call(ctx: np.ndarray, ev: np.ndarray, i: int, shape: RunShape, kernel: str, inp: np.ndarray) -> None:
    """Context of call *i*: a block for the audio kernel, a tick for the MIDI kernel, the
    frame of message *i* (written to *inp*) for midi_in()."""
    if kernel == "audio" or kernel == "midi_in":
        frames, frame = shape.block_frames, i * shape.block_frames
        beat = frame / shape.sample_rate * shape.tempo_bpm / 60.0
    else:
        per_tick = abi.frames_per_tick(shape.sample_rate, shape.tempo_bpm, shape.ppqn)
        frames, frame, beat = round(per_tick), round(i * per_tick), i / shape.ppqn
    abi.fill_context(ctx, frames, i, frame, beat, shape.tempo_bpm)
    ev[0, abi.EVENT_HEADER_COUNT] = 0
    if kernel == "midi_in":
        _message(inp)[:] = TEST_MESSAGES[i % len(TEST_MESSAGES)]


def _check_block_time(times: list[float], shape: RunShape, kernel: str, shown, patch_mod, slack: float = 1.0) -> None:
    """Reject a kernel whose typical call takes longer than it may (times *slack*).

    An audio block must be computed within the block's own length. A MIDI
    kernel runs inside a JACK process callback, so within one period, and
    within one tick when ticks come faster than periods.
    """
    block_s = shape.block_frames / shape.sample_rate
    budget_s, what = block_s, f"a block lasts {block_s * 1e3:.2f} ms ({shape.block_frames} frames at {shape.sample_rate} Hz)"
    tick_s = abi.frames_per_tick(shape.sample_rate, shape.tempo_bpm, shape.ppqn) / shape.sample_rate
    if kernel == "midi" and tick_s < block_s:
        budget_s, what = tick_s, f"a tick lasts {tick_s * 1e3:.2f} ms ({shape.ppqn} ppqn at {shape.tempo_bpm:g} BPM)"
    typical = sorted(times)[len(times) // 2]
    if typical > budget_s * slack:
        unit = "block" if kernel == "audio" else "tick"
        raise PatchError(shown, line_of_def(patch_mod, kernel),
                         f"{kernel}() takes {typical * 1e3:.2f} ms per {unit}; {what}")


def _check_state(layout, state, kernel, i, shown, patch_mod) -> None:
    for f in layout.fields:
        if f.dtype.startswith("f") and not np.isfinite(state[f.name]).all():
            raise PatchError(shown, line_of_def(patch_mod, kernel),
                             f"{kernel}() made state field {f.name!r} NaN or inf in test call {i}")
