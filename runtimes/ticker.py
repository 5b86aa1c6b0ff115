"""A drift-free tick loop: tick n runs at ``transport.time_at(n / ppqn)``.

Every deadline is computed from the transport's anchor, never by sleeping a
period, so errors do not accumulate; a tempo change re-anchors the transport
and takes effect at the next tick without a jump in phase. Used by the logic
runtime and by the MIDI runtime's non-JACK path.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import numpy as np

from .clock import Clock, Transport

log = logging.getLogger("livehost.runtimes")

OnTick = Callable[[int, int], None]  # on_tick(tick index, deadline_ns)


class TickLoop:
    """Call *on_tick* from one thread at each tick's absolute deadline.

    Parameters
    ----------
    transport : Transport
        Tempo and beat timeline; tick n is at beat ``first_beat + n / ppqn``.
    clock : Clock
        Gives time and sleeps to deadlines (virtual in tests).
    ppqn : int
        Ticks per quarter note.
    late_us : float
        A tick that starts more than this after its deadline counts as late.
    """

    def __init__(self, transport: Transport, clock: Clock, ppqn: int, on_tick: OnTick, *,
                 name: str = "livehost-ticks", late_us: float = 1000.0, history: int = 4096) -> None:
        self.transport = transport
        self.clock = clock
        self.ppqn = ppqn
        self.on_tick = on_tick
        self.late_ns = int(late_us * 1000)
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._jitter_ns = np.zeros(history, np.int64)  # ring of recent lateness
        self.ticks = 0
        self.late_ticks = 0
        self.max_jitter_ns = 0
        self.last_error_ns = 0
        self.errors = 0
        self.first_beat = 0.0

    def start(self, first_beat: float | None = None) -> None:
        """Start ticking at *first_beat* (default: the next tick after now)."""
        if first_beat is None:
            now_beat = self.transport.beat_at(self.clock.now_ns())
            first_beat = np.ceil(now_beat * self.ppqn) / self.ppqn
        self.first_beat = float(first_beat)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def deadline_ns(self, n: int) -> int:
        return self.transport.time_at(self.first_beat + n / self.ppqn)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            deadline = self.deadline_ns(n)
            self.clock.sleep_until_ns(deadline)
            if self._stop.is_set():
                break
            started = self.clock.now_ns()
            self._record(n, started - deadline)
            try:
                self.on_tick(n, deadline)
            except Exception:  # a failing tick must not stop the clock
                self.errors += 1
                log.exception("tick %d failed", n)
            n += 1

    def _record(self, n: int, lateness_ns: int) -> None:
        self._jitter_ns[n % self._jitter_ns.size] = lateness_ns
        self.ticks = n + 1
        self.last_error_ns = lateness_ns
        self.max_jitter_ns = max(self.max_jitter_ns, abs(lateness_ns))
        if lateness_ns > self.late_ns:
            self.late_ticks += 1

    def stats(self) -> dict[str, float | int]:
        """Counters; jitter is start time minus deadline over recent ticks (us).

        ``drift_us`` is the last tick's offset from its ideal time: with
        absolute deadlines it stays at the jitter level instead of growing.
        """
        recent = np.abs(self._jitter_ns[: min(self.ticks, self._jitter_ns.size)])
        p50, p99 = (np.percentile(recent, [50, 99]) / 1e3) if recent.size else (0.0, 0.0)
        return {
            "ticks": self.ticks,
            "late_ticks": self.late_ticks,
            "jitter_p50_us": round(float(p50), 3),
            "jitter_p99_us": round(float(p99), 3),
            "jitter_max_us": round(self.max_jitter_ns / 1e3, 3),
            "drift_us": round(self.last_error_ns / 1e3, 3),
            "tick_errors": self.errors,
        }
