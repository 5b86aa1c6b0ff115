"""The native JACK path of the ``midi`` runtime: livehost's own JACK client.

Its process callback is the tick engine's native :data:`engine.process`, so
clock bytes and kernel events are written at exact frame offsets with no
Python in the loop. libjack is bound through ctypes here; the engine calls
the few functions it needs by address.

A JACK server that goes away takes every client of the process with it.
Clients here hear it through a native shutdown callback (it never waits for
the GIL in the libjack thread that calls it), and a dead client's handle is
never used again: libjack frees it at the process's next client open.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import time
from typing import Any

import numba
import numpy as np
from numba import carray, types

from compiler_bridge.errors import DeviceError

from ..base import wait_until
from ..ticks.engine import TickEngine
from ..ticks.slots import WANT_IDLE, WANT_RUN

log = logging.getLogger("livehost.runtimes")

CLIENT_NAME = "livehost"
WATCH_CLIENT_NAME = "livehost-watch"
MIDI_TYPE = b"8 bit raw midi"
_JACK_NO_START_SERVER = 0x01
_JACK_PORT_IS_INPUT, _JACK_PORT_IS_OUTPUT, _JACK_PORT_IS_PHYSICAL = 0x1, 0x2, 0x4
AUDIO_TYPE = b"32 bit float mono audio"
_JACK_PLAYBACK_LATENCY = 1


@functools.cache
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
        ("jack_on_shutdown", None, [vp, vp, vp]),
        ("jack_set_error_function", None, [vp]),
        ("jack_port_get_latency_range", None, [vp, i, ctypes.POINTER(ctypes.c_uint32 * 2)]),
        ("jack_port_by_name", vp, [vp, cp]),
        ("jack_get_buffer_size", ctypes.c_uint32, [vp]),
        ("jack_get_time", ctypes.c_uint64, []),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _address(fn) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value


@numba.cfunc(types.void(types.voidptr), cache=True, nogil=True, error_model="numpy")
def _raise_flag(arg):
    """JACK shutdown callback: store 1 in the int64 at *arg*."""
    carray(arg, 1, np.int64)[0] = 1


@numba.cfunc(types.void(types.voidptr), cache=True, nogil=True, error_model="numpy")
def _ignore(message):
    """JACK error function that prints nothing (see :func:`open_client`)."""


def open_client(name: str) -> int:
    """Open a JACK client named *name* (never starting a server); raise DeviceError without one.

    libjack's own error printing is turned off, as PortAudio does for its
    client: a look for a server that is not there yet prints several lines,
    a server that goes away three more, and the runtimes say what matters.
    """
    lib = libjack()
    lib.jack_set_error_function(_ignore.address)
    status = ctypes.c_int(0)
    client = lib.jack_client_open(name.encode(), _JACK_NO_START_SERVER, ctypes.byref(status))
    if not client:
        raise DeviceError(f"no JACK server (jack_client_open status 0x{status.value:x})")
    return client


def port_names(client: int, pattern: str | None, port_type: bytes | None, flags: int) -> list[str]:
    """The names of the ports ``jack_get_ports`` finds (*pattern* is a regular expression)."""
    lib = libjack()
    names = lib.jack_get_ports(client, pattern.encode() if pattern else None, port_type, flags)
    if not names:
        return []
    out, i = [], 0
    while names[i]:
        out.append(names[i].decode())
        i += 1
    lib.jack_free(names)
    return out


def physical_client(client: int, playback: bool = True) -> str | None:
    """The client that owns the server's first physical playback port (the sound card, or a
    PipeWire sink: where audio goes when nothing else is asked for), or capture port."""
    flags = (_JACK_PORT_IS_INPUT if playback else _JACK_PORT_IS_OUTPUT) | _JACK_PORT_IS_PHYSICAL
    ports = port_names(client, None, AUDIO_TYPE, flags)
    return ports[0].split(":", 1)[0] if ports else None


def _playback_latency(port: int) -> int:
    """Frames from *port* to where it is heard: JACK's playback latency range, its maximum."""
    latency = (ctypes.c_uint32 * 2)()
    libjack().jack_port_get_latency_range(port, _JACK_PLAYBACK_LATENCY, ctypes.byref(latency))
    return int(latency[1])


def playback_latency_frames(client: int, port_name: str) -> int | None:
    """Frames from *port_name*'s buffer to where it is heard (JACK's playback latency, its
    maximum, plus the cycle being written); None when there is no such port."""
    lib = libjack()
    port = lib.jack_port_by_name(client, port_name.encode())
    if not port:
        return None
    return _playback_latency(port) + int(lib.jack_get_buffer_size(client))


