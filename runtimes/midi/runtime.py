"""The ``midi`` runtime: MIDI clock, the patch's notes and CC out; CC and notes in.

Two paths behind one runtime, both running the same native tick engine
(:mod:`.engine`: swap, Start, clock, kernel, sounding-note table), so both
end every sounding note on close, swap away or a kernel error: NoteOff for
each, All Notes Off on every channel used, then Stop.

* :mod:`.jack` -- on a running JACK server, a JACK client of livehost's own
  whose process callback is the native engine: events at exact frame offsets.
* :mod:`.ports` -- elsewhere, mido over python-rtmidi, the engine stepped by a
  clock thread (:mod:`.ticked`).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from typing import Any

import numpy as np

from compiler_bridge.errors import RuntimeInitError
from compiler_bridge.program import Program

from ..base import BaseRuntime, require_kernel
from .engine import MidiEngine
from .jack import JackPath, jack_server_running
from .ports import RETRY_S, RtmidiPath
from .ticked import NOMINAL_SAMPLE_RATE

log = logging.getLogger("livehost.runtimes")

WATCH_S = 0.05  # how often the transport's tempo is followed

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

    def __init__(self, settings: dict[str, Any], **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.path: JackPath | RtmidiPath | None = None
        self.engine: MidiEngine | None = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

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
                raise RuntimeInitError("midi: send() on a runtime that is not running")
            return self.engine.outbox.push(*data, len(message.bytes()))

    @property
    def ports(self) -> dict[str, str]:
        """Full names of the ports this runtime opened (``output``, ``input``)."""
        return dict(self.path.ports) if self.path else {}

    def _tempo_for(self, program: Program) -> float:
        return float(self.settings["tempo_bpm"] or program.tempo_bpm)

    def _open_path(self):
        backend = self.settings["backend"]
        if backend in ("jack", "native") or backend == "auto" and jack_server_running():
            return JackPath(self.settings)
        return RtmidiPath(self.settings)

    def _open(self, program: Program, state: np.ndarray) -> None:
        require_kernel(program, "midi")
        tempo = self._tempo_for(program)
        if tempo != self.transport.tempo_bpm:
            self.transport.set_tempo(tempo)
        self.path = self._open_path()
        sample_rate = self.path.sample_rate if isinstance(self.path, JackPath) else NOMINAL_SAMPLE_RATE
        self.engine = MidiEngine(self.settings, sample_rate, tempo)
        self.engine.first(program, state, self.settings)
        try:
            if isinstance(self.path, JackPath):
                self.path.open(self.engine)
            else:
                self.path.open(self.engine, self.transport, self.clock)
        except BaseException:
            self.path.close()
            raise
        _OPEN.add(self)
        self._watch = threading.Thread(target=self._watch_loop, name="livehost-midi-watch", daemon=True)
        self._watch.start()

    def _watch_loop(self) -> None:
        """Follow the transport's tempo; look for lost ports every RETRY_S."""
        next_retry = time.monotonic() + RETRY_S
        while not self._stop.wait(WATCH_S):
            self.engine.set_tempo(self.transport.tempo_bpm)
            if time.monotonic() >= next_retry:
                next_retry += RETRY_S
                try:
                    self.path.check_ports()
                except Exception:  # a port check must never stop the clock
                    log.exception("MIDI port check failed")

    def _tick_s(self) -> float:
        return 60.0 / (self.transport.tempo_bpm * self.settings["ppqn"])

    def _load(self, program: Program) -> None:
        require_kernel(program, "midi")
        if self.settings["tempo_bpm"] is None and program.tempo_bpm != self.transport.tempo_bpm:
            self.set_tempo(program.tempo_bpm)
        if not self.engine.swap(program, self.settings, timeout_s=2 * self._tick_s() + 0.5):
            log.warning("MIDI program swap is still pending (the clock is not advancing)")

    def set_tempo(self, tempo_bpm: float) -> None:
        """Change tempo; the next tick comes one new period after the last."""
        self.transport.set_tempo(tempo_bpm)
        self.engine.set_tempo(tempo_bpm)

    def locate(self, beat: float) -> None:
        """Jump to *beat* (rounded down to a sixteenth) at the next tick.

        The clock keeps its time grid; receivers get Stop, Song Position
        Pointer and Continue (with ``send_transport``), the kernel the new tick.
        """
        ppqn = self.settings["ppqn"]
        step = ppqn // 4
        self.engine.locate(int(beat * ppqn) // step * step)

    def _update_settings(self, settings: dict[str, Any]) -> None:
        if self.engine is None:
            return
        self.engine.apply_settings(settings)
        if settings.get("tempo_bpm") is not None:
            self.set_tempo(float(settings["tempo_bpm"]))

    def _snapshot(self) -> np.ndarray:
        return self.engine.state()

    def _stats(self) -> dict[str, Any]:
        if self.path is None or self.engine is None:
            return {}
        return {"backend": self.path.name, **self.engine.stats(), **self.path.stats(),
                "reconnects": self.path.reconnects}

    def _close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join()
        if self.path is not None:
            self.path.close()
        _OPEN.discard(self)
