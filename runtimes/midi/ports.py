"""The ``midi`` runtime over mido and python-rtmidi (no JACK server, or asked for).

The tick engine runs on a clock thread (:class:`TickedEngine`) and its
messages go out through a mido port; MIDI input arrives on rtmidi's thread
and reaches the tick engine through its input ring.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from compiler_bridge.errors import DeviceError

from ..clock import Clock, Transport
from ..ticks.engine import TickEngine
from .jack import CLIENT_NAME
from .ticked import TickedEngine

log = logging.getLogger("livehost.runtimes")

RETRY_S = 0.5  # how often a lost port is looked for again
FLUSH_S = 0.1  # time for rtmidi to deliver the last messages before its port closes
_RTMIDI_APIS = ("LINUX_ALSA", "UNIX_JACK", "MACOSX_CORE", "WINDOWS_MM")  # "auto" tries these in turn
_BACKEND_APIS = {"alsa": ("LINUX_ALSA",), "rtmidi_jack": ("UNIX_JACK",)}


class RtmidiPath:
    """mido ports over python-rtmidi, fed by a :class:`TickedEngine`."""

    def __init__(self, settings: dict[str, Any]) -> None:
        import mido

        self.mido = mido
        self.settings = settings
        self.ports: dict[str, str] = {}
        self.reconnects = 0
        self.lost = False  # as JackPath.lost: never here (a missing output is retried in check_ports)
        self._output_missing = False
        self._port_lock = threading.Lock()
        self.backend, self.api = self._backend(settings["backend"])
        self.name = f"rtmidi/{self.api}"
        self.out = self._open_output()
        self.inp = None
        self.ticked: TickedEngine | None = None

    def _backend(self, choice: str):
        """Return the first mido rtmidi backend whose API opens a port here."""
        apis = _BACKEND_APIS.get(choice, _RTMIDI_APIS)
        problems = []
        for api in apis:
            backend = self.mido.Backend(f"mido.backends.rtmidi/{api}", load=True)
            try:
                backend.get_output_names()
                return backend, api
            except Exception as exc:  # rtmidi raises its own SystemError family per API
                problems.append(f"{api}: {exc}")
        raise DeviceError("no MIDI API works here (" + "; ".join(problems) + ")")

    def _match(self, wanted: str, names: list[str], direction: str) -> str:
        for name in names:
            if wanted in name:
                return name
        raise DeviceError(f"no MIDI {direction} port matches {wanted!r} (available: {', '.join(names) or 'none'})")

    def _open_output(self):
        wanted = self.settings["output"]
        if wanted is None:
            self.ports["output"] = CLIENT_NAME
            return self.backend.open_output(CLIENT_NAME, virtual=True, client_name=CLIENT_NAME)
        name = self._match(wanted, self.backend.get_output_names(), "output")
        self.ports["output"] = name
        return self.backend.open_output(name)  # (mido makes any port with a client_name virtual)

    def open(self, engine: TickEngine, transport: Transport, clock: Clock, at_beat: float | None = None) -> None:
        self.ticked = TickedEngine(engine, transport, clock, self._send, name="livehost-midi-ticks")
        if self.settings["input"]:
            name = self._match(self.settings["input"], self.backend.get_input_names(), "input")
            self.inp = self.backend.open_input(name, callback=self._on_message)
            self.ports["input"] = name
        self.ticked.start(at_beat)

    def _on_message(self, message) -> None:
        """rtmidi's input thread: the tick engine maps it to state fields at the next tick."""
        data = [*message.bytes(), 0, 0][:3]
        self.ticked.engine.inbox.push(*data, len(message.bytes()))

    def _send(self, tick: int, messages: list[tuple[int, ...]]) -> None:
        with self._port_lock:
            for data in messages:
                self.out.send(self.mido.Message.from_bytes(list(data)))

    def check_ports(self) -> None:
        """Reopen a named output that disappeared once it is back."""
        wanted = self.settings["output"]
        if wanted is None:
            return
        present = any(wanted in n for n in self.backend.get_output_names())
        if not present and not self._output_missing:
            self._output_missing = True
            log.warning("MIDI output %r disappeared; retrying every %.1f s", wanted, RETRY_S)
        elif present and self._output_missing:
            with self._port_lock:
                self.out.close()
                self.out = self._open_output()
            self._output_missing = False
            self.reconnects += 1

    def stats(self) -> dict[str, Any]:
        return self.ticked.stats()

    def close(self) -> None:
        if self.inp is not None:
            self.inp.close()
            self.inp = None
        if self.ticked is not None:
            self.ticked.stop()
            # rtmidi's JACK API hands messages to its own process callback and
            # drops what is queued when the port closes: give it a few cycles.
            time.sleep(FLUSH_S)
        for port in (self.inp, self.out):
            if port is not None:
                port.close()
