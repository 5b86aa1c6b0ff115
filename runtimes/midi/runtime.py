"""The ``midi`` runtime: MIDI clock, the patch's notes and CC out; CC and notes in.

Two paths behind one runtime, both running the same native tick engine
(:mod:`.engine`: swap, Start, clock, kernel, sounding-note table), so both
end every sounding note on close, swap away or a kernel error: NoteOff for
each, All Notes Off on every channel used, then Stop.

* :mod:`.jack` -- on a running JACK server, a JACK client of livehost's own
  whose process callback is the native engine: events at exact frame offsets.
* :mod:`.ports` -- elsewhere, mido over python-rtmidi, the engine stepped by a
  clock thread (:mod:`.ticked`).

A JACK server that goes away (or is not there yet at start-up) does not end
the runtime: it keeps its engine -- program, state, tick count -- and a
watch thread opens a new client around it when the server is back.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from typing import Any

import numpy as np

from compiler_bridge.errors import DeviceError, RuntimeInitError
from compiler_bridge.program import Program

from ..base import BaseRuntime, carried_to, offer, require_kernel
from ..recovery import Recovery
from ..ticks.engine import TickEngine
from .jack import JackPath, clock_offset_us, jack_server_running, libjack
from .ports import RETRY_S, RtmidiPath
from .ticked import NOMINAL_SAMPLE_RATE

log = logging.getLogger("livehost.runtimes")

WATCH_S = 0.05  # how often the tempo is followed and a lost server looked for
DESTINATION_WAIT_S = 2.0  # after a server came back, how long the clock waits for connect_to destinations

_OPEN: "weakref.WeakSet[MidiRuntime]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Ctrl-C or an uncaught exception in the host still ends every note."""
    for runtime in list(_OPEN):
        runtime.close()


