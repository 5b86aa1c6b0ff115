"""The program hand-over between Python and the callbacks, in the states that used to race.

Each engine runs its native code as it does live (the audio callback called
like PortAudio would, the JACK cycle code on a virtual server, the ticked
step), with the requests made in the order that used to go wrong: a second
save before the first was taken, a stop landing while the callback writes
its state every cycle, a swap waiting for its bar, a watchdog fallback.
"""

from __future__ import annotations

import ctypes
import threading

import numba
import numpy as np
import pytest
from numba import carray

from compiler_bridge.abi import as_voidptr
from compiler_bridge.compile import compile_project
from compiler_bridge.program import Program
from helpers import stuck_notes, wait_for
from runtimes.audio.engine import NAN_RUN_LIMIT, NativeEngine, audio_callback
from runtimes.base import offer
from runtimes.realtime.handover import CARRY_SOURCES
from runtimes.ticks.cycle import run_cycle
from runtimes.ticks.engine import TickEngine
from runtimes.ticks.slots import SLOTS_DTYPE, STOPPED, WANT_RUN

# Three layouts: `count` and `level` sit at other offsets in each, `mode` makes a kernel write NaN.
PATCH = '''
from compiler_bridge.api import note_off, note_on


class State:
{fields}    count = 0
    level = {level}
    mode = 0


def audio(s, ctx, inp, out):
    s.count += 1
    for i in range(out.shape[0]):
        out[i, 0] = s.level if s.mode == 0 else math.nan


def midi(s, ctx, ev):
    s.count += 1
    if ctx.tick % 2 == 0:
        note_on(ev, 60, 100)
    else:
        note_off(ev, 60)
'''.replace("from compiler_bridge", "import math\nfrom compiler_bridge")


def _program(root, name: str, fields: str = "", level: float = 0.25, toml: str = "") -> Program:
    project = root / name
    project.mkdir()
    (project / "livehost.toml").write_text(f'{toml}[[runtime_settings]]\nruntime = "logic"\n')
    (project / "patch.py").write_text(PATCH.format(fields=fields, level=level))
    return Program.from_compiled(compile_project(project))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("handover")
    a = _program(root, "a")
    b = _program(root, "b", "    pad_b = 0.0\n", level=0.5)
    c = _program(root, "c", "    pad_c0 = 0.0\n    pad_c1 = 0.0\n    pad_c2 = 0.0\n", level=0.75)
    bar = _program(root, "bar", "    pad_b = 0.0\n", level=0.5, toml='swap_on = "bar"\n')
    offsets = {p.layout.offset_of("count")[0] for p in (a, b, c)}
    assert len(offsets) == 3 and len({a.layout.tag, b.layout.tag, c.layout.tag}) == 3
    return a, b, c, bar


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong,
                             ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p)(audio_callback.address)


def _play(engine: NativeEngine, blocks: int) -> np.ndarray:
    out = np.zeros((64, 1), np.float32)
    taken = []
    for _ in range(blocks):
        _CALLBACK(None, out.ctypes.data, 64, None, 0, engine.address)
        taken.append(out[:, 0].copy())
    return np.concatenate(taken)


# --- a request replaced before it was taken -------------------------------------------------


def test_audio_a_second_save_before_the_first_was_taken_plays_with_the_state_carried(layouts):
    """The old engine overwrote a pending request field by field: a callback reading it meanwhile
    could pair one program's kernel with another's state. Now b is replaced by c before any block:
    c plays, its count carried from a (whose table it has), b never plays."""
    a, b, c, _ = layouts
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(offer(a))
    _play(engine, 10)
    b_seq = engine.request_swap(offer(b))  # the stream is lost: nobody takes it
    c_seq = engine.request_swap(offer(c))
    x = _play(engine, 3)
    assert (x == 0.75).all()
    program, state = engine.playing()
    assert program is c and int(state["count"][0]) == 13  # 10 blocks of a, 3 of c
    assert engine.acked("swap", c_seq) and engine.acked("swap", b_seq)
    assert engine.stats()["swaps"] == 1 and engine.stats()["carry_misses"] == 0


def test_audio_a_save_after_the_first_was_taken_carries_from_it_not_from_the_one_before(layouts):
    a, b, c, _ = layouts
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(offer(a))
    _play(engine, 4)
    engine.request_swap(offer(b))
    _play(engine, 5)
    engine.request_swap(offer(c))
    _play(engine, 2)
    program, state = engine.playing()
    assert program is c and int(state["count"][0]) == 11


