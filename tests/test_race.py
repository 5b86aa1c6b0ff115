"""State writes racing a swap to another layout land where they were meant, or nowhere.

A write addressed to a field of the playing layout (``cutoff``), pushed just
before or during a swap to a layout without that field, must never change
another field (``level``, which the new layout keeps at ``cutoff``'s old byte
offset). The engines run on threads of their own here, as they do live (the
audio callback called in a loop like PortAudio would, the tick engine stepped
like a clock thread would), while this thread pushes and swaps.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler_bridge.compile import compile_project
from compiler_bridge.program import Program
from runtimes.audio.engine import NativeEngine, audio_callback
from runtimes.midi.engine import STARTING, MidiEngine

WITH_CUTOFF = '''
class State:
    cutoff = 0.0
    level = 0.5


def audio(s, ctx, inp, out):
    for i in range(out.shape[0]):
        out[i, 0] = s.level


def midi(s, ctx, ev):
    s.level = s.level
'''
WITHOUT_CUTOFF = WITH_CUTOFF.replace("    cutoff = 0.0\n", "")
LEVEL = 0.5
STALE = 0.9  # what the stale writes carry


def _program(root, name: str, patch: str) -> Program:
    project = root / name
    project.mkdir()
    (project / "livehost.toml").write_text('[[runtime_settings]]\nruntime = "audio"\n')
    (project / "patch.py").write_text(patch)
    return Program.from_compiled(compile_project(project))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("race")
    a, b = _program(root, "a", WITH_CUTOFF), _program(root, "b", WITHOUT_CUTOFF)
    # the point of the test: b's level sits where a's cutoff was
    assert a.layout.offset_of("cutoff")[0] == b.layout.offset_of("level")[0]
    return a, b


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong,
                             ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p)(audio_callback.address)


class Running:
    """Call *step* on a thread of its own until closed (the GIL is let go in native code)."""

    def __init__(self, step) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(step,), name="race-engine")
        self._thread.start()

    def _run(self, step) -> None:
        while not self._stop.is_set():
            step()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _audio_engine(program: Program):
    engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
    engine.request_swap(program, program.new_state(), np.zeros((0, 3), np.int64))
    out = np.zeros((64, 1), np.float32)
    return engine, Running(lambda: _CALLBACK(None, out.ctypes.data, 64, None, 0, engine.address))


def _audio_swap(engine: NativeEngine, new: Program, old: Program) -> np.ndarray:
    state = new.new_state()
    seq = engine.request_swap(new, state, new.layout.carry_table(old.layout))
    while not engine.acked("swap", seq):
        pass
    engine.release_finished()
    return state


@settings(max_examples=40, deadline=None)
@given(before=st.integers(0, 40), during=st.integers(0, 40))
def test_audio_writes_for_a_removed_field_never_land_in_another(layouts, before, during):
    a, b = layouts
    engine, running = _audio_engine(a)
    try:
        for _ in range(5):
            for _ in range(before):
                engine.controls.push(*a.layout.target("cutoff"), STALE)
            state = b.new_state()
            seq = engine.request_swap(b, state, b.layout.carry_table(a.layout))
            for _ in range(during):  # the callback takes the swap somewhere in here
                engine.controls.push(*a.layout.target("cutoff"), STALE)
            while not engine.acked("swap", seq):
                pass
            while engine.controls.pending():
                pass
            assert state["level"][0] == LEVEL
            _audio_swap(engine, a, b)
        stats = engine.stats()
        assert stats["writes_applied"] + stats["writes_dropped"] == 5 * (before + during)
    finally:
        running.close()


def test_audio_check_can_fail_a_write_to_the_new_layout_does_change_level(layouts):
    a, b = layouts
    engine, running = _audio_engine(a)
    try:
        state = _audio_swap(engine, b, a)
        engine.controls.push(*b.layout.target("level"), STALE)
        while engine.controls.pending():
            pass
        assert state["level"][0] == STALE
    finally:
        running.close()


MIDI_SETTINGS = {"ppqn": 24, "channel": 1, "send_clock": False, "send_transport": False}


def _midi_engine(program: Program):
    engine = MidiEngine(MIDI_SETTINGS, 48000.0, 120.0)
    engine.first(program, program.new_state(), MIDI_SETTINGS)
    engine.set_run_state(STARTING)
    return engine, Running(engine.step)


@settings(max_examples=40, deadline=None)
@given(before=st.integers(0, 40), during=st.integers(0, 40))
def test_midi_writes_for_a_removed_field_never_land_in_another(layouts, before, during):
    a, b = layouts
    engine, running = _midi_engine(a)
    try:
        for _ in range(5):
            for _ in range(before):
                engine.controls.push(*a.layout.target("cutoff"), STALE)
            pusher = threading.Thread(target=lambda: [engine.controls.push(*a.layout.target("cutoff"), STALE)
                                                      for _ in range(during)])
            pusher.start()  # racing the swap below
            assert engine.swap(b, MIDI_SETTINGS, timeout_s=5.0)
            pusher.join()
            while engine.controls.pending():
                pass
            assert engine.blocks[-1].state["level"][0] == LEVEL
            assert engine.swap(a, MIDI_SETTINGS, timeout_s=5.0)
        stats = engine.stats()
        assert stats["writes_applied"] + stats["writes_dropped"] == 5 * (before + during)
    finally:
        running.close()


def test_midi_check_can_fail_a_write_to_the_new_layout_does_change_level(layouts):
    a, b = layouts
    engine, running = _midi_engine(a)
    try:
        assert engine.swap(b, MIDI_SETTINGS, timeout_s=5.0)
        engine.controls.push(*b.layout.target("level"), STALE)
        while engine.controls.pending():
            pass
        assert engine.blocks[-1].state["level"][0] == STALE
    finally:
        running.close()
