"""The MIDI runtime: MIDI clock, the patch's notes and CC out; CC and notes in.

Two paths behind one runtime (registry id ``midi``):

* On a running JACK server, a JACK client of livehost's own (``livehost``)
  whose process callback is native code (:mod:`compiler_bridge.native_midi`):
  clock bytes and kernel events are written at exact frame offsets, with no
  Python and no GIL in the loop.
* Elsewhere, mido over python-rtmidi, driven by a :class:`TickLoop` thread that
  sleeps to a little before each absolute deadline and spins the rest.

Both run the same native per-tick code (swap, Start, clock, kernel, sounding
note table), so both end every sounding note on close, swap away or a kernel
error: NoteOff for each, All Notes Off on every channel used, then Stop.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import threading
import time
import weakref
from typing import Any

import numpy as np

from compiler_bridge import abi
from compiler_bridge import native_midi as nm
from compiler_bridge.program import Program
from compiler_bridge.state import StateLayout

from .base import BaseRuntime, RuntimeInitError, require_kernel
from .ticker import TickLoop

log = logging.getLogger("livehost.runtimes")

RETRY_S = 0.5  # how often a lost port is looked for again
WATCH_S = 0.05  # how often the transport's tempo is followed
FLUSH_S = 0.1  # time for rtmidi to deliver the last messages before its port closes
CLIENT_NAME = "livehost"
MIDI_TYPE = b"8 bit raw midi"
_JACK_NO_START_SERVER = 0x01
_JACK_PORT_IS_INPUT, _JACK_PORT_IS_OUTPUT = 0x1, 0x2
_RTMIDI_APIS = ("LINUX_ALSA", "UNIX_JACK", "MACOSX_CORE", "WINDOWS_MM")  # "auto" tries these in turn
_BACKEND_APIS = {"alsa": ("LINUX_ALSA",), "rtmidi_jack": ("UNIX_JACK",)}


# --- the engine both paths share: native slots, buffers, program blocks ----------


class _ProgramBlock:
    """One program as the native code sees it; owns every array it points to."""

    def __init__(self, program: Program, state: np.ndarray, carry: np.ndarray, settings: dict[str, Any]) -> None:
        self.program = program
        self.state = state
        self.carry = np.ascontiguousarray(carry, np.int64).reshape(-1, 3)
        self.controls = control_table(program.layout, settings)
        self.record = np.zeros(1, nm.PROGRAM_DTYPE)
        r = self.record
        r["kernel"] = program.kernels.get("midi", 0)
        r["state"] = state.ctypes.data
        r["state_bytes"] = state.nbytes
        r["carry"] = self.carry.ctypes.data
        r["carry_rows"] = self.carry.shape[0]
        r["controls"] = self.controls.ctypes.data

    @property
    def address(self) -> int:
        return self.record.ctypes.data


def control_table(layout: StateLayout, settings: dict[str, Any]) -> np.ndarray:
    """Return the int64 ``(CONTROL_ROWS, 2)`` map of input to state fields.

    Rows 0-127 are CC numbers (from ``cc_map``), then ``note_field`` and
    ``velocity_field``; each row is ``[byte offset, ring kind]``, offset -1
    when unmapped or when this program has no such field.
    """
    table = np.full((nm.CONTROL_ROWS, 2), -1, np.int64)
    targets = [(int(cc), name) for cc, name in (settings.get("cc_map") or {}).items()]
    targets += [(nm.ROW_NOTE, settings.get("note_field")), (nm.ROW_VELOCITY, settings.get("velocity_field"))]
    names = set(layout.names())
    for row, name in targets:
        if name in names:
            table[row] = layout.offset_of(name)
    return table


class _Engine:
    """Slots and buffers for :mod:`compiler_bridge.native_midi`, kept alive here."""

    def __init__(self, settings: dict[str, Any], sample_rate: float, tempo_bpm: float) -> None:
        self.slots = np.zeros(1, nm.SLOTS_DTYPE)
        self.ctx = abi.new_context()
        self.events = abi.new_events(settings["channel"] - 1)
        self.notes = np.zeros(16 * 128, np.uint8)
        self.hist = np.zeros(nm.HIST_FRAMES, np.int64)
        self.scratch = np.zeros(8, np.int64)  # 8 bytes to write from, then a jack_midi_event_t
        self.queue = np.zeros((nm.QUEUE_CAPACITY, 4), np.int32)
        self.ring = abi.ControlRing()
        self.outbox = abi.ControlRing(256)  # rows of [status, data1, data2] from MidiRuntime.send()
        self.blocks: list[_ProgramBlock] = []
        s = self.slots
        for name, array in (("ctx", self.ctx), ("events", self.events), ("notes", self.notes), ("hist", self.hist),
                            ("scratch", self.scratch), ("queue", self.queue), ("ring_header", self.ring.header),
                            ("ring_records", self.ring.records), ("outbox_header", self.outbox.header),
                            ("outbox_records", self.outbox.records)):
            s[name] = array.ctypes.data
        s["ring_capacity"] = self.ring.records.shape[0]
        s["outbox_capacity"] = self.outbox.records.shape[0]
        s["sample_rate"] = sample_rate
        s["ppqn"] = settings["ppqn"]
        s["clock_div"] = settings["ppqn"] // 24
        s["last_note_in"] = -1
        s["jump_tick"] = -1
        self.apply_settings(settings)
        s["tempo_bpm"] = s["pending_bpm"] = tempo_bpm
        s["frames_per_tick"] = sample_rate * 60.0 / (tempo_bpm * settings["ppqn"])

    @property
    def address(self) -> int:
        return self.slots.ctypes.data

    def get(self, name: str):
        return self.slots[name][0]

    def apply_settings(self, settings: dict[str, Any]) -> None:
        s = self.slots
        s["send_clock"] = int(settings["send_clock"])
        s["send_transport"] = int(settings["send_transport"])
        if s["channel"][0] != settings["channel"] - 1:
            s["release"] = 1  # notes on the old channel would never get their NoteOff
        s["channel"] = settings["channel"] - 1
        if self.blocks:
            self.blocks[-1].controls[:] = control_table(self.blocks[-1].program.layout, settings)

    def set_tempo(self, tempo_bpm: float) -> None:
        """Hand a tempo to the native side; it applies it at the next tick."""
        if tempo_bpm == self.slots["pending_bpm"][0]:
            return
        self.slots["pending_bpm"] = tempo_bpm
        self.slots["tempo_seq"] += 1  # published after the value (stores keep their order)

    def first(self, program: Program, state: np.ndarray, settings: dict[str, Any]) -> None:
        block = _ProgramBlock(program, state, np.zeros((0, 3), np.int64), settings)
        self.blocks = [block]
        self.slots["program"] = self.slots["pending"] = block.address

    def swap(self, program: Program, settings: dict[str, Any], timeout_s: float) -> bool:
        """Queue *program* for the next tick; wait up to *timeout_s* for it to play."""
        old = self.blocks[-1]
        block = _ProgramBlock(program, program.new_state(), program.layout.carry_table(old.program.layout), settings)
        self.blocks.append(block)
        self.slots["pending"] = block.address
        deadline = time.monotonic() + timeout_s
        while self.get("program") != block.address and time.monotonic() < deadline:
            time.sleep(0.001)
        applied = self.get("program") == block.address
        if applied:
            self.blocks = [block]  # the native side no longer touches the older ones
        return applied

    def state(self) -> np.ndarray:
        playing = self.get("program")
        block = next(b for b in self.blocks if b.address == playing)
        return block.state.copy()

    def stats(self) -> dict[str, Any]:
        g = self.get
        return {"notes_on": int(g("notes_on")), "events_out": int(g("events_out")),
                "events_in": int(g("events_in")), "swaps": int(g("swaps")),
                "kernel_errors": int(g("kernel_errors")), "dropped": int(g("dropped"))}

    def frame_stats(self, sample_rate: float) -> dict[str, Any]:
        """Tick lateness on the frame timeline (JACK path), in microseconds."""
        us = 1e6 / sample_rate
        total = int(self.hist.sum())
        cum = np.cumsum(self.hist)
        pct = [int(np.searchsorted(cum, q * total)) * us if total else 0.0 for q in (0.5, 0.99)]
        return {"ticks": int(self.get("ticks")), "late_ticks": int(self.get("late_ticks")),
                "jitter_p50_us": round(pct[0], 3), "jitter_p99_us": round(pct[1], 3),
                "jitter_max_us": round(int(self.get("max_late_frames")) * us, 3),
                "drift_us": round(float(self.get("drift_frames")) * us, 3)}


# --- the native JACK path ---------------------------------------------------------


def _libjack() -> ctypes.CDLL:
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


class _JackPath:
    """livehost's own JACK client; its process callback is :func:`native_midi.process`."""

    name = "jack"

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.lib = _libjack()
        status = ctypes.c_int(0)
        self.client = self.lib.jack_client_open(CLIENT_NAME.encode(), _JACK_NO_START_SERVER, ctypes.byref(status))
        if not self.client:
            raise RuntimeInitError(f"no JACK server (jack_client_open status 0x{status.value:x})")
        self.sample_rate = float(self.lib.jack_get_sample_rate(self.client))
        self.ports: dict[str, str] = {}
        self.reconnects = 0
        self._seen: set[str] = set()  # destinations connected at least once
        self.engine: _Engine | None = None

    def _register(self, short_name: str, flags: int) -> int:
        port = self.lib.jack_port_register(self.client, short_name.encode(), MIDI_TYPE, flags, 0)
        if not port:
            raise RuntimeInitError(f"cannot register JACK MIDI port {short_name!r}")
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

    def open(self, engine: _Engine) -> None:
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
            raise RuntimeInitError(f"no MIDI output port matches {target!r} "
                                   f"(available: {', '.join(self._destinations()) or 'none'})")
        if self.lib.jack_set_process_callback(self.client, nm.process.address, engine.address) != 0:
            raise RuntimeInitError("jack_set_process_callback failed")
        if self.lib.jack_activate(self.client) != 0:
            raise RuntimeInitError("jack_activate failed")
        self.check_ports()
        self._wait_cycles(2)  # a new connection takes effect at a cycle boundary: let Start arrive
        engine.slots["run_state"] = nm.STARTING

    def _wait_cycles(self, n: int, timeout_s: float = 1.0) -> None:
        """Wait until the process callback has run *n* more times."""
        target = self.engine.get("cycles") + n
        deadline = time.monotonic() + timeout_s
        while self.engine.get("cycles") < target and time.monotonic() < deadline:
            time.sleep(0.001)

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
        return self.engine.frame_stats(self.sample_rate)

    def close(self) -> None:
        """Let the callback end the notes and send Stop, then leave the graph."""
        if self.engine is not None and self.engine.get("run_state") in (nm.STARTING, nm.RUNNING):
            self.engine.slots["run_state"] = nm.STOPPING
            deadline = time.monotonic() + 2.0
            while self.engine.get("run_state") != nm.STOPPED and time.monotonic() < deadline:
                time.sleep(0.001)
        self.lib.jack_deactivate(self.client)
        self.lib.jack_client_close(self.client)


