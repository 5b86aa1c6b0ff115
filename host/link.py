"""Ableton Link: join a session, follow its tempo and phase, lead its tempo.

``link = true`` in ``livehost.toml`` (the ``link`` extra: ``pip install
'livehost[link]'``, LinkPython-extern, a synchronous binding of Link's C++
API; nothing of it is imported otherwise). A thread of the host reads the
session's timeline every :data:`POLL_S` and, when it changed, hands it to
the playing runtime: the JACK MIDI engine places every tick on it in its
process callback (``jack_frames_to_time`` gives each cycle's time on the
same clock as Link's, CLOCK_MONOTONIC_RAW on Linux), the audio engine
computes each block's beat from it at the block's own time. So the poll
only carries tempo and phase changes; timing is the engines'.

LinkPython-extern rather than aalink: it is synchronous (no asyncio loop to
run beside the engines, no 1 ms polling thread of its own), and gives the
timeline itself (``beatAtTime``, ``timeAtBeat``), which is what the engines
need. The Link library inside both is GPLv2+; the extra stays optional.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("livehost.link")

POLL_S = 0.005
REPUBLISH_BEATS = 1e-5  # a timeline that moved by more than this (or a new tempo) is handed on
REPUBLISH_S = 0.5  # and at least this often, whatever happened meanwhile


class LinkUnavailable(RuntimeError):
    pass


class LinkSync:
    """A Link peer; *publish(tempo, beat, time_us, mono_ns, quantum)* is called with the
    session's timeline when it changes (see :meth:`runtimes.base.BaseRuntime.follow_link`)."""

    def __init__(self, publish, tempo_bpm: float, quantum: float) -> None:
        try:
            from link import Link
        except ImportError:
            raise LinkUnavailable("link = true needs Ableton Link: pip install 'livehost[link]'") from None
        self.publish, self.quantum = publish, float(quantum)
        self.link = Link(float(tempo_bpm))
        self.link.enabled = True
        self._last: tuple[float, float, float] | None = None  # tempo, beat, time_us handed on last
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livehost-link", daemon=True)
        self._thread.start()
        log.info("Ableton Link on: quantum %g, %d peer(s)", self.quantum, self.link.numPeers())

    def timeline(self) -> tuple[float, float, float, int]:
        """``(tempo, beat, time_us, mono_ns)``: the session's beat now, on Link's clock and on
        ``time.monotonic_ns``'s (read together)."""
        state = self.link.captureAppSessionState()
        mono_ns = time.monotonic_ns()
        time_us = self.link.clock().micros()
        mono_ns = (mono_ns + time.monotonic_ns()) // 2
        return state.tempo(), state.beatAtTime(time_us, self.quantum), float(time_us), mono_ns

    def publish_now(self) -> None:
        """Hand the timeline on now (a runtime was just created)."""
        tempo, beat, time_us, mono_ns = self.timeline()
        self._last = (tempo, beat, time_us)
        self.publish(tempo, beat, time_us, mono_ns, self.quantum)

    def set_tempo(self, tempo_bpm: float) -> None:
        """Lead: the session (every peer) takes this tempo now."""
        state = self.link.captureAppSessionState()
        state.setTempo(float(tempo_bpm), self.link.clock().micros())
        self.link.commitAppSessionState(state)

    @property
    def peers(self) -> int:
        return self.link.numPeers()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.link.enabled = False

    def _run(self) -> None:
        peers = -1
        while not self._stop.wait(POLL_S):
            try:
                tempo, beat, time_us, mono_ns = self.timeline()
                last = self._last
                moved = last is None or tempo != last[0] or time_us - last[2] > REPUBLISH_S * 1e6 or abs(
                    last[1] + (time_us - last[2]) * last[0] / 60e6 - beat) > REPUBLISH_BEATS
                if moved:
                    self._last = (tempo, beat, time_us)
                    self.publish(tempo, beat, time_us, mono_ns, self.quantum)
                if self.link.numPeers() != peers:
                    peers = self.link.numPeers()
                    log.info("Ableton Link: %d peer(s), %.2f BPM", peers, tempo)
            except Exception:  # following must go on whatever one pass does
                log.exception("Ableton Link: could not follow the session")
