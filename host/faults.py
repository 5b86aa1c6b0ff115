"""What the host tells of the playing runtime as it happens: watchdog actions, fault
counters that start to grow, and a swap that waited for its beat or bar taking over.

The host's monitor thread calls :meth:`Reports.poll` every FAULT_POLL_S; it
reads the runtime's counters and never waits for the runtime.
"""

from __future__ import annotations

import logging
import time
import weakref

from compiler_bridge.program import Program

log = logging.getLogger("livehost.host")

FAULT_POLL_S = 0.1  # how often the engine's watchdog is asked what it did
COUNTS_POLL_S = 0.5  # how often the engine's fault counters are read
COUNTS_LOG_EVERY_S = 5.0  # a counter that keeps growing is logged again at most this often
# Engine counters logged when they grow while playing, with what each means.
FAULT_COUNTERS = (("nan_blocks", "blocks with NaN/inf output (played as silence)"),
                  ("overruns", "blocks whose callback took longer than the block (our own fault: too slow)"),
                  ("xruns", "xruns (late or flagged callbacks)"),
                  ("clipped_samples", "samples clipped at full scale"),
                  ("late_ticks", "MIDI ticks written late"),
                  ("kernel_errors", "kernel exceptions (the kernel is muted until the next save)"),
                  ("in_overflow", "MIDI input events over max_events_in in their cycle (not played)"),
                  ("in_bad", "MIDI input events with no status byte, SysEx or over 3 bytes (skipped)"),
                  ("carry_misses", "swaps whose state could not be carried (the new program started from its "
                                   "defaults)"))


class Reports:
    """One poll at a time, from the host's monitor thread."""

    def __init__(self) -> None:
        self.awaited: Program | None = None  # swapped in, waiting for its beat or bar
        self._counts = _Counts()
        self._polls = 0

    def poll(self, runtime) -> None:
        self._polls += 1
        try:
            awaited = self.awaited
            if awaited is not None and runtime is not None and runtime.playing_program() is awaited:
                self.awaited = None
                log.info("Program %s took over", awaited.source_hash)
            for line in runtime.new_faults() if runtime is not None else ():
                log.error("%s", line)
            if runtime is not None and self._polls % round(COUNTS_POLL_S / FAULT_POLL_S) == 0:
                for line in self._counts.news(runtime, time.monotonic()):
                    log.warning("%s", line)
        except Exception:  # reporting must never stop the host
            log.exception("Could not read the engine's faults")


class _Counts:
    """Which fault counters grew since they were last read, as log lines; a
    counter that keeps growing is told again at most every COUNTS_LOG_EVERY_S."""

    def __init__(self) -> None:
        self.runtime = lambda: None  # a weak reference: a destroyed runtime is not kept alive here
        self.seen: dict[str, int] = {}
        self.told: dict[str, tuple[float, int]] = {}  # counter -> (when, value) last logged

    def news(self, runtime, now_s: float) -> list[str]:
        stats = runtime.stats()
        if runtime is not self.runtime():  # a new runtime counts from 0
            self.runtime, self.seen, self.told = weakref.ref(runtime), {}, {}
        lines = []
        for key, what in FAULT_COUNTERS:
            value = int(stats.get(key, 0))
            if value <= self.seen.get(key, 0):
                continue
            self.seen[key] = value
            when, logged = self.told.get(key, (-COUNTS_LOG_EVERY_S, 0))
            if now_s - when >= COUNTS_LOG_EVERY_S:
                lines.append(f"{runtime.id}: {value - logged} {what} (total {value})")
                self.told[key] = (now_s, value)
        return lines
