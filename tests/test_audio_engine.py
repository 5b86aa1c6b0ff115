"""The audio engine's callback driven directly, block by block, with no device: crossfades,
the sanitiser and meters, a kernel that raises, the watchdog, the transport's beat."""

from __future__ import annotations

import ctypes
import time

import numpy as np
import pytest

from compiler_bridge.compile import compile_project
from compiler_bridge.program import Program
from helpers import write_audio_project
from runtimes.audio.engine import NAN_RUN_LIMIT, SLOW_RUN_LIMIT, NativeEngine, audio_callback
from runtimes.base import offer

DC_PATCH = '''
import math


class State:
    level = {level}
    mode = 0


def audio(s, ctx, inp, out):
    slow = 0.0
    if s.mode == 4:  # far longer than a 64-frame block
        for k in range(400_000):
            slow += math.sin(k * 1e-3)
    for i in range(out.shape[0]):
        for c in range(out.shape[1]):
            if s.mode == 4:
                out[i, c] = s.level + slow * 1e-30
            elif s.mode == 1:
                out[i, c] = math.nan
            elif s.mode == 3:
                raise ValueError("mode 3")
            elif s.mode == 2:
                out[i, c] = 2.0
            else:
                out[i, c] = s.level
'''



@pytest.fixture(scope="session")
def dc_programs(tmp_path_factory) -> dict[float, Program]:
    """Constant-output programs at levels 0.25, 0.75 and 1.0 (``mode`` 1: NaN, 2: 2.0, 3: raises, 4: slow)."""
    root = tmp_path_factory.mktemp("dc")
    return {level: Program.from_compiled(compile_project(
        write_audio_project(root, f"dc{int(level * 100)}", "", DC_PATCH.format(level=level))))
        for level in (0.25, 0.75, 1.0)}



# --- driving the callback directly (no device) ----------------------------------------

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong,
                             ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p)(audio_callback.address)


def _play(engine: NativeEngine, blocks: int, frames: int = 64, channels: int = 1) -> np.ndarray:
    out = np.zeros((frames, channels), np.float32)
    taken = []
    for _ in range(blocks):
        _CALLBACK(None, out.ctypes.data, frames, None, 0, engine.address)
        taken.append(out.copy())
    return np.concatenate(taken)[:, 0]


def test_crossfade_is_linear_equal_gain_and_restarts_from_the_current_mix(dc_programs):
    """A swap mid-crossfade fades the current mix (not the old program) to the newest."""
    rate, fade = 6400.0, 128  # crossfade_ms chosen so the fade is exactly 128 frames
    engine = NativeEngine(rate, 0, 1, max_frames=64, crossfade_ms=fade * 1000 / rate)
    a, b, c = dc_programs[0.25], dc_programs[0.75], dc_programs[1.0]
    engine.request_swap(offer(a))
    x = _play(engine, 4)  # fade in from silence: k/128 * 0.25, then 0.25
    k = np.arange(1, 257)
    np.testing.assert_allclose(x, 0.25 * np.minimum(k / fade, 1.0), atol=1e-6)

    engine.request_swap(offer(b))
    x = _play(engine, 1)  # half way from 0.25 to 0.75
    k = np.arange(1, 65)
    np.testing.assert_allclose(x, 0.25 + 0.5 * k / fade, atol=1e-6)
    mix_gain_b = 64 / fade

    engine.request_swap(offer(c))
    x = _play(engine, 4)
    k = np.arange(1, 257)
    ramp = np.minimum(k / fade, 1.0)
    current_mix = 0.25 * (1 - mix_gain_b) + 0.75 * mix_gain_b  # where the first fade had got to
    np.testing.assert_allclose(x, current_mix * (1 - ramp) + 1.0 * ramp, atol=1e-6)
    stats = engine.stats()
    assert stats["swaps"] == 2 and stats["blocks"] == 9
    engine.release_finished()
    kept = engine.handover.kept()  # the newest program, and the one before it for the watchdog
    assert len(kept) == 2 and b in kept and c in kept