def clock_offset_us(samples: int = 5) -> float:
    """JACK's clock (``jack_get_time``; a client of this process must be open: jackd's library sets its
    clock up then) minus CLOCK_MONOTONIC_RAW (Link's clock on Linux), in
    microseconds, measured: jackd keeps time in CLOCK_MONOTONIC_RAW (about 0), PipeWire in
    CLOCK_MONOTONIC (hundreds of ms away, drifting as the clock is slewed). The read with the
    tightest pair of RAW reads around it wins."""
    get_time = libjack().jack_get_time
    best = None
    for _ in range(samples):
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        jack_us = get_time()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
        if best is None or after - before < best[0]:
            best = (after - before, jack_us - (before + after) / 2e3)
    return best[1]


class ShutdownFlag:
    """True once the server has shut *client* down; set up before the client is activated."""

    def __init__(self, client: int) -> None:
        self._flag = np.zeros(1, np.int64)  # written by libjack's thread; alive as long as the client
        libjack().jack_on_shutdown(client, _raise_flag.address, self._flag.ctypes.data)

    def __bool__(self) -> bool:
        return bool(self._flag[0])


class ServerWatch:
    """A client with no ports that tells when the JACK server of this process goes away.

    For clients whose own shutdown callback is out of reach (PortAudio's):
    they die with the same server.
    """

    def __init__(self) -> None:
        self.client = open_client(WATCH_CLIENT_NAME)
        self.gone = ShutdownFlag(self.client)

    def close(self) -> None:
        if self.client and not self.gone:
            libjack().jack_client_close(self.client)
        self.client = 0


