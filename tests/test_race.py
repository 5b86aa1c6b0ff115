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
from runtimes.base import offer, wait_until
from runtimes.ticks.engine import TickEngine
from runtimes.ticks.slots import WANT_RUN

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


class AudioSide:
    """The audio engine, its callback called in a loop as PortAudio would."""

    def __init__(self, program: Program) -> None:
        self.engine = NativeEngine(48000.0, 0, 1, max_frames=64, crossfade_ms=0.0)
        self.controls = self.engine.controls
        self.engine.request_swap(offer(program))
        out = np.zeros((64, 1), np.float32)
        self.running = Running(lambda: _CALLBACK(None, out.ctypes.data, 64, None, 0, self.engine.address))

    def swap(self, new: Program, old: Program, while_pending=lambda: None) -> np.ndarray:
        state = new.new_state()
        seq = self.engine.request_swap(offer(new, state))
        while_pending()  # the callback takes the swap somewhere in here
        while not self.engine.acked("swap", seq):
            pass
        self.engine.release_finished()
        return state


MIDI_SETTINGS = {"ppqn": 24, "channel": 1, "send_clock": False, "send_transport": False}


class MidiSide:
    """The tick engine, stepped in a loop as a clock thread would."""

    def __init__(self, program: Program) -> None:
        self.engine = TickEngine(MIDI_SETTINGS, 48000.0, 120.0)
        self.controls = self.engine.controls
        self.engine.first(offer(program))
        self.engine.want(WANT_RUN)
        self.running = Running(self.engine.step)

    def swap(self, new: Program, old: Program, while_pending=lambda: None) -> np.ndarray:
        racer = threading.Thread(target=while_pending)
        racer.start()  # racing the swap, which waits for the next tick
        state = new.new_state()
        seq = self.engine.request(offer(new, state))
        assert wait_until(lambda: self.engine.handover.taken(seq), 5.0)
        racer.join()
        return state


SIDES = {"audio": AudioSide, "midi": MidiSide}


@pytest.mark.parametrize("side", SIDES)
@settings(max_examples=40, deadline=None)
@given(before=st.integers(0, 40), during=st.integers(0, 40))
def test_writes_for_a_removed_field_never_land_in_another(layouts, side, before, during):
    a, b = layouts
    engine = SIDES[side](a)

    def push_stale(n: int) -> None:
        for _ in range(n):
            engine.controls.push(*a.layout.target("cutoff"), STALE)

    try:
        for _ in range(5):
            push_stale(before)
            state = engine.swap(b, a, lambda: push_stale(during))
            while engine.controls.pending():
                pass
            assert state["level"][0] == LEVEL
            engine.swap(a, b)
        stats = engine.engine.stats()
        assert stats["writes_applied"] + stats["writes_dropped"] == 5 * (before + during)
    finally:
        engine.running.close()


@pytest.mark.parametrize("side", SIDES)
def test_the_check_can_fail_a_write_to_the_new_layout_does_change_level(layouts, side):
    a, b = layouts
    engine = SIDES[side](a)
    try:
        state = engine.swap(b, a)
        engine.controls.push(*b.layout.target("level"), STALE)
        while engine.controls.pending():
            pass
        assert state["level"][0] == STALE
    finally:
        engine.running.close()
