"""The native JACK path of the ``midi`` runtime: livehost's own JACK client.

Its process callback is the tick engine's native :data:`engine.process`, so
clock bytes and kernel events are written at exact frame offsets with no
Python in the loop. libjack is bound through ctypes here; the engine calls
the few functions it needs by address.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

from compiler_bridge.errors import DeviceError

from ..base import wait_until
from . import engine as engine_module
from .engine import RUNNING, STARTING, STOPPED, STOPPING, MidiEngine

log = logging.getLogger("livehost.runtimes")

CLIENT_NAME = "livehost"
MIDI_TYPE = b"8 bit raw midi"
_JACK_NO_START_SERVER = 0x01
_JACK_PORT_IS_INPUT, _JACK_PORT_IS_OUTPUT = 0x1, 0x2


def libjack() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for name, restype, argtypes in (
        ("jack_client_open", vp, [cp, i, ctypes.POINTER(i)]),
        ("jack_client_close", i, [vp]),
        ("jack_get_client_name", cp, [vp]),
        ("jack_port_register", vp, [vp, cp, cp, ctypes.c_ulong, ctypes.c_ulong]),
        ("jack_port_name", cp, [vp]),
        ("jack_port_connected_to", i, [vp, cp]),
        ("jack_set_process_callback", i, [vp, vp, vp]),
        ("jack_activate", i, [vp]),
        ("jack_deactivate", i, [vp]),
        ("jack_get_sample_rate", ctypes.c_uint32, [vp]),
        ("jack_get_ports", ctypes.POINTER(cp), [vp, cp, cp, ctypes.c_ulong]),
        ("jack_connect", i, [vp, cp, cp]),
        ("jack_free", None, [vp]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _address(fn) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value


class JackPath:
    """livehost's own JACK client; its process callback is the native :data:`engine.process`."""

    name = "jack"

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.lib = libjack()
        status = ctypes.c_int(0)
        self.client = self.lib.jack_client_open(CLIENT_NAME.encode(), _JACK_NO_START_SERVER, ctypes.byref(status))
        if not self.client:
            raise DeviceError(f"no JACK server (jack_client_open status 0x{status.value:x})")
        self.sample_rate = float(self.lib.jack_get_sample_rate(self.client))
        self.ports: dict[str, str] = {}
        self.reconnects = 0
        self._seen: set[str] = set()  # destinations connected at least once
        self.engine: MidiEngine | None = None

    def _register(self, short_name: str, flags: int) -> int:
        port = self.lib.jack_port_register(self.client, short_name.encode(), MIDI_TYPE, flags, 0)
        if not port:
            raise DeviceError(f"cannot register JACK MIDI port {short_name!r}")
        return port

    def _destinations(self) -> list[str]:
        """MIDI input ports of other clients: where ``connect_to`` may point."""
        names = self.lib.jack_get_ports(self.client, None, MIDI_TYPE, _JACK_PORT_IS_INPUT)
        if not names:
            return []
        out, i = [], 0
        while names[i]:
            out.append(names[i].decode())
            i += 1
        self.lib.jack_free(names)
        own = self.lib.jack_get_client_name(self.client).decode() + ":"
        return [n for n in out if not n.startswith(own)]

    def open(self, engine: MidiEngine) -> None:
        self.engine = engine
        s = engine.slots
        s["client"] = self.client
        self.out_port = self._register(self.settings["output"] or "out", _JACK_PORT_IS_OUTPUT)
        s["out_port"] = self.out_port
        self.ports["output"] = self.lib.jack_port_name(self.out_port).decode()
        if self.settings["input"]:
            in_port = self._register(self.settings["input"], _JACK_PORT_IS_INPUT)
            s["in_port"] = in_port
            self.ports["input"] = self.lib.jack_port_name(in_port).decode()
        for slot, fn in (("fn_get_buffer", "jack_port_get_buffer"), ("fn_clear_buffer", "jack_midi_clear_buffer"),
                         ("fn_event_write", "jack_midi_event_write"), ("fn_last_frame_time", "jack_last_frame_time"),
                         ("fn_event_count", "jack_midi_get_event_count"), ("fn_event_get", "jack_midi_event_get")):
            s[slot] = _address(getattr(self.lib, fn))
        target = self.settings["connect_to"]
        if target and not [d for d in self._destinations() if target in d]:
            raise DeviceError(f"no MIDI output port matches {target!r} "
                                   f"(available: {', '.join(self._destinations()) or 'none'})")
        if self.lib.jack_set_process_callback(self.client, engine_module.process.address, engine.address) != 0:
            raise DeviceError("jack_set_process_callback failed")
        if self.lib.jack_activate(self.client) != 0:
            raise DeviceError("jack_activate failed")
        self.check_ports()
        self._wait_cycles(2)  # a new connection takes effect at a cycle boundary: let Start arrive
        engine.set_run_state(STARTING)

    def _wait_cycles(self, n: int, timeout_s: float = 1.0) -> None:
        """Wait until the process callback has run *n* more times."""
        target = self.engine.get("cycles") + n
        wait_until(lambda: self.engine.get("cycles") >= target, timeout_s)

    def check_ports(self) -> None:
        """Connect to every ``connect_to`` match; count a known port that came back."""
        target = self.settings["connect_to"]
        if not target:
            return
        present = {d for d in self._destinations() if target in d}
        for name in present:
            if self.lib.jack_port_connected_to(self.out_port, name.encode()):
                continue
            if self.lib.jack_connect(self.client, self.ports["output"].encode(), name.encode()) == 0 \
                    and name in self._seen:
                self.reconnects += 1
                log.info("MIDI port %s is back: reconnected", name)
        self._seen |= present

    def stats(self) -> dict[str, Any]:
        return self.engine.frame_stats()

    def close(self) -> None:
        """Let the callback end the notes and send Stop, then leave the graph."""
        if self.engine is not None and self.engine.get("run_state") in (STARTING, RUNNING):
            self.engine.set_run_state(STOPPING)
            wait_until(lambda: self.engine.get("run_state") == STOPPED, 2.0)
        self.lib.jack_deactivate(self.client)
        self.lib.jack_client_close(self.client)



def jack_server_running() -> bool:
    try:
        lib = libjack()
    except OSError:
        return False
    status = ctypes.c_int(0)
    client = lib.jack_client_open(b"livehost-probe", _JACK_NO_START_SERVER, ctypes.byref(status))
    if client:
        lib.jack_client_close(client)
    return bool(client)