class MidiRuntime(BaseRuntime):
    """Registry id ``midi``: MIDI clock and the patch's ``midi`` kernel on a MIDI port.

    Parameters
    ----------
    settings : dict
        The resolved ``midi`` settings (see :data:`compiler_bridge.settings.MIDI`).
    transport, clock
        The host's tempo/beat source and time source.
    """

    id = "midi"
    engine_class = TickEngine

    def __init__(self, settings: dict[str, Any], **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.path: JackPath | RtmidiPath | None = None
        self.engine: TickEngine | None = None
        self._held: tuple[Program, np.ndarray] | None = None  # what plays once there is a server
        self._lost_path: JackPath | None = None  # its client is dead; only its port bookkeeping is used
        self._start_by: float | None = None  # the opened path starts when its destinations are there, or then
        self._resume = False  # ... going on from where the engine stopped
        self._recovery = Recovery(self.id)
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self._clock_lost = False  # the MIDI clock in stopped without a Stop (clock_source = "midi")
        self._link: tuple | None = None  # the last Link timeline: (tempo, beat, time_us, quantum)

    def send(self, message) -> bool:
        """Send a ``mido.Message`` at the next tick, with that tick's clock.

        Channel messages and system common/real-time messages of up to three
        bytes; NoteOns sent here are tracked like the kernel's, so they still
        get their NoteOff on close. Returns False when the outbox is full.
        """
        data = message.bytes()
        if len(data) > 3:
            raise ValueError(f"send() takes messages of up to 3 bytes, not {message.type}")
        data = [*data, 0, 0][:3]
        with self._lock:
            if self.engine is None or self.closed:
                raise RuntimeInitError(f"{self.id}: send() on a runtime that is not running")
            return self.engine.outbox.push(*data, len(message.bytes()))

    @property
    def ports(self) -> dict[str, str]:
        """Full names of the ports this runtime opened (``output``, ``input``)."""
        return dict(self.path.ports) if self.path else {}

    def _tempo_for(self, program: Program) -> float:
        return float(self.settings["tempo_bpm"] or program.tempo_bpm)

    def _open_path(self):
        backend = self.settings["backend"]
        waiting = self._recovery.waiting  # for JACK: look for it quietly, not through rtmidi
        if self.settings.get("clock_source") == "midi":  # followed at the frame: the native JACK path only
            if backend not in ("auto", "jack", "native"):
                raise DeviceError(f'clock_source = "midi" follows on the native JACK path; backend = "{backend}" '
                                  'cannot (use "auto" or "jack")')
            return JackPath(self.settings)
        if backend in ("jack", "native"):
            return JackPath(self.settings)
        if backend == "auto":
            try:  # livehost's own client when a JACK server runs (opening it is the test: no probe client first)
                return JackPath(self.settings)
            except (OSError, DeviceError):  # no libjack, or no server
                if waiting:
                    raise DeviceError("no JACK server") from None
        elif waiting and not jack_server_running():
            raise DeviceError("no JACK server")
        return RtmidiPath(self.settings)

    def _require(self, program: Program) -> None:
        require_kernel(program, "midi")

    def _open(self, program: Program, state: np.ndarray) -> None:
        self._require(program)
        tempo = self._tempo_for(program)
        if tempo != self.transport.tempo_bpm and self._link is None:  # (a Link session has its own)
            self.transport.set_tempo(tempo)
        self._held = (program, state)
        try:
            self._connect()
        except DeviceError:
            if self.settings.get("backend") == "alsa" or jack_server_running():
                raise  # a setting to fix, not a server to wait for
            self._recovery.lose("JACK", "no JACK server")
        _OPEN.add(self)
        self._watch = threading.Thread(target=self._watch_loop, name="livehost-midi-watch", daemon=True)
        self._watch.start()

    def _connect(self, *, wait_for_destinations: bool = False) -> None:
        """Open a path and play on it: the held program, or the engine that played on a lost server.

        *wait_for_destinations*: a server that is back (or appeared) brings
        its clients back one by one: the clock starts when the ``connect_to``
        destinations are connected (receivers get Start, or Song Position and
        Continue), or after DESTINATION_WAIT_S.
        """
        t0 = time.perf_counter()
        path = self._open_path()
        t_client = time.perf_counter()
        sample_rate = path.sample_rate if isinstance(path, JackPath) else NOMINAL_SAMPLE_RATE
        resume = self.engine is not None
        engine = self.engine
        if engine is None or float(engine.get("sample_rate")) != sample_rate:
            engine = self._new_engine(sample_rate)
        if isinstance(path, JackPath) and self._lost_path is not None:
            path.follow(self._lost_path)
        if isinstance(path, JackPath) and self._link is not None:  # on the session's timeline from the first tick
            self._apply_link(engine)
        try:
            if isinstance(path, JackPath):
                path.open(engine, resume=resume, require_destination=not wait_for_destinations)
                t_open = time.perf_counter()
                if not wait_for_destinations or path.check_ports():
                    self._start_path(path, engine, resume)
                    t_start = time.perf_counter()
                    log.info("%s: on JACK in %.0f ms (client %.0f ms, ports and connections %.0f ms, until the "
                             "clock may start %.0f ms)", self.id, (t_start - t0) * 1e3, (t_client - t0) * 1e3,
                             (t_open - t_client) * 1e3, (t_start - t_open) * 1e3)
                else:
                    self._start_by = time.monotonic() + DESTINATION_WAIT_S
            else:
                path.open(engine, self.transport, self.clock, self.start_at_beat)
                self.start_at_beat = None
        except BaseException:
            path.close()
            raise
        self.path, self.engine, self._held, self._lost_path, self._resume = path, engine, None, None, resume

    def _new_engine(self, sample_rate: float) -> TickEngine:
        """An engine for *sample_rate*; one that played on another server's rate hands on all it had."""
        engine = self.engine_class(self.settings, sample_rate, self.transport.tempo_bpm)
        old = self.engine
        if old is None:
            program, state = self._held
            engine.first(offer(program, state))
            engine.slots["panic"] = int(self.panic_on_start)
            return engine
        program, state = old.playing()
        engine.first(offer(program, state))
        if program is not self.program:  # a swap that had not played yet
            engine.request(offer(self.program))
        for name in ("ticks", "next_tick", "channels_used", "notes_on", "swaps", "run_want"):
            engine.slots[name] = old.slots[name]
        engine.notes[:] = old.notes
        return engine

    def _watch_loop(self) -> None:
        """Follow the transport's tempo, look for lost ports, get a lost server back.

        close() joins this thread before it closes the path, so the routine
        work needs no lock; getting a server back takes it, never waiting for it.
        """
        next_check = time.monotonic()
        while not self._stop.wait(WATCH_S):
            path = self.path
            if path is None or path.lost or self._start_by is not None:
                self._recover()
                continue
            if self.settings.get("clock_source") == "midi":
                self._follow_clock()
            elif not self.engine.get("link"):  # (on a Link timeline the tempo comes with it)
                self.engine.set_tempo(self.transport.tempo_bpm)
            if time.monotonic() >= next_check:
                # a JACK destination not connected yet is looked for at every pass (a look at
                # the graph in shared memory), anything else every RETRY_S
                connected = self._check_ports(path)
                next_check = time.monotonic() + (0.0 if connected is False else RETRY_S)

    def _follow_clock(self) -> None:
        """The outside clock leads: the transport takes its tempo; its loss and return are logged."""
        clock = self.engine.clock_in()
        if clock["clocks"] >= 2 and abs(clock["tempo_bpm"] - self.transport.tempo_bpm) >= 0.01:
            self.transport.set_tempo(clock["tempo_bpm"])
        if clock["lost"] != self._clock_lost:
            self._clock_lost = clock["lost"]
            if clock["lost"]:
                log.warning("%s: the MIDI clock in stopped without a Stop: holding %.2f BPM", self.id,
                            clock["tempo_bpm"])
            else:
                log.info("%s: the MIDI clock in is back (%.2f BPM)", self.id, clock["tempo_bpm"])

    def _recover(self) -> None:
        self._recovery.look(self._lock, lambda: self.closed, self._notice_loss,
                            lambda: self._connect(wait_for_destinations=True), self._start_when_connected)

    def _notice_loss(self) -> None:
        if self.path is not None and self.path.lost:
            self._lost_path, self.path, self._start_by = self.path, None, None
            self._recovery.lose("JACK", "the JACK server went away")

    def _start_when_connected(self) -> None:
        if self.path is None or self._start_by is None:
            return
        connected = self._check_ports(self.path)
        if not connected and time.monotonic() < self._start_by:
            return
        if not connected:
            log.warning("%s: no port matching %r came back; playing without it", self.id, self.settings["connect_to"])
        self._start_by = None
        self._start_path(self.path, self.engine, self._resume)

    def _start_path(self, path: JackPath, engine: TickEngine, resume: bool) -> None:
        """Start the clock; a first start asked for on a beat (:attr:`start_at_beat`) puts tick 0 at
        the frame where the transport reaches it (not on a Link session, nor following a clock in:
        they say where the ticks go)."""
        if (self.start_at_beat is not None and not resume and self._link is None
                and self.settings.get("clock_source") != "midi"):
            before = self.clock.now_ns()
            jack_us = float(libjack().jack_get_time())  # JACK's clock: RAW on jackd, MONOTONIC on PipeWire
            now_ns = (before + self.clock.now_ns()) // 2
            engine.start_on_beat(self.start_at_beat, self.transport.tempo_bpm, self.transport.beat_at(now_ns), jack_us)
        self.start_at_beat = None
        path.start(resume=resume)

    def _check_ports(self, path) -> bool | None:
        try:
            return path.check_ports()
        except Exception:  # a port check must never stop the clock
            log.exception("MIDI port check failed")
            return None

    def _tick_s(self) -> float:
        return 60.0 / (self.transport.tempo_bpm * self.settings["ppqn"])

    def _load(self, program: Program) -> None:
        self._require(program)
        self._notice_loss()  # (before the watch thread saw it)
        if self.settings["tempo_bpm"] is None and program.tempo_bpm != self.transport.tempo_bpm and self._link is None:
            self.set_tempo(program.tempo_bpm)
        if self.engine is None:  # no server yet: it plays from the carried state when there is one
            old_program, old_state = self._held
            self._held = (program, program.layout.carry(old_program.layout, old_state))
        elif self.path is None or self._start_by is not None:
            self.engine.request(offer(program))  # taken at the first tick on the new server
        elif not self.engine.swap(offer(program), timeout_s=2 * self._tick_s() + 0.5):
            # (a swap on the beat or bar is seen at the next tick and taken there: nobody waits for it)
            log.warning("MIDI program swap is still pending (the clock is not advancing)")
        if self._recovery.waiting:
            log.info("%s: program %s plays when %s is back", self.id, program.source_hash, self._recovery.waiting_for)

    def _playing_program(self) -> Program | None:
        return self.engine.playing()[0] if self.engine is not None else self.program

    def _link_changed(self, tempo_bpm: float, beat: float, time_us: float, quantum: float) -> None:
        """On the JACK path each tick is placed on the session's timeline in the process
        callback (the first at the session's next quantum boundary); elsewhere the
        transport's tempo is followed."""
        self._link = (tempo_bpm, beat, time_us, quantum)
        if self.engine is None or not isinstance(self.path, JackPath):
            self._tempo_changed()
            return
        self._apply_link(self.engine)

    def _apply_link(self, engine: TickEngine) -> None:
        tempo_bpm, beat, time_us, quantum = self._link
        # Link's time is CLOCK_MONOTONIC_RAW; the engine places ticks on JACK's clock, which is
        # that on jackd but CLOCK_MONOTONIC on PipeWire: measured here, at every publication
        # (at least every REPUBLISH_S), so a slewed clock is followed
        engine.set_link_timeline(tempo_bpm, beat, time_us + clock_offset_us())
        if not engine.get("link"):
            engine.slots["link_quantum"] = quantum
            engine.slots["link"] = 1

    def _tempo_changed(self) -> None:
        """The next tick comes one new period after the last."""
        if self.engine is not None:
            self.engine.set_tempo(self.transport.tempo_bpm)

    def _controls(self):
        return self.engine.controls if self.engine is not None else None

    def locate(self, beat: float) -> None:
        """Jump to *beat* (rounded down to a sixteenth) at the next tick.

        The clock keeps its time grid; receivers get Stop, Song Position
        Pointer and Continue (with ``send_transport``), the kernel the new tick.
        """
        ppqn = self.settings["ppqn"]
        step = ppqn // 4
        with self._lock:
            if self.engine is None:
                raise RuntimeInitError(f"{self.id}: locate() before the runtime has a server to play on")
            self.engine.locate(int(beat * ppqn) // step * step)

    def _update_settings(self, settings: dict[str, Any]) -> None:
        if self.engine is None:
            return
        self.engine.apply_settings(settings)
        if settings.get("tempo_bpm") is not None and self._link is None:
            self.set_tempo(float(settings["tempo_bpm"]))

    def _snapshot(self) -> np.ndarray:
        if self.engine is None:
            return self._held[1].copy()
        return carried_to(self.program, *self.engine.playing())  # (a swap may still wait for its tick)

    def liveness(self) -> tuple[int, bool, bool] | None:
        engine = self.engine
        return engine.liveness() if engine is not None else None

    def _stats(self) -> dict[str, Any]:
        stats = self._recovery.stats()
        if self.engine is not None:
            stats.update(self.engine.stats())
            if self.settings.get("clock_source") == "midi":
                stats["clock_in"] = self.engine.clock_in()
        if self.path is not None:
            stats.update(backend=self.path.name, **self.path.stats(), reconnects=self.path.reconnects)
        return stats

    def close(self) -> None:
        self._stop.set()  # the watch thread ends at once, also while it waits for the server
        super().close()

    def _close(self) -> None:
        if self._watch is not None:
            self._watch.join()
        if self.path is not None:
            self.path.close()
        _OPEN.discard(self)