def test_nan_and_clipping_are_sanitised_and_counted(dc_programs):
    """NaN -> 0 per block counted; the mix hard-clipped at +-1 per sample counted."""
    program = dc_programs[0.25]
    engine = NativeEngine(48000.0, 0, 2, max_frames=64, crossfade_ms=0.0)
    ring = engine.controls
    engine.request_swap(offer(program))
    mode = program.layout.target("mode")
    assert (_play(engine, 2, channels=2) == 0.25).all()
    ring.push(*mode, 1)  # the kernel now writes NaN
    assert (_play(engine, 3, channels=2) == 0.0).all()
    ring.push(*mode, 2)  # the kernel now writes 2.0
    assert (_play(engine, 2, channels=2) == 1.0).all()
    stats = engine.stats()
    assert stats["nan_blocks"] == 3
    assert stats["clipped_samples"] == 2 * 64 * 2


def test_the_output_meters_read_peak_and_rms_per_channel(dc_programs):
    """A steady 0.25 (-12.04 dBFS) settles both meters there; silence falls to the floor."""
    from runtimes.audio.engine import METER_FLOOR_DBFS

    program = dc_programs[0.25]
    engine = NativeEngine(48000.0, 0, 2, max_frames=64, crossfade_ms=0.0)
    assert engine.meters() == {"peak_dbfs": [METER_FLOOR_DBFS] * 2, "rms_dbfs": [METER_FLOOR_DBFS] * 2}
    engine.request_swap(offer(program))
    _play(engine, 48000 * 3 // 64, channels=2)  # 3 s: ten time constants
    level = 20 * np.log10(0.25)
    meters = engine.meters()
    assert meters["peak_dbfs"] == [round(level, 1)] * 2 and meters["rms_dbfs"] == [round(level, 1)] * 2
    engine.controls.push(*program.layout.target("mode"), 1)  # NaN: silenced
    _play(engine, 48000 // 64, channels=2)  # 1 s of silence: both fall by exp(-1 / 0.3) in amplitude and power
    fallen = engine.meters()
    assert fallen["peak_dbfs"] == pytest.approx([level - 28.95] * 2, abs=0.2)
    assert fallen["rms_dbfs"] == pytest.approx([level - 14.48] * 2, abs=0.2)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # numba reports it so
def test_a_kernel_that_raises_live_is_silenced_and_not_called_again(dc_programs):
    """numba takes the GIL to report each exception: after one, the voice is muted."""
    program = dc_programs[0.25]
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    ring = engine.controls
    engine.request_swap(offer(program))
    assert (_play(engine, 2) == 0.25).all()
    ring.push(*program.layout.target("mode"), 3)  # the kernel now raises
    assert (_play(engine, 5) == 0.0).all()
    assert engine.stats()["kernel_errors"] == 1  # called once, then never again
    fresh = dc_programs[0.75]  # the next save plays again, from its defaults: the state of a kernel that
    engine.request_swap(offer(fresh))  # raised (mode 3
    assert (_play(engine, 2) == 0.75).all()  # here) is not carried over
    assert engine.stats()["kernel_errors"] == 1


def test_the_watchdog_falls_back_to_the_program_before_after_a_run_of_nan_blocks(dc_programs):
    a, b = dc_programs[0.25], dc_programs[0.75]
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(offer(a))
    assert (_play(engine, 2) == 0.25).all()
    engine.request_swap(offer(b))
    assert (_play(engine, 2) == 0.75).all()
    engine.controls.push(*b.layout.target("mode"), 1)  # b now writes NaN
    x = _play(engine, NAN_RUN_LIMIT + 3)
    assert (x[: NAN_RUN_LIMIT * 64] == 0.0).all()  # sanitised, for exactly the watchdog's run
    assert (x[NAN_RUN_LIMIT * 64:] == 0.25).all()  # then a again, from the next block
    assert engine.fault() == (1, "nan", b, a) and engine.playing()[0] is a
    engine.request_swap(offer(dc_programs[1.0]))
    assert (_play(engine, 2) == 1.0).all()  # the next save plays as usual


def test_the_watchdog_falls_back_after_sustained_overruns_and_to_silence_without_a_program_before(dc_programs):
    a, b = dc_programs[0.25], dc_programs[0.75]
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(offer(a))
    _play(engine, 1)
    engine.request_swap(offer(b))
    _play(engine, 1)
    engine.controls.push(*b.layout.target("mode"), 4)  # b now takes longer than each block
    blocks = 0
    while engine.fault()[0] == 0 and blocks < 20 * SLOW_RUN_LIMIT:
        _play(engine, 1)
        blocks += 1
    assert blocks >= SLOW_RUN_LIMIT and engine.fault() == (1, "slow", b, a)
    assert (_play(engine, 2) == 0.25).all()

    alone = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    alone.request_swap(offer(b))
    alone.controls.push(*b.layout.target("mode"), 1)
    _play(alone, NAN_RUN_LIMIT + 1)
    assert alone.fault() == (1, "nan", b, None)
    alone.controls.push(*b.layout.target("mode"), 0)  # even healthy again, it stays muted until a save
    assert (_play(alone, 2) == 0.0).all()


def test_block_longer_than_scratch_is_rendered_in_chunks(dc_programs):
    program = dc_programs[0.75]
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(offer(program))
    x = _play(engine, 1, frames=200)
    assert (x == 0.75).all()
    assert engine.stats()["blocks"] == 4  # 64 + 64 + 64 + 8 frames


BEAT_PATCH = '''
class State:
    unused = 0.0


def audio(s, ctx, inp, out):
    for i in range(out.shape[0]):
        out[i, 0] = ctx.beat / 100.0  # scaled into the +-1 the output is clipped to
        out[i, 1] = ctx.tempo_bpm / 1000.0
'''


def test_kernel_sees_the_transport_beat_and_tempo(tmp_path):
    program = Program.from_compiled(compile_project(write_audio_project(tmp_path, "beat", "", BEAT_PATCH)))
    engine = NativeEngine(48000.0, 0, 2, max_frames=64, crossfade_ms=0.0)
    engine.set_transport(90.0, 8.0, time.monotonic_ns())
    engine.request_swap(offer(program))
    first = _play(engine, 1, channels=2)[0] * 100.0
    out = np.zeros((64, 2), np.float32)
    _CALLBACK(None, out.ctypes.data, 64, None, 0, engine.address)
    assert out[0, 1] == np.float32(0.09)
    assert 7.999 <= first <= out[0, 0] * 100.0 < 8.0 + 90.0 / 60.0  # beats advance at the tempo from the anchor


@pytest.mark.parametrize("gate_beat", [1.0, None])  # the control: no gate, the first block plays
def test_a_start_on_a_beat_plays_silence_until_the_exact_frame_of_that_beat(dc_programs, gate_beat):
    rate, block = 48000, 256
    engine = NativeEngine(float(rate), 0, 1, block, crossfade_ms=1.0)
    engine.set_transport(120.0, 0.0, 0)  # beat 0 at t = 0: beat 1 at 0.5 s, frame 24000
    if gate_beat is not None:
        engine.start_on_beat(gate_beat)
    program = dc_programs[0.25]
    engine.request_swap(offer(program))
    out = np.zeros((100 * block, 1), np.float32)
    for k in range(100):
        engine.render(out[k * block:(k + 1) * block], k * block * 1_000_000_000 // rate)
    first = int(np.argmax(out[:, 0] != 0.0))
    assert first == (24000 if gate_beat is not None else 0)
    assert out[first + 48:, 0] == pytest.approx(0.25)  # faded in over 1 ms, then the program's level
    assert engine.acked("swap", 1)


