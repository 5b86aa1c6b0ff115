"""The default runtime: runs the MIDI/control kernel on a drift-free clock,
with no device. It is the tick engine of the ``midi`` runtime on a clock
thread; its messages are kept (a bounded log) instead of sent, and its stats
report timer drift and precision.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from compiler_bridge.program import Program

from .base import BaseRuntime, carried_to, offer
from .midi.ticked import NOMINAL_SAMPLE_RATE, TickedEngine
from .ticks.engine import TickEngine

SEEN_TIMEOUT_S = 2.0  # a clock thread that does not step for this long is not running


def _engine_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {**settings, "send_clock": False, "send_transport": False}


class LogicRuntime(BaseRuntime):
    """Registry id ``logic``: the 8f4e-style default, safe on any machine."""

    id = "logic"

    def __init__(self, settings: dict[str, Any], **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.events: collections.deque = collections.deque(maxlen=8192)  # (tick, status, data1, data2)
        self.events_out = 0
        self.engine: TickEngine | None = None
        self._ticked: TickedEngine | None = None

    def _open(self, program: Program, state: np.ndarray) -> None:
        settings = _engine_settings(self.settings)
        self.engine = TickEngine(settings, NOMINAL_SAMPLE_RATE, self.transport.tempo_bpm)
        self.engine.first(offer(program, state))
        self._ticked = TickedEngine(self.engine, self.transport, self.clock, self._record, name="livehost-logic")
        self._ticked.start(self.start_at_beat)

    def _record(self, tick: int, messages: list[tuple[int, ...]]) -> None:
        for data in messages:
            self.events.append((tick, *data, *(0,) * (3 - len(data))))
        self.events_out += len(messages)

    def _load(self, program: Program) -> None:
        self.engine.swap(offer(program), SEEN_TIMEOUT_S)  # (on its beat or bar: taken later)

    def _update_settings(self, settings: dict[str, Any]) -> None:
        self.engine.apply_settings(_engine_settings(settings))

    def _snapshot(self) -> np.ndarray:
        return carried_to(self.program, *self.engine.playing())

    def _playing_program(self) -> Program | None:
        return self.engine.playing()[0] if self.engine is not None else self.program

    def liveness(self) -> tuple[int, bool, bool] | None:
        return self.engine.liveness() if self.engine is not None else None

    def _stats(self) -> dict[str, Any]:
        if self._ticked is None:
            return {}
        engine = self.engine.stats()
        return {**self._ticked.stats(), "events_out": self.events_out, "notes_on": engine["notes_on"],
                "swaps": engine["swaps"], "kernel_errors": engine["kernel_errors"],
                "carry_misses": engine["carry_misses"]}

    def _controls(self):
        return self.engine.controls if self.engine is not None else None

    def _close(self) -> None:
        self._ticked.stop()