def test_a_table_made_for_another_record_is_never_applied(layouts):
    """The control: a record whose tables were made for programs that do not play (as a request
    built against a stale view would be) starts from its defaults, and the miss is counted."""
    a, b, c, _ = layouts
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(offer(a))
    _play(engine, 4)
    stray = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    stray.request_swap(offer(b))
    _play(stray, 1)
    record = engine.handover.post(offer(c), also_from=[])
    # aim every table at b's record in the other engine: same layouts, but not what plays here
    for k in range(CARRY_SOURCES):
        record.record["carry_from"][0, k] = stray.handover.playing().address
    _play(engine, 1)
    program, state = engine.playing()
    assert program is c and int(state["count"][0]) == 1  # from c's default 0, not from a's 4
    assert engine.stats()["carry_misses"] == 1


def _tick_engine(program: Program) -> TickEngine:
    settings = {"ppqn": 24, "channel": 1, "send_clock": False, "send_transport": True}
    engine = TickEngine(settings, 48000.0, 120.0)
    engine.first(offer(program))
    engine.want(WANT_RUN)
    return engine


def test_ticks_two_saves_before_a_tick_play_the_last_with_the_state_carried(layouts):
    """MIDI swaps built their table from the newest block, which could be a swap still pending
    (two saves while the server was lost, or a swap waiting for a long bar)."""
    a, b, c, _ = layouts
    engine = _tick_engine(a)
    for _ in range(6):
        engine.step()
    engine.request(offer(b))
    engine.request(offer(c))
    engine.step()
    program, state = engine.playing()
    assert program is c and int(state["count"][0]) == 7
    assert engine.stats()["swaps"] == 1 and engine.stats()["carry_misses"] == 0


def test_ticks_a_table_made_for_another_record_is_never_applied_and_the_miss_is_counted(layouts):
    a, _, c, _ = layouts
    engine = _tick_engine(a)
    for _ in range(3):
        engine.step()
    record = engine.handover.post(offer(c))
    for k in range(CARRY_SOURCES):  # aimed at a record that does not play here
        record.record["carry_from"][0, k] = 8
    engine.step()
    program, state = engine.playing()
    assert program is c and int(state["count"][0]) == 1 and engine.stats()["carry_misses"] == 1


def test_ticks_a_swap_waiting_for_its_bar_replaced_by_another_carries_from_what_plays(layouts):
    a, b, c, bar = layouts
    engine = _tick_engine(a)
    engine.step()
    engine.request(offer(bar))  # waits for the bar: 4 beats of 24 ticks
    for _ in range(10):
        engine.step()
    assert engine.playing()[0] is a  # still waiting
    engine.request(offer(c))  # a later save, at once
    engine.step()
    program, state = engine.playing()
    assert program is c and int(state["count"][0]) == 12


# --- a stop never lost ----------------------------------------------------------------------


@numba.njit
def _cycles_until_stopped(address, frame, most):
    """Run JACK cycles of 256 frames from *frame* until the engine has stopped; return the cycles."""
    sl = carray(as_voidptr(address), 1, SLOTS_DTYPE)[0]
    for k in range(most):
        run_cycle(sl, 0, 0, np.uint32((frame + 256 * k) & 0xFFFFFFFF), 256)
        if sl.run_state == STOPPED:
            return k + 1
    return -1


def test_a_stop_that_lands_while_the_engine_steps_is_never_lost(layouts):
    """The callback wrote run_state (RUNNING at every cycle on a Link timeline) while Python
    wrote STOPPING: a stop between its read and its write was lost, and close() left the notes
    sounding. Now the native side alone writes run_state; Python's stop is a request. Stops
    land at random moments while a thread steps the engine (the GIL let go in each step), on
    the ticked path's queue so every message can be read: each ends every note and sends Stop."""
    a = layouts[0]
    rng = np.random.default_rng(1)
    lost = early = 0
    for trial in range(50):
        engine = _tick_engine(a)
        stopper = threading.Timer(rng.uniform(0.0, 0.002), lambda: engine.stop(0.0))
        stopper.start()
        messages = []
        for _ in range(200):  # ticked steps racing the stop, then cycles until it is answered
            messages += engine.step()
            if engine.get("run_state") == STOPPED:
                break
        stopper.join()
        if engine.get("run_state") != STOPPED:
            messages += engine.step()
        lost += engine.get("run_state") != STOPPED
        if engine.get("ticks") == 0:  # stopped before its first tick: nothing played, nothing to end
            assert messages == [], f"trial {trial}: {messages}"
            early += 1
            continue
        assert not stuck_notes(messages) and messages[-1] == (0xFC,), f"trial {trial}: {messages[-4:]}"
    print(f"\n50 stops: {early} before the first tick, {50 - early} while playing; lost: {lost}")
    assert lost == 0


def test_a_stop_reaches_the_jack_cycle(layouts):
    a = layouts[0]
    engine = _tick_engine(a)
    assert _cycles_until_stopped(engine.address, 0, 20) == -1  # it runs, and keeps running
    engine.stop(0.0)
    assert _cycles_until_stopped(engine.address, 20 * 256, 2) == 1