# --- the mido / python-rtmidi path -----------------------------------------------------


_STEP = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)


class _RtmidiPath:
    """mido ports over python-rtmidi, fed by a :class:`TickLoop` thread."""

    def __init__(self, settings: dict[str, Any], runtime: "MidiRuntime") -> None:
        import mido

        self.mido = mido
        self.settings = settings
        self.runtime = runtime
        self.sample_rate = 48000.0  # nominal: frames only feed ctx.block_frames here
        self.ports: dict[str, str] = {}
        self.reconnects = 0
        self.events_in = 0
        self._lost = False
        self._port_lock = threading.Lock()
        self._step = _STEP(nm.step.address)
        self.backend, self.api = self._backend(settings["backend"])
        self.name = f"rtmidi/{self.api}"
        self.out = self._open_output()
        self.inp = None
        self.loop: TickLoop | None = None
        self.engine: _Engine | None = None

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
        raise RuntimeInitError("no MIDI API works here (" + "; ".join(problems) + ")")

    def _match(self, wanted: str, names: list[str], direction: str) -> str:
        for name in names:
            if wanted in name:
                return name
        raise RuntimeInitError(f"no MIDI {direction} port matches {wanted!r} (available: {', '.join(names) or 'none'})")

    def _open_output(self):
        wanted = self.settings["output"]
        if wanted is None:
            self.ports["output"] = CLIENT_NAME
            return self.backend.open_output(CLIENT_NAME, virtual=True, client_name=CLIENT_NAME)
        name = self._match(wanted, self.backend.get_output_names(), "output")
        self.ports["output"] = name
        return self.backend.open_output(name)  # (mido makes any port with a client_name virtual)

    def open(self, engine: _Engine) -> None:
        self.engine = engine
        if self.settings["input"]:
            name = self._match(self.settings["input"], self.backend.get_input_names(), "input")
            self.inp = self.backend.open_input(name, callback=self._on_message)
            self.ports["input"] = name
        engine.slots["run_state"] = nm.STARTING
        rt = self.runtime
        self.loop = TickLoop(rt.transport, rt.clock, self.settings["ppqn"], self._on_tick, name="livehost-midi-ticks")
        self.loop.start()

    def _on_message(self, message) -> None:
        """rtmidi's input thread: queue state writes for the next tick boundary."""
        data = message.bytes()
        if len(data) >= 2:
            nm.control_in(self.engine.slots[0], data[0], data[1], data[2] if len(data) > 2 else 0)
        self.events_in += 1

    def _on_tick(self, n: int, deadline_ns: int) -> None:
        self._step(self.engine.address)  # ctypes lets the GIL go during the native call
        self._flush()

    def _flush(self) -> None:
        rows = self.engine.queue[: int(self.engine.get("queued"))]
        with self._port_lock:
            if self.out is None:
                return
            for status, data1, data2, size in rows:
                self.out.send(self.mido.Message.from_bytes([status, data1, data2][:size]))

    def check_ports(self) -> None:
        """Reopen a named output that disappeared once it is back."""
        wanted = self.settings["output"]
        if wanted is None:
            return
        present = any(wanted in n for n in self.backend.get_output_names())
        if not present and not self._lost:
            self._lost = True
            log.warning("MIDI output %r disappeared; retrying every %.1f s", wanted, RETRY_S)
        elif present and self._lost:
            with self._port_lock:
                self.out.close()
                self.out = self._open_output()
            self._lost = False
            self.reconnects += 1

    def stats(self) -> dict[str, Any]:
        return {**self.loop.stats(), "events_in": self.events_in}

    def close(self) -> None:
        if self.loop is not None:
            self.loop.stop()
        if self.engine is not None and self.engine.get("run_state") in (nm.STARTING, nm.RUNNING):
            self.engine.slots["run_state"] = nm.STOPPING
            self._step(self.engine.address)
            self._flush()
            # rtmidi's JACK API hands messages to its own process callback and
            # drops what is queued when the port closes: give it a few cycles.
            time.sleep(FLUSH_S)
        for port in (self.inp, self.out):
            if port is not None:
                port.close()


