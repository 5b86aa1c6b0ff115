"""MIDI input for the ``audio`` runtime (``midi_input = "substring"``): an rtmidi port whose
messages are stamped on arrival and played by the callback one block later (:mod:`.keys`).

rtmidi stamps each message as its own thread receives it, before this
module's callback waits for the GIL; the sum of its deltas since an anchor
gives each arrival on the monotonic clock, so a busy interpreter delays the
hand-over, not the message's place in the audio.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

from compiler_bridge.errors import DeviceError

from ..realtime.ring import Ring

log = logging.getLogger("livehost.runtimes")

ALSA_SEQ = "/dev/snd/seq"
APIS = ("LINUX_ALSA", "UNIX_JACK")  # tried in turn: the first with a matching port
REANCHOR_NS = 250_000_000  # an arrival this far behind now (or ahead of it) is the clocks parting: anchor anew


class MidiInput:
    """An open rtmidi input port feeding ``target()`` (the playing engine's ring, or None)."""

    def __init__(self, wanted: str, target: Callable[[], Ring | None]) -> None:
        import rtmidi

        self.target = target
        self.dropped = 0
        self._anchor_ns: int | None = None
        self._since_s = 0.0
        seen = []
        for api_name in APIS:
            api = getattr(rtmidi, f"API_{api_name}")
            if api not in rtmidi.get_compiled_api() or (api_name == "LINUX_ALSA" and not os.path.exists(ALSA_SEQ)):
                continue  # (ALSA without its sequencer device prints an error of its own to stderr)
            try:
                port = rtmidi.MidiIn(api, name="livehost")
            except Exception:  # rtmidi raises its own SystemError family when an API cannot start here
                continue
            names = port.get_ports()
            seen += names
            match = next((i for i, n in enumerate(names) if wanted in n), None)
            if match is None:
                port.delete()
                continue
            port.ignore_types(sysex=True, timing=True, active_sense=True)
            port.set_callback(self._on_message)
            port.open_port(match, "midi_in")
            self.port, self.name = port, names[match]
            log.info("audio: MIDI input from %s (%s)", self.name, api_name)
            return
        raise DeviceError(f"midi_input = {wanted!r}: no MIDI input port matches (available: "
                          f"{', '.join(seen) or 'none'})")

    def _on_message(self, event, data=None) -> None:
        message, delta_s = event
        now = time.monotonic_ns()
        self._since_s += delta_s
        at = now if self._anchor_ns is None else self._anchor_ns + round(self._since_s * 1e9)
        if abs(now - at) > REANCHOR_NS:
            at = now
        if at == now:
            self._anchor_ns, self._since_s = now, 0.0
        ring = self.target()
        if ring is None or not message:
            return
        values = (*message[:3], 0, 0)[:3]
        if not ring.push(at, *values):
            self.dropped += 1

    def close(self) -> None:
        self.port.cancel_callback()
        self.port.close_port()
        self.port.delete()