# --- what plays after a watchdog fallback ---------------------------------------------------


def test_after_a_fallback_the_snapshot_and_the_next_swap_carry_the_program_that_plays(layouts):
    """newest() used to name the program that faulted: the fade-out, the snapshot and
    state.npz carried its state. Now they carry the program the watchdog went back to."""
    a, b, c, _ = layouts
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(offer(a))
    _play(engine, 5)
    engine.request_swap(offer(b))
    _play(engine, 2)
    engine.controls.push(*b.layout.target("mode"), 1)  # b writes NaN from now on
    _play(engine, NAN_RUN_LIMIT + 3)
    assert engine.fault()[2] is b and engine.playing()[0] is a
    seq = engine.request_snapshot()
    _play(engine, 1)
    program, state = engine.snapshot(seq)
    assert program is a and int(state["count"][0]) == 5 + 4  # a's own count: 5 blocks, then 4 since
    assert int(state["mode"][0]) == 0
    engine.request_swap(offer(c))
    assert (_play(engine, 1) == 0.75).all()
    assert int(engine.playing()[1]["count"][0]) == 5 + 4 + 1  # carried from a, then one block of c


def test_a_program_left_silent_by_the_watchdog_is_not_carried(layouts):
    a, b, _, _ = layouts
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(offer(b))
    engine.controls.push(*b.layout.target("mode"), 1)
    _play(engine, NAN_RUN_LIMIT + 2)
    assert engine.fault()[3] is None  # no program before it: silence
    program, state = engine.playing()
    assert program is b and int(state["mode"][0]) == 0  # its defaults, not its NaN mode
    engine.request_swap(offer(a))
    assert (_play(engine, 1) == 0.25).all()


# --- what is seen at once, what waits for the bar -------------------------------------------


def test_a_swap_on_the_bar_is_seen_at_the_next_tick_and_taken_at_the_bar(layouts):
    a, _, _, bar = layouts
    engine = _tick_engine(a)
    engine.step()
    seq = engine.request(offer(bar))
    engine.step()
    assert engine.handover.seen(seq) and not engine.handover.taken(seq)
    for _ in range(96):
        engine.step()
    assert engine.handover.taken(seq) and engine.playing()[0] is bar



# --- the host's lock is not held while a swap waits for its bar ------------------------------


def test_a_state_write_and_a_tempo_reach_the_engine_while_a_swap_waits_for_its_bar(tmp_path):
    """At 30 BPM with swap_on = "bar" a save waits up to 8 s for its bar. The host used to hold
    its lock all that time: an OSC write sent after the save was heard only at the bar, in the
    new program. Now the write lands in the program that plays, at its next tick, and the swap
    carries it; a tempo change reaches the engine the same way."""
    from host import Host

    project = tmp_path / "slow"
    project.mkdir()
    toml = 'tempo_bpm = 30.0\nswap_on = "bar"\n[[runtime_settings]]\nruntime = "logic"\n'
    (project / "livehost.toml").write_text(toml)
    (project / "patch.py").write_text(PATCH.format(fields="", level=0.25))
    first = compile_project(project)
    (project / "patch.py").write_text(PATCH.format(fields="", level=0.25).replace("s.count += 1", "s.count += 2"))
    second = compile_project(project)
    host = Host(project, watch=False).start()
    try:
        host.request(first)
        assert host.wait_idle(10)
        engine = host.runtime.engine
        wait_for(lambda: engine.get("ticks") >= 2, 10)
        host.request(second)
        assert host.wait_idle(10)
        playing_first = engine.playing()[0]
        assert playing_first.source_hash == first["source_hash"]  # the bar has not come
        host.write_state("level", 0.875)
        host.set_live("tempo_bpm", 40.0)
        seen = []

        def landed() -> bool:
            program, state = engine.playing()
            seen.append(program.source_hash)
            return state["level"][0] == 0.875 and engine.get("tempo_bpm") == 40.0

        wait_for(landed, 5)
        assert seen[-1] == first["source_hash"]  # in the program that plays, before the bar
    finally:
        host.close()


def test_a_replaced_request_stays_alive_until_the_callback_has_seen_past_it(layouts):
    """A call of the callback reads the request once and works on it: a request replaced after
    that read must not be freed under it. Records are dropped only once a later call has seen
    a newer request."""
    a, b, c, _ = layouts
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(offer(a))
    _play(engine, 1)
    engine.request_swap(offer(b))  # (a callback may have read this one as c replaces it)
    engine.request_swap(offer(c))
    engine.release_finished()
    kept = engine.handover.kept()
    assert any(k is b for k in kept) and any(k is c for k in kept)
    _play(engine, 1)  # this call sees c: nothing can hold b any more
    engine.release_finished()
    assert not any(k is b for k in engine.handover.kept())