# --- the runtime ---------------------------------------------------------------------------


_OPEN: "weakref.WeakSet[MidiRuntime]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Ctrl-C or an uncaught exception in the host still ends every note."""
    for runtime in list(_OPEN):
        runtime.close()


def _jack_server_running() -> bool:
    try:
        lib = _libjack()
    except OSError:
        return False
    status = ctypes.c_int(0)
    client = lib.jack_client_open(b"livehost-probe", _JACK_NO_START_SERVER, ctypes.byref(status))
    if client:
        lib.jack_client_close(client)
    return bool(client)


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
        self.path: _JackPath | _RtmidiPath | None = None
        self.engine: _Engine | None = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self._send_lock = threading.Lock()  # the outbox has one producer at a time

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
            with self._send_lock:
                return self.engine.outbox.push(*data)

    @property
    def ports(self) -> dict[str, str]:
        """Full names of the ports this runtime opened (``output``, ``input``)."""
        return dict(self.path.ports) if self.path else {}

    def _tempo_for(self, program: Program) -> float:
        return float(self.settings["tempo_bpm"] or program.tempo_bpm)

    def _open_path(self):
        backend = self.settings["backend"]
        if backend in ("jack", "native") or backend == "auto" and _jack_server_running():
            return _JackPath(self.settings)
        return _RtmidiPath(self.settings, self)

    def _open(self, program: Program, state: np.ndarray) -> None:
        require_kernel(program, "midi")
        tempo = self._tempo_for(program)
        if tempo != self.transport.tempo_bpm:
            self.transport.set_tempo(tempo)
        self.path = self._open_path()
        self.engine = _Engine(self.settings, self.path.sample_rate, tempo)
        self.engine.first(program, state, self.settings)
        try:
            self.path.open(self.engine)
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
        self.engine.slots["jump_tick"] = int(beat * ppqn) // step * step

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
