"""Clocks (injected: real live, virtual in tests) and the one Transport.

All times are integer nanoseconds on the clock's own monotonic timeline.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...
    def sleep_until_ns(self, deadline_ns: int) -> None: ...


class SystemClock:
    """``time.monotonic_ns``; sleeps to a little before the deadline, then spins.

    *spin_ns* is how early it wakes: the OS wakes threads late by tens to
    hundreds of microseconds, so the last stretch is a busy wait.
    """

    def __init__(self, spin_ns: int = 1_000_000) -> None:
        self.spin_ns = spin_ns

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until_ns(self, deadline_ns: int) -> None:
        remaining = deadline_ns - time.monotonic_ns()
        if remaining > self.spin_ns:
            time.sleep((remaining - self.spin_ns) / 1e9)
        while time.monotonic_ns() < deadline_ns:
            pass


class VirtualClock:
    """A clock that only moves when slept on or advanced: exact, instant tests."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._cond = threading.Condition()

    def now_ns(self) -> int:
        return self._now

    def sleep_until_ns(self, deadline_ns: int) -> None:
        with self._cond:
            if deadline_ns > self._now:
                self._now = deadline_ns


class Transport:
    """Tempo and beat position shared by every runtime of one host.

    A tempo change re-anchors the timeline at the change time so the beat
    position is continuous: no jump in phase.
    """

    def __init__(self, tempo_bpm: float, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._tempo_bpm = float(tempo_bpm)
        self._anchor_ns = self.clock.now_ns()
        self._anchor_beat = 0.0

    @property
    def tempo_bpm(self) -> float:
        return self._tempo_bpm

    def beat_at(self, t_ns: int) -> float:
        with self._lock:
            return self._anchor_beat + (t_ns - self._anchor_ns) * self._tempo_bpm / 60e9

    def time_at(self, beat: float) -> int:
        with self._lock:
            return self._anchor_ns + round((beat - self._anchor_beat) * 60e9 / self._tempo_bpm)

    def align(self, tempo_bpm: float, beat: float, at_ns: int) -> None:
        """Put *beat* at *at_ns*, at *tempo_bpm* (an outside timeline leads: Ableton Link)."""
        with self._lock:
            self._anchor_ns, self._anchor_beat, self._tempo_bpm = at_ns, float(beat), float(tempo_bpm)

    def set_tempo(self, tempo_bpm: float, at_ns: int | None = None) -> None:
        at = self.clock.now_ns() if at_ns is None else at_ns
        beat = self.beat_at(at)
        with self._lock:
            self._anchor_ns, self._anchor_beat, self._tempo_bpm = at, beat, float(tempo_bpm)
