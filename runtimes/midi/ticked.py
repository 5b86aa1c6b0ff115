"""The tick engine driven by a clock thread instead of a JACK cycle.

A :class:`TickLoop` thread wakes at each tick's absolute deadline and runs
the native :data:`engine.step`; the tick's messages go to a *sink* (a MIDI
port for the ``midi`` runtime over python-rtmidi, an event log for the
``logic`` runtime). Closing runs one last step that ends every sounding note.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ..clock import Clock, Transport
from ..ticker import TickLoop
from ..ticks.engine import TickEngine
from ..ticks.slots import WANT_RUN

Sink = Callable[[int, list[tuple[int, ...]]], None]  # sink(tick index, messages as byte tuples)

NOMINAL_SAMPLE_RATE = 48000.0  # Hz: frames only give the kernels block_frames and frame_time here


class TickedEngine:
    """A :class:`TickEngine` stepped once per tick by a clock thread.

    Tick 0 is the next tick of the *transport* after :meth:`start`; the
    kernels' ``ctx.beat`` continues the transport's beat from there.
    """

    def __init__(self, engine: TickEngine, transport: Transport, clock: Clock, sink: Sink, *, name: str) -> None:
        self.engine = engine
        self.transport = transport
        self.clock = clock
        self.sink = sink
        self.ppqn = int(engine.get("ppqn"))
        self.loop = TickLoop(transport, clock, self.ppqn, self._on_tick, name=name)

    def start(self, at_beat: float | None = None) -> None:
        """Tick 0 at the transport's next tick, or at *at_beat* when that is later."""
        first_beat = math.ceil(self.transport.beat_at(self.clock.now_ns()) * self.ppqn) / self.ppqn
        if at_beat is not None:
            first_beat = max(first_beat, float(at_beat))
        self.engine.slots["beat_origin"] = first_beat
        self.engine.want(WANT_RUN)
        self.loop.start(first_beat)

    def _on_tick(self, n: int, deadline_ns: int) -> None:
        self.engine.set_tempo(self.transport.tempo_bpm)
        self.sink(n, self.engine.step())

    def stop(self) -> None:
        """Stop the clock thread, then end every sounding note (and send Stop)."""
        self.loop.stop()
        if self.engine.get("run_want") == WANT_RUN:
            self.engine.stop(timeout_s=0.0)  # (asked for here, done by the last step)
            self.sink(self.loop.ticks, self.engine.step())

    def stats(self) -> dict[str, Any]:
        return self.loop.stats()
