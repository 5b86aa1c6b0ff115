"""The Python side of the tick engine: it owns every array the native side touches.

Python hands things over only through rings, the program hand-over
(:mod:`runtimes.realtime.handover`) and request fields published with
release/acquire ordering, each with one writer (see :mod:`.slots`).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from compiler_bridge.abi import frames_per_tick, new_context, new_events, prefault, release_fence

from ..base import wait_until
from ..realtime.controls import ControlRing
from ..realtime.handover import Handover, Offer, ProgramRecord
from ..realtime.ring import Ring
from ..realtime.timing import histogram_percentiles
from . import cycle
from .inputs import control_table
from .slots import (CLOCK_WINDOW, EXT_RUNNING, HIST_FRAMES, MESSAGE_DTYPE, QUEUE_CAPACITY, SLOTS_DTYPE, STOPPED,
                    WANT_RUN, WANT_STOP)


class TickEngine:
    """Slots, buffers, rings and program records of the tick engine, kept alive for as
    long as native code may run on them.

    *sample_rate* is the JACK server's, or a nominal 48 kHz on the ticked
    path (frames then only give the kernels ``block_frames`` and ``frame_time``).
    """

    def __init__(self, settings: dict[str, Any], sample_rate: float, tempo_bpm: float,
                 beat_origin: float = 0.0) -> None:
        self.slots = np.zeros(1, SLOTS_DTYPE)
        self.ctx = new_context(sample_rate=sample_rate, ppqn=settings["ppqn"])
        self.events = new_events(settings["channel"] - 1)
        self.notes = np.zeros(16 * 128, np.uint8)
        self.hist = np.zeros(HIST_FRAMES, np.int64)
        self.scratch = np.zeros(8, np.int64)  # 8 bytes to write from, then a jack_midi_event_t
        self.queue = np.zeros((QUEUE_CAPACITY, 4), np.int32)
        self.clock_window = np.zeros(CLOCK_WINDOW, np.float64)
        self.controls = ControlRing()  # state writes from the host (and OSC)
        self.outbox = Ring(MESSAGE_DTYPE, 256)  # MidiRuntime.send()
        self.inbox = Ring(MESSAGE_DTYPE, 1024)  # MIDI input arriving on a Python thread (rtmidi)
        self.handover = Handover(self.slots)
        self.settings = dict(settings)
        self._lock = threading.Lock()  # one writer at a time of each request field
        prefault(self.slots, self.ctx, self.events, self.notes, self.hist, self.scratch, self.queue,
                 self.clock_window)
        s = self.slots
        for name, array in (("ctx", self.ctx), ("events", self.events), ("notes", self.notes), ("hist", self.hist),
                            ("scratch", self.scratch), ("queue", self.queue), ("clk_window", self.clock_window)):
            s[name] = array.ctypes.data
        for name, r in (("controls", self.controls), ("outbox", self.outbox), ("inbox", self.inbox)):
            prefault(r.header, r.records)
            s[name] = (r.header.ctypes.data, r.records.ctypes.data, r.capacity)
        s["sample_rate"] = sample_rate
        s["ppqn"] = settings["ppqn"]
        s["clock_div"] = settings["ppqn"] // 24
        s["last_note_in"] = -1
        s["beat_origin"] = beat_origin
        s["follow"] = int(settings.get("clock_source") == "midi")
        s["link_quantum"] = 4.0
        self.apply_settings(settings)
        s["tempo_bpm"] = s["pending_bpm"] = tempo_bpm
        s["frames_per_tick"] = frames_per_tick(sample_rate, tempo_bpm, settings["ppqn"])

    @property
    def address(self) -> int:
        return self.slots.ctypes.data

    @property
    def callback(self) -> tuple[int, int]:
        """The JACK process callback that plays this engine, and its argument."""
        return cycle.process.address, self.address

    def attach(self, register) -> dict[str, list[int]]:
        """Ports beside the MIDI ones (none here; see :class:`runtimes.joint.engine.JointEngine`)."""
        return {}

    def get(self, name: str):
        return self.slots[name][0]

    # --- Python's requests (each field has this one writer) ---

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Clock, transport and channel settings (read at the next tick) and the input map."""
        with self._lock:
            s = self.slots
            s["send_clock"] = int(settings["send_clock"])
            s["send_transport"] = int(settings["send_transport"])
            if s["channel"][0] != settings["channel"] - 1:
                s["release_seq"] += 1  # notes on the old channel would never get their NoteOff
            s["channel"] = settings["channel"] - 1
            self.settings = dict(settings)
            for record in self.handover.sources():
                self._set_controls(record)

    def _set_controls(self, record: ProgramRecord) -> None:
        """Point *record* at the input map of the settings now (when it changed)."""
        table = control_table(record.layout, self.settings)
        if not np.array_equal(table, record.tables.get("controls")):
            record.point_to("controls", table)

    def set_tempo(self, tempo_bpm: float) -> None:
        """Hand a tempo to the native side; it applies it at the next tick."""
        with self._lock:
            if tempo_bpm == self.slots["pending_bpm"][0]:
                return
            self.slots["pending_bpm"] = tempo_bpm
            release_fence()
            self.slots["tempo_seq"] += 1

    def want(self, run_want: int) -> None:
        """Ask the native side to idle, run or stop (``WANT_*``); it moves ``run_state`` there."""
        self.slots["run_want"] = run_want

    def stop(self, timeout_s: float, lost=lambda: False) -> bool:
        """Ask for the end (every sounding note ended, Stop sent) and wait up to *timeout_s*
        for it; False when it did not come. An engine never asked to run has nothing to end."""
        if self.get("run_want") != WANT_RUN:
            return True
        self.want(WANT_STOP)
        return wait_until(lambda: self.get("run_state") == STOPPED or lost(), timeout_s)

    def locate(self, tick: int) -> None:
        """Continue from *tick* at the next tick (Stop, Song Position, Continue go out)."""
        with self._lock:
            self.slots["jump_to"] = tick
            release_fence()
            self.slots["jump_seq"] += 1

    def jump_pending(self) -> bool:
        return self.get("jump_seq") != self.get("jump_ack")

    def release_notes(self) -> None:
        """End the sounding notes at the next tick."""
        with self._lock:
            self.slots["release_seq"] += 1

    # --- programs ---

    def first(self, offer: Offer) -> None:
        """The program played from the first tick (before the native side runs)."""
        self.handover.first(offer, self._set_controls)

    def request(self, offer: Offer) -> int:
        """Hand *offer* over; the native side takes it at the first tick it may (its beat or bar)."""
        seq = self.handover.post(offer, self._set_controls).seq
        self.handover.release()
        return seq

    def swap(self, offer: Offer, timeout_s: float) -> bool:
        """Hand *offer* over and wait up to *timeout_s* for the next tick: it takes it there, or
        (on its beat or bar) has seen it there and takes it then, without anyone waiting."""
        seq = self.request(offer)
        return wait_until(lambda: self.handover.answered(seq, offer.every_beats), timeout_s)

    def playing(self) -> tuple[Any, np.ndarray]:
        """The program the native side plays (its owner) and a copy of its state."""
        record = self.handover.playing()
        return record.owner, record.state.copy()

    def state(self) -> np.ndarray:
        return self.playing()[1]

    def stats(self) -> dict[str, Any]:
        g = self.get
        return {"notes_on": int(g("notes_on")), "events_out": int(g("events_out")),
                "events_in": int(g("events_in")), "swaps": int(g("swaps")), "clock_jumps": int(g("clock_jumps")),
                "kernel_errors": int(g("kernel_errors")), "dropped": int(g("dropped")),
                "writes_applied": int(g("writes_applied")), "writes_dropped": int(g("writes_dropped")),
                "carry_misses": int(g("carry_misses"))}

    # --- timelines (the JACK path) ---

    def start_on_beat(self, beat: float, tempo_bpm: float, beat_now: float, time_us: float) -> None:
        """Before the start: tick 0 at the frame where the transport (*beat_now* at *time_us* on
        JACK's clock, at *tempo_bpm*) reaches *beat* (JACK path, not on a Link session)."""
        self.set_link_timeline(tempo_bpm, beat_now, time_us)
        self.slots["start_beat"] = beat
        release_fence()
        self.slots["start_on"] = 1

    def set_link_timeline(self, tempo_bpm: float, beat: float, time_us: float) -> None:
        """Publish a timeline (*beat* at *time_us* on JACK's clock) to the native side."""
        with self._lock:
            s = self.slots
            seq = int(s["link_seq"][0])
            s["link_seq"] = seq + 1  # odd: being written
            release_fence()
            s["link_tempo"], s["link_beat"], s["link_time_us"] = tempo_bpm, beat, time_us
            release_fence()
            s["link_seq"] = seq + 2

    # --- what the host reads ---

    def liveness(self) -> tuple[int, bool, bool]:
        """Calls of the native side that returned, whether one is under way, and whether a kernel runs."""
        g = self.get
        returned = int(g("returned"))
        return returned, int(g("entered")) != returned, bool(g("in_kernel"))

    def clock_in(self) -> dict[str, Any]:
        """The outside clock followed: its tempo, bytes received, whether it is lost now."""
        g = self.get
        return {"tempo_bpm": round(float(g("tempo_bpm")), 3), "clocks": int(g("clocks_in")),
                "playing": int(g("ext")) == EXT_RUNNING, "lost": bool(g("clk_lost")),
                "losses": int(g("clock_losses"))}

    def frame_stats(self) -> dict[str, Any]:
        """Tick lateness on the frame timeline (JACK path), in microseconds."""
        us = 1e6 / float(self.get("sample_rate"))
        p50, p99 = histogram_percentiles(self.hist, (0.5, 0.99))
        return {"ticks": int(self.get("ticks")), "late_ticks": int(self.get("late_ticks")),
                "jitter_p50_us": round(p50 * us, 3), "jitter_p99_us": round(p99 * us, 3),
                "jitter_max_us": round(int(self.get("max_late_frames")) * us, 3),
                "drift_us": round(float(self.get("drift_frames")) * us, 3)}

    # --- the ticked path ---

    def step(self) -> list[tuple[int, int, int]]:
        """Run one tick (:data:`.cycle.step`) and return its messages as byte tuples, each of its own length."""
        _STEP(self.address)  # through ctypes: the GIL is let go during the native call
        rows = self.queue[: int(self.get("queued"))]
        return [tuple(int(b) for b in row[: row[3]]) for row in rows]


_STEP = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)(cycle.step.address)
