"""The default runtime: runs the MIDI/control kernel on a drift-free clock,
with no device. Its events are kept (a bounded log) instead of sent, and
its stats report timer drift and precision.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np

from compiler_bridge.abi import EVENT_HEADER_CHANNEL
from compiler_bridge.program import Program

from .base import BaseRuntime
from .caller import KernelCall
from .notes import SoundingNotes
from .ticker import TickLoop


class LogicRuntime(BaseRuntime):
    """Registry id ``logic``: the 8f4e-style default, safe on any machine."""

    id = "logic"

    def __init__(self, settings: dict[str, Any], **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.events: collections.deque = collections.deque(maxlen=8192)  # (tick, status, data1, data2)
        self.notes = SoundingNotes()
        self.events_out = 0
        self._call: KernelCall | None = None
        self._state: np.ndarray | None = None
        self._tick_lock = threading.Lock()
        self._loop = TickLoop(self.transport, self.clock, settings["ppqn"], self._on_tick, name="livehost-logic")

    def _open(self, program: Program, state: np.ndarray) -> None:
        self._state = state
        if program.has("midi"):
            self._call = KernelCall(program, "midi", state, ppqn=self.settings["ppqn"],
                                    channel=self.settings["channel"] - 1)
        self._loop.start()

    def _on_tick(self, n: int, deadline_ns: int) -> None:
        with self._tick_lock:
            if self._call is None:
                return
            beat = self._loop.first_beat + n / self._loop.ppqn
            for ev in self._call.tick(n, beat=beat, tempo_bpm=self.transport.tempo_bpm):
                self._emit(n, ev)

    def _emit(self, tick: int, ev: tuple[int, int, int]) -> None:
        self.notes.feed(*ev)
        self.events.append((tick, *ev))
        self.events_out += 1

    def _load(self, program: Program) -> None:
        with self._tick_lock:
            if self._call is not None and program.has("midi"):
                self._call.swap(program)
            elif program.has("midi"):
                state = program.layout.carry(self.program.layout, self._current_state())
                self._call = KernelCall(program, "midi", state, ppqn=self.settings["ppqn"],
                                        channel=self.settings["channel"] - 1)
            else:
                self._state = program.layout.carry(self.program.layout, self._current_state())
                self._call = None

    def _update_settings(self, settings: dict[str, Any]) -> None:
        with self._tick_lock:
            if self._call is not None:
                self._call.ctx["channel"] = settings["channel"] - 1
                self._call.events[0, EVENT_HEADER_CHANNEL] = settings["channel"] - 1

    def _current_state(self) -> np.ndarray:
        return self._call.state if self._call is not None else self._state

    def _snapshot(self) -> np.ndarray:
        with self._tick_lock:
            return self._current_state().copy()

    def _stats(self) -> dict[str, Any]:
        call = self._call
        return {**self._loop.stats(), "events_out": self.events_out, "notes_on": len(self.notes),
                "swaps": call.swaps if call else 0, "kernel_errors": call.kernel_errors if call else 0}

    def _close(self) -> None:
        self._loop.stop()
        with self._tick_lock:
            for ev in self.notes.release():
                self._emit(self._loop.ticks, ev)