class JackPath:
    """livehost's own JACK client; its process callback is the native :data:`engine.process`."""

    name = "jack"

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.lib = libjack()
        self.client = open_client(CLIENT_NAME)
        self.gone = ShutdownFlag(self.client)
        self.sample_rate = float(self.lib.jack_get_sample_rate(self.client))
        self.ports: dict[str, str] = {}
        self.reconnects = 0
        self._seen: set[str] = set()  # destinations connected at least once
        self.audio_ports: dict[str, list[int]] = {}  # the joint engine's, by direction
        self.engine: TickEngine | None = None

    def _register(self, short_name: str, flags: int) -> int:
        port = self.lib.jack_port_register(self.client, short_name.encode(), MIDI_TYPE, flags, 0)
        if not port:
            raise DeviceError(f"cannot register JACK MIDI port {short_name!r}")
        return port

    def _register_audio(self, short_name: str, output: bool) -> int:
        flags = _JACK_PORT_IS_OUTPUT if output else _JACK_PORT_IS_INPUT
        port = self.lib.jack_port_register(self.client, short_name.encode(), AUDIO_TYPE, flags, 0)
        if not port:
            raise DeviceError(f"cannot register JACK audio port {short_name!r}")
        self.ports[short_name] = self.lib.jack_port_name(port).decode()
        return port

    def _connect_audio(self) -> None:
        """Audio outputs to the server's physical playback ports in order, physical capture ports to
        the inputs (``connect_audio``, as PortAudio's JACK client does); a port already connected stays."""
        if not self.settings.get("connect_audio", True):
            return
        for direction, flags in (("out", _JACK_PORT_IS_INPUT), ("in", _JACK_PORT_IS_OUTPUT)):
            physical = port_names(self.client, None, AUDIO_TYPE, flags | _JACK_PORT_IS_PHYSICAL)
            own = [self.lib.jack_port_name(p).decode() for p in self.audio_ports.get(direction, [])]
            for mine, theirs in zip(own, physical):
                source, destination = (mine, theirs) if direction == "out" else (theirs, mine)
                self.lib.jack_connect(self.client, source.encode(), destination.encode())

    def _others(self, flags: int) -> list[str]:
        """MIDI ports of other clients with *flags*: inputs are where ``connect_to`` may point,
        outputs where ``connect_from`` may."""
        own = self.lib.jack_get_client_name(self.client).decode() + ":"
        return [n for n in port_names(self.client, None, MIDI_TYPE, flags) if not n.startswith(own)]

    def _destinations(self) -> list[str]:
        return self._others(_JACK_PORT_IS_INPUT)

    def follow(self, old: "JackPath") -> None:
        """Take over the destinations a client of a lost server had connected: they count as coming back."""
        self._seen, self.reconnects = set(old._seen), old.reconnects

    @property
    def lost(self) -> bool:
        """The server shut this client down; its handle is dead."""
        return bool(self.gone)

    def open(self, engine: TickEngine, *, resume: bool = False, require_destination: bool = True) -> None:
        """Register the ports and join the graph; *engine* idles until :meth:`start`.

        *resume*: the engine played on a server that went away (see
        :meth:`start`). Without *require_destination*, ``connect_to``
        destinations that are not there yet are connected when they come.
        """
        self.engine = engine
        s = engine.slots
        engine.want(WANT_IDLE)
        if resume:  # the old server's frame count means nothing here
            s["cycle_frames"] = 0  # (the next cycle starts the count from this server's frame time)
        s["client"] = self.client
        self.out_port = self._register(self.settings["output"] or "out", _JACK_PORT_IS_OUTPUT)
        s["out_port"] = self.out_port
        self.ports["output"] = self.lib.jack_port_name(self.out_port).decode()
        needs_input = self.settings.get("clock_source") == "midi" or self.settings.get("connect_from")
        input_name = self.settings["input"] or ("in" if needs_input else None)
        if input_name:
            in_port = self._register(input_name, _JACK_PORT_IS_INPUT)
            s["in_port"] = in_port
            self.ports["input"] = self.lib.jack_port_name(in_port).decode()
        for slot, fn in (("fn_get_buffer", "jack_port_get_buffer"), ("fn_clear_buffer", "jack_midi_clear_buffer"),
                         ("fn_event_write", "jack_midi_event_write"), ("fn_last_frame_time", "jack_last_frame_time"),
                         ("fn_event_count", "jack_midi_get_event_count"), ("fn_event_get", "jack_midi_event_get"),
                         ("fn_frames_to_time", "jack_frames_to_time")):
            s[slot] = _address(getattr(self.lib, fn))
        target = self.settings["connect_to"]
        if target and require_destination and not [d for d in self._destinations() if target in d]:
            raise DeviceError(f"no MIDI output port matches {target!r} "
                                   f"(available: {', '.join(self._destinations()) or 'none'})")
        self.audio_ports = engine.attach(self._register_audio)
        callback, arg = engine.callback
        if self.lib.jack_set_process_callback(self.client, callback, arg) != 0:
            raise DeviceError("jack_set_process_callback failed")
        if self.lib.jack_activate(self.client) != 0:
            raise DeviceError("jack_activate failed")
        self._connect_audio()
        self.check_ports()

    def start(self, *, resume: bool = False) -> None:
        """Start the clock at the next cycle, once the connections made so far have taken effect.

        *resume*: go on from the engine's next tick, re-anchored at this
        server's first cycle; receivers get Stop, Song Position and Continue,
        and notes left sounding when the old server went get their NoteOff.
        """
        s = self.engine.slots
        self._wait_cycles(2)  # a new connection takes effect at a cycle boundary: let Start arrive
        if resume:
            if not self.engine.jump_pending():  # (unless a locate() is waiting)
                self.engine.locate(int(s["next_tick"][0]))
            self.engine.release_notes()
        self.engine.want(WANT_RUN)

    def _wait_cycles(self, n: int, timeout_s: float = 1.0) -> None:
        """Wait until the process callback has run *n* more times."""
        target = self.engine.get("cycles") + n
        wait_until(lambda: self.engine.get("cycles") >= target or self.lost, timeout_s)

    def check_ports(self) -> bool:
        """Connect our output to every ``connect_to`` match and every ``connect_from`` match to our
        input (a clock leader, a keyboard: also after they or the server restarted); count a
        known port that came back.

        Returns whether every ``connect_to`` match is connected (and there is one).
        """
        source = self.settings.get("connect_from")
        if source and "input" in self.ports:
            own = self.ports["input"]
            for name in self._others(_JACK_PORT_IS_OUTPUT):
                if source in name:
                    self._connect(name, own, name)
        if self.engine is not None:  # on a Link timeline, events go out this much ahead of their beat
            self.engine.slots["link_latency_us"] = self.playback_latency_frames() * 1e6 / self.sample_rate
        target = self.settings["connect_to"]
        if not target:
            return True
        present = {d for d in self._destinations() if target in d}
        return all([self._connect(self.ports["output"], name, name) for name in present]) and bool(present)

    def _connect(self, source: str, destination: str, other: str) -> bool:
        """Connect *source* to *destination* unless they are; *other* is the port that is not ours."""
        lib = self.lib
        port = lib.jack_port_by_name(self.client, source.encode())
        if port and lib.jack_port_connected_to(port, destination.encode()):
            self._seen.add(other)  # (connected by hand, or before a lost server: it counts as coming back)
            return True
        if lib.jack_connect(self.client, source.encode(), destination.encode()) != 0:
            return False
        if other in self._seen:
            self.reconnects += 1
            log.info("MIDI port %s is back: reconnected", other)
        else:
            log.info("MIDI: connected %s to %s", source, destination)
        self._seen.add(other)
        return True

    def playback_latency_frames(self) -> int:
        """Frames from our output port to where its events are heard (JACK's playback latency, its maximum)."""
        return _playback_latency(self.out_port)

    def stats(self) -> dict[str, Any]:
        return self.engine.frame_stats()

    def close(self) -> None:
        """Let the callback end the notes and send Stop, then leave the graph.

        A client the server shut down is left alone (see the module docstring).
        """
        if not self.client:
            return
        if self.engine is not None and not self.lost:
            self.engine.stop(2.0, lost=lambda: self.lost)
        if not self.lost:
            self.lib.jack_deactivate(self.client)
            self.lib.jack_client_close(self.client)
        self.client = 0



def jack_server_running() -> bool:
    try:
        client = open_client("livehost-probe")
    except (OSError, DeviceError):  # no libjack, or no server
        return False
    libjack().jack_client_close(client)
    return True
