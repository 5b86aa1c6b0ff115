"""The audio runtime: compiled kernels played by a native PortAudio callback.

PortAudio calls :data:`runtimes.audio.engine.audio_callback` directly
(opened through sounddevice's own cffi handles), so the audio thread never
waits for the GIL: garbage collection, compiles or a busy host cannot stall
it. Python only writes requests into the engine's slots and waits for the
callback's answer at a block boundary.

sounddevice is imported inside methods only: importing it initialises
PortAudio, which opens a JACK client.

A server or device that goes away (or is not there yet at start-up) does not
end the runtime: it keeps its engine -- program and state -- and a watch
thread opens a new stream around it when the device is back (after a JACK
server has gone that takes a fresh PortAudio: see :class:`_PortAudio`).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler_bridge.errors import DeviceError, RuntimeInitError
from compiler_bridge.program import Program

from ..base import BaseRuntime, carried_to, offer, require_kernel, wait_until
from ..midi.jack import CLIENT_NAME, ServerWatch, libjack, physical_client, playback_latency_frames
from ..realtime.controls import ControlRing
from ..realtime.handover import Offer
from ..recovery import Recovery
from .engine import MAX_BLOCK_FRAMES, NAN_RUN_LIMIT, SLOW_RUN_LIMIT, NativeEngine, audio_callback

log = logging.getLogger("livehost.runtimes")

ANSWER_TIMEOUT_S = 2.0  # a running stream answers within a block or two
POLLS_PER_BLOCK = 4  # how often a waiting caller looks for the answer: few wake-ups, little delay
WATCH_S = 0.02  # how often the watch thread looks for a lost JACK server: noticed within a few blocks
STALL_S = 0.25  # callbacks standing still this long: ask PortAudio whether the stream still runs
MAX_LATENCY_S = 1.0  # an output latency beyond this (or below 0) is a wrong figure, not a latency
JACK_HOSTAPI = "JACK Audio Connection Kit"
NO_DEVICE = ("PortAudio sees no audio device: start a JACK server (`jackd -d alsa`, or "
             "`jackd --no-realtime -d dummy` without a sound card) or connect a sound card")


@dataclass(frozen=True)
class StreamConfig:
    """What :func:`resolve_stream` chose for ``Pa_OpenStream``.

    ``block_frames`` 0 means PortAudio's ``paFramesPerBufferUnspecified``:
    the callback gets the host's own buffer (the JACK period).
    """

    output_device: int
    input_device: int | None
    device_name: str
    hostapi: str  # PortAudio's name of the output device's host API
    sample_rate: float  # Hz
    block_frames: int
    channels_out: int
    channels_in: int
    output_latency_s: float
    input_latency_s: float


def device_hint(sd) -> str:
    """The device list a performer can pick a ``device`` setting from."""
    return f"available devices (set `device` to a name substring or index):\n{sd.query_devices()}"


def _latency(setting, info: dict, kind: str) -> float:
    if isinstance(setting, str):
        return float(info[f"default_{setting}_{kind}_latency"])
    return float(setting)


def resolve_stream(settings: dict[str, Any], sd, hostapi: str | None = None, jack_client: int = 0) -> StreamConfig:
    """Resolve the ``device``, rate, block and latency settings against PortAudio.

    With no ``device`` setting, *hostapi* (a host API name) picks that host
    API's default devices: a device that comes back is looked for where it was.
    On JACK (*jack_client*, a client of that server to look with) the default
    is the client that owns the physical playback (and capture) ports: the
    sound card, or PipeWire's sink, not the first client PortAudio lists:
    there every JACK client is a device, and the first may be any program's.

    Raises
    ------
    DeviceError
        When no device matches, with the device list.
    """
    device, channels_in = settings.get("device"), int(settings.get("channels_in") or 0)
    if not len(sd.query_devices()):
        raise DeviceError(NO_DEVICE)
    out_device = in_device = device
    if device is None and hostapi is not None:
        api = next((a for a in sd.query_hostapis() if a["name"] == hostapi), None)
        if api is None:
            raise DeviceError(f"PortAudio sees no {hostapi} device")
        out_device, in_device = api["default_output_device"], api["default_input_device"]
    if device is None and jack_client:
        out_device = _jack_device(sd, physical_client(jack_client), out_device)
        in_device = _jack_device(sd, physical_client(jack_client, playback=False), in_device)
    try:
        out_info = sd.query_devices(out_device, "output")
        in_info = sd.query_devices(in_device, "input") if channels_in else None
    except (ValueError, sd.PortAudioError) as exc:
        raise DeviceError(f"{exc}; {device_hint(sd)}") from None
    sample_rate = float(settings.get("sample_rate") or out_info["default_samplerate"])
    return StreamConfig(
        output_device=int(out_info["index"]),
        input_device=int(in_info["index"]) if in_info else None,
        device_name=str(out_info["name"]),
        hostapi=str(sd.query_hostapis(out_info["hostapi"])["name"]),
        sample_rate=sample_rate,
        block_frames=int(settings.get("block_frames") or 0),
        channels_out=int(settings.get("channels_out") or 2),
        channels_in=channels_in,
        output_latency_s=_latency(settings.get("latency", "low"), out_info, "output"),
        input_latency_s=_latency(settings.get("latency", "low"), in_info, "input") if in_info else 0.0,
    )


def _jack_device(sd, client: str | None, fallback):
    """The index of PortAudio's JACK device named *client*, else *fallback*."""
    for api in sd.query_hostapis():
        if api["name"] == JACK_HOSTAPI:
            for index in api["devices"]:
                if client is not None and sd.query_devices(index)["name"] == client:
                    return index
    return fallback


# PortAudio's JACK host API keeps the pointer it is given: the name lives as long as the process.
_CLIENT_NAME = ctypes.create_string_buffer(CLIENT_NAME.encode())


def _name_client(library: str | None):
    """Have the PortAudio in *library* open its JACK client as ``livehost`` (before it initialises),
    as the MIDI runtime's is: one name on the graph, not ``PortAudio``. Returns that library
    (ctypes), to ask for the name the server gave (``livehost-01`` beside another ``livehost``),
    or None for a PortAudio without JACK."""
    if library is None:
        return None
    try:
        lib = ctypes.CDLL(library)
        lib.PaJack_SetClientName(_CLIENT_NAME)
        lib.PaJack_GetClientName.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    except (OSError, AttributeError):
        return None
    return lib


def _buffer_frames(client: int) -> int:
    return int(libjack().jack_get_buffer_size(client)) if client else 0


def _loaded_file(prefix: str) -> str | None:
    """The file of the loaded shared library whose name starts with *prefix* (Linux), or None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]).name.startswith(prefix):
            return fields[5]
    return None


def _load_copy(ffi, library: str | None):
    """Load another instance of *library*: the dynamic loader keeps one per file, so a copy."""
    if library is None:
        raise DeviceError("cannot load a fresh PortAudio here (no /proc/self/maps)")
    problems = []
    for folder in (tempfile.gettempdir(), Path.home() / ".cache"):
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix="livehost-portaudio-", suffix=".so") as copy:
                shutil.copyfile(library, copy.name)
                lib = ffi.dlopen(copy.name)  # the mapping outlives the file
                return lib, _name_client(copy.name)  # (the same file: the same instance)
        except OSError as exc:  # (a folder mounted noexec, for one)
            problems.append(str(exc))
    raise DeviceError("cannot load a fresh PortAudio: " + "; ".join(problems))


class _PortAudio:
    """This process's PortAudio (through sounddevice), and whether the JACK server it joined is there.

    PortAudio keeps its JACK client to itself. Once that server has gone,
    nothing of that PortAudio may be called again: ``Pa_Terminate`` first
    waits ten minutes for a stream that was running, then asserts on the
    dead client (aborting the process), and libjack frees the dead client at
    the process's next client open anyway. So that PortAudio is retired --
    left loaded, never terminated, by sounddevice's exit handler neither --
    and a fresh copy of the library sees the next server. A PortAudio that
    has not joined a JACK server is simply terminated and initialised again
    to look for devices that appeared since.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._sd = None
        self._library: str | None = None  # the file sounddevice loaded PortAudio from
        self._joined = False  # this PortAudio has a client on a JACK server
        self._watch: ServerWatch | None = None  # ... that tells when that server goes
        self._retired = False
        self._pa_jack = None  # the same PortAudio through ctypes, for its JACK host API's own calls
        self.generation = 0  # bumped whenever PortAudio is initialised again: older streams are not its

    def get(self):
        """sounddevice, on a PortAudio that may be used."""
        with self._lock:
            if self._sd is None:
                self._pa_jack = _name_client(ctypes.util.find_library("portaudio"))  # what sounddevice loads
                import sounddevice as sd

                self._sd, self._library = sd, _loaded_file("libportaudio")
                atexit.register(self._at_exit)  # runs before sounddevice's own exit handler
                self._watch_server()
            elif self._retired:
                self._sd._lib, self._pa_jack = _load_copy(self._sd._ffi, self._library)
                self._sd._initialize()
                self._retired = False
                self.generation += 1
                self._watch_server()
            return self._sd

    def gone(self) -> bool:
        """Whether the JACK server this PortAudio joined has gone."""
        return self._joined and (self._watch is None or bool(self._watch.gone))

    def look_again(self) -> None:
        """Initialise PortAudio again to see devices (or a JACK server) that appeared since.

        Only while no stream of this PortAudio plays: terminating closes them all.
        """
        with self._lock:
            if self._retired or self.gone():
                self.retire()
            else:
                if self._watch is not None:
                    self._watch.close()
                if self._sd._initialized:
                    self._sd._terminate()
                self._sd._initialize()
                self.generation += 1
                self._watch_server()
        self.get()

    def retire(self) -> None:
        """Never call this PortAudio again (see the class docstring)."""
        with self._lock:
            self._retired, self._joined, self._watch = True, False, None
            self._sd._initialized = 0  # so sounddevice's exit handler leaves it alone

    def client_name(self) -> str:
        """The name of this PortAudio's JACK client."""
        name = ctypes.c_char_p()
        if self._pa_jack is None or self._pa_jack.PaJack_GetClientName(ctypes.byref(name)) != 0 or not name.value:
            return CLIENT_NAME
        return name.value.decode()

    def jack_client(self) -> int:
        """A client of the JACK server this PortAudio joined, to look at the graph with; 0 when none."""
        watch = self._watch
        return watch.client if watch is not None and not watch.gone else 0

    def _watch_server(self) -> None:
        self._joined = any(api["name"] == JACK_HOSTAPI for api in self._sd.query_hostapis())
        self._watch = None
        if self._joined:
            try:
                self._watch = ServerWatch()
            except DeviceError:  # gone already: gone() says so
                pass

    def _at_exit(self) -> None:
        with self._lock:
            if self.gone():
                self.retire()


_PORTAUDIO = _PortAudio()


class _Stream:
    """One PortAudio stream whose callback is the native trampoline.

    Holds the cffi objects PortAudio keeps pointers into for the stream's life.
    """

    def __init__(self, sd, config: StreamConfig, engine: NativeEngine, generation: int) -> None:
        self._sd, self._lib, self._ffi = sd, sd._lib, sd._ffi
        self.generation = generation  # of the PortAudio it belongs to (see _PortAudio)
        self._ptr = self._ffi.new("PaStream**")
        self._params = [self._parameters(config.output_device, config.channels_out, config.output_latency_s)]
        if config.input_device is not None:
            self._params.append(self._parameters(config.input_device, config.channels_in, config.input_latency_s))
        self._callback = self._ffi.cast("PaStreamCallback *", audio_callback.address)
        self._userdata = self._ffi.cast("void *", engine.address)
        self._check(self._lib.Pa_OpenStream(
            self._ptr, self._params[1] if len(self._params) > 1 else self._ffi.NULL, self._params[0],
            config.sample_rate, config.block_frames, self._lib.paClipOff | self._lib.paDitherOff,
            self._callback, self._userdata), config)
        self.open = True

    def _parameters(self, device: int, channels: int, latency_s: float):
        return self._ffi.new("PaStreamParameters*", {
            "device": device, "channelCount": channels, "sampleFormat": self._lib.paFloat32,
            "suggestedLatency": latency_s, "hostApiSpecificStreamInfo": self._ffi.NULL})

    def _check(self, err: int, config: StreamConfig | None = None) -> None:
        """Every PortAudio call's result goes through here: an error becomes a
        DeviceError with PortAudio's code and text (and the host API's)."""
        if err >= 0:
            return
        reason = self._ffi.string(self._lib.Pa_GetErrorText(err)).decode(errors="replace")
        if err == self._lib.paUnanticipatedHostError:
            info = self._lib.Pa_GetLastHostErrorInfo()
            reason += f": {self._ffi.string(info.errorText).decode(errors='replace')}"
        where = ""
        if config is not None:
            block = config.block_frames or "device's"
            where = (f" (device {config.device_name!r}, {config.sample_rate:g} Hz, {block} frames, "
                     f"{config.channels_out} out / {config.channels_in} in)")
        raise DeviceError(f"PortAudio error {err}: {reason}{where}; {device_hint(self._sd)}", code=err)

    def start(self) -> None:
        self._check(self._lib.Pa_StartStream(self._ptr[0]))

    def active(self) -> bool:
        """False once the host API stopped it: ours never stops itself, so the device (or server) went."""
        return self._lib.Pa_IsStreamActive(self._ptr[0]) == 1

    def latency_s(self) -> float:
        return float(self._lib.Pa_GetStreamInfo(self._ptr[0]).outputLatency)

    def close(self) -> bool:
        """Stop and close; True when PortAudio will never call the callback again."""
        if not self.open:
            return True
        stopped = self._lib.Pa_StopStream(self._ptr[0])
        if stopped < 0 and self._lib.Pa_IsStreamStopped(self._ptr[0]) != 1:
            stopped = self._lib.Pa_AbortStream(self._ptr[0])
        closed = self._lib.Pa_CloseStream(self._ptr[0])
        self.open = closed < 0
        if closed < 0:
            log.error("audio: Pa_CloseStream failed (%d); keeping its buffers alive", closed)
        return not self.open


class AudioRuntime(BaseRuntime):
    """Plays a program's ``audio`` kernel on a PortAudio device, GIL-free.

    Settings: ``device``, ``sample_rate``, ``block_frames``, ``channels_out``,
    ``channels_in``, ``latency``, ``crossfade_ms`` (see
    :data:`compiler_bridge.settings.AUDIO`). :attr:`controls` writes state
    fields at the next block boundary:
    ``runtime.controls.push(*program.layout.target("freq_hz"), 660.0)``.
    """

    id = "audio"

    def __init__(self, settings: dict[str, Any], **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.config: StreamConfig | None = None
        self._engine: NativeEngine | None = None
        self._stream: _Stream | None = None
        self._latency_ns = 0  # the stream's output latency: what the kernels' beat is ahead of the callback
        self._graveyard: list[tuple[_Stream, NativeEngine]] = []  # streams PortAudio must not be asked to close
        self._held: tuple[Program, np.ndarray] | None = None  # what plays once there is a device
        self._deferred: Program | None = None  # loaded while the device was away
        self._recovery = Recovery(self.id)
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self._load_mark = (0, 0)  # (kernel_ns, frames) at the last stats()
        self._faults_seen = 0  # the engine's watchdog count already reported
        self._stats_lock = threading.Lock()  # stats() may be called from several threads
        self._poll_s = 0.001  # set from the block length once the stream is open
        self._faded = False  # fade_out() ran: silent, the kernel no longer runs, the stream still open
        self._latency_warned = False

    # --- lifecycle ---

    def _open(self, program: Program, state: np.ndarray) -> None:
        require_kernel(program, "audio")
        self._held = (program, np.ascontiguousarray(state))
        try:
            self._connect()
        except DeviceError as exc:
            if len(_PORTAUDIO.get().query_devices()):
                raise  # a setting no device here satisfies: the performer's to fix, not to wait for
            self._recovery.lose("JACK", str(exc))
        self._watch = threading.Thread(target=self._watch_loop, name="livehost-audio-watch", daemon=True)
        self._watch.start()

    def _connect(self) -> None:
        """Open a stream and play on it: the held program, or the engine that played on a lost device."""
        hostapi = self.config.hostapi if self.config else None  # where a device that played was
        sd = _PORTAUDIO.get()
        if not _sees(sd, hostapi):
            _PORTAUDIO.look_again()  # a JACK server started after PortAudio looked, for one
            sd = _PORTAUDIO.get()
        config = resolve_stream(self.settings, sd, hostapi, _PORTAUDIO.jack_client())
        engine, seq, gate_s = self._engine, None, 0.0
        if engine is None and self.start_at_beat is not None:  # the first program waits for its beat
            gate_s = max(self.transport.time_at(self.start_at_beat) - self.transport.clock.now_ns(), 0) / 1e9
        if engine is None or _shape(config) != _shape(self.config):
            engine, seq = self._new_engine(config)
        stream = _Stream(sd, config, engine, _PORTAUDIO.generation)
        self._latency_ns = round(self._output_latency_s(stream, config) * 1e9)
        self._publish_transport(engine)
        block_s = (config.block_frames or 256) / config.sample_rate
        poll_s = max(block_s, self._latency_ns / 2e9) / POLLS_PER_BLOCK
        try:
            stream.start()
            if seq is not None:
                answered = self._answered(stream, lambda: engine.acked("swap", seq), poll_s, extra_s=gate_s)
            else:  # the same engine goes on where it stopped
                calls = int(engine.slots[0]["callbacks"])
                answered = self._answered(stream, lambda: engine.slots[0]["callbacks"] > calls, poll_s)
            if not answered:
                raise RuntimeInitError("audio: the stream stopped calling back; could not start playing "
                                       "(is the JACK server or the device still there?)")
        except RuntimeInitError:
            self._release(stream, engine)
            raise
        self.config, self._engine, self._stream, self._poll_s, self._held = config, engine, stream, poll_s, None
        self.start_at_beat = None  # (a stream opened again later plays at once)
        log.info("audio: playing at %g Hz, %s frames per block, output latency %.2f ms (the kernels' beat is "
                 "that far ahead of the callback)", config.sample_rate, config.block_frames or "any",
                 self._latency_ns / 1e6)

    def _output_latency_s(self, stream: _Stream, config: StreamConfig) -> float:
        """How far ahead of the callback its output is heard: PortAudio's figure (on JACK, our port's
        playback latency plus one cycle, read as the stream opens). A figure that is negative or over
        MAX_LATENCY_S cannot be (PipeWire's JACK gave PortAudio 89,478 s): it is logged once and
        replaced by JACK's own (the same sum, read from the port's latency range), else by one block."""
        latency_s = stream.latency_s()
        if 0.0 <= latency_s <= MAX_LATENCY_S:
            return latency_s
        client = _PORTAUDIO.jack_client()
        frames = None
        if config.hostapi == JACK_HOSTAPI and client:
            frames = playback_latency_frames(client, f"{_PORTAUDIO.client_name()}:out_0")
        if frames is not None and frames / config.sample_rate <= MAX_LATENCY_S:
            instead, source = frames / config.sample_rate, "JACK's port latency"
        else:
            instead = (config.block_frames or _buffer_frames(client) or 256) / config.sample_rate
            source = "one block"
        if not self._latency_warned:
            self._latency_warned = True
            log.warning("audio: PortAudio gives an output latency of %.2f ms, which cannot be: taking %s "
                        "(%.2f ms) instead", latency_s * 1e3, source, instead * 1e3)
        return instead

    def _new_engine(self, config: StreamConfig) -> tuple[NativeEngine, int]:
        """An engine for *config*, asked to play the held program (or the last engine's) from its state."""
        engine = NativeEngine(config.sample_rate, config.channels_in, config.channels_out,
                              config.block_frames or MAX_BLOCK_FRAMES, float(self.settings["crossfade_ms"]))
        self._publish_transport(engine)
        if self._engine is None and self.start_at_beat is not None:
            engine.start_on_beat(self.start_at_beat)
        program, state = self._held if self._engine is None else self._engine.playing()
        seq = engine.request_swap(Offer(program, program.kernels["audio"], np.array(state, copy=True),
                                        program.layout))  # (at once: it goes on where it was)
        return engine, seq

    def _load(self, program: Program) -> None:
        require_kernel(program, "audio")
        if self._stream is not None and self._lost(self._stream):
            self._lose()  # (before the watch thread saw it)
        if self._stream is not None:
            self._swap(program)
            return
        if self._engine is None:  # never had a device: carry the held state over
            old_program, old_state = self._held
            self._held = (program, program.layout.carry(old_program.layout, old_state))
        else:
            self._deferred = program
        log.info("audio: program %s plays when %s is back", program.source_hash, self._recovery.waiting_for)

    def _swap(self, program: Program) -> None:
        """Hand *program* to the callback and wait for its next block: it takes it there, or
        (on its beat or bar) has seen it there and takes it at that frame, without anyone waiting."""
        engine = self._engine
        self._publish_transport(engine)
        offered = offer(program, "audio")
        seq = engine.request_swap(offered)
        if not self._answered(self._stream, lambda: engine.handover.answered(seq, offered.every_beats)):
            raise RuntimeInitError("audio: the stream stopped calling back; could not swap programs "
                                   "(is the JACK server or the device still there?)")
        engine.release_finished()

    def _update_settings(self, settings: dict[str, Any]) -> None:
        if self._engine is not None:
            self._engine.set_crossfade_ms(float(settings["crossfade_ms"]))
            self._publish_transport(self._engine)

    def _tempo_changed(self) -> None:
        if self._engine is not None:
            self._publish_transport(self._engine)

    def _controls(self):
        return self._engine.controls if self._engine is not None else None

    def _snapshot(self) -> np.ndarray:
        engine = self._engine
        if engine is None:
            return self._held[1].copy()
        if self._stream is not None and not self._faded:
            seq = engine.request_snapshot()
            if self._answered(self._stream, lambda: engine.acked("snap", seq)):
                copied = engine.snapshot(seq)
                if copied is not None:
                    return carried_to(self.program, *copied)
        # faded out, or no answer: no stream calls back, nothing writes the state now
        program, state = engine.playing()
        return carried_to(self.program, program, np.array(state, copy=True))

    def _playing_program(self) -> Program | None:
        playing = self._engine.playing() if self._engine is not None else None
        return playing[0] if playing is not None else self.program

    def close(self) -> None:
        self._stop.set()  # an attempt to get the device back gives up at once
        super().close()

    def fade_out(self) -> bool:
        """Fade out and stop running the kernel (its state is final), keeping the stream open
        and silent until :meth:`close`: closing a PortAudio stream takes about 25 ms, which a
        switch to another runtime need not wait for. False when nothing plays."""
        with self._lock:
            stream, engine = self._stream, self._engine
            if self.closed or not self.started or self._faded or stream is None or self._lost(stream):
                return False
            seq = engine.request_close()
            if not self._answered(stream, lambda: engine.acked("close", seq)):
                return False  # close() tries again, and says so
            self._faded = True
            self._stop.set()  # the watch thread ends: the stream is left as it is until close()
        if self._watch is not None:
            self._watch.join()
        return True

    def _close(self) -> None:
        if self._watch is not None:
            self._watch.join()
        engine, stream = self._engine, self._stream
        if stream is None:
            return
        if not self._lost(stream) and not self._faded:
            seq = engine.request_close()
            if not self._answered(stream, lambda: engine.acked("close", seq)):
                log.warning("audio: the stream did not fade out in time; closing anyway")
        self._stream = None
        self._release(stream, engine)

    @property
    def controls(self) -> ControlRing:
        """State writes applied at the next block boundary (see the class docstring)."""
        if self._engine is None:
            raise RuntimeInitError("audio: controls of a runtime that is not running")
        return self._engine.controls

    # --- a lost device ---

    def _watch_loop(self) -> None:
        """Notice a lost device; get it back.

        A JACK server that goes away is seen at once (its watch client's
        flag). PortAudio is asked whether the stream still runs (another
        host API's device gone, our client thrown out of the graph) only when
        the callback count stood still for STALL_S: measured here, asking it
        every few blocks made the GIL stress test show xruns. close() joins
        this thread before it closes the stream, so looking needs no lock;
        acting takes it, never waiting for it.
        """
        calls, since = -1, time.monotonic()
        while not self._stop.wait(WATCH_S):
            stream, lost = self._stream, False
            if stream is not None:
                lost = not _askable(stream)
                now, count = time.monotonic(), int(self._engine.slots[0]["callbacks"])
                if count != calls:
                    calls, since = count, now
                elif not lost and now - since >= STALL_S:
                    since = now
                    lost = not stream.active()
            if not (lost or self._recovery.due()):
                continue
            if not self._lock.acquire(blocking=False):
                continue  # a load or close is under way: look again next time
            try:
                if self.closed:
                    return
                if self._stream is not None and self._lost(self._stream):
                    self._lose()
                if self._recovery.due():
                    self._retry()
            finally:
                self._lock.release()

    def _lost(self, stream: _Stream) -> bool:
        return not _askable(stream) or not stream.active()

    def _lose(self) -> None:
        if _PORTAUDIO.gone():
            why = "the JACK server went away"
        else:
            why = f"the stream on {self.config.device_name!r} stopped"
        self._graveyard.append((self._stream, self._engine))  # PortAudio is never asked about it again
        self._stream = None
        _PORTAUDIO.retire()
        waiting_for = "JACK" if self.config.hostapi == JACK_HOSTAPI else repr(self.config.device_name)
        self._recovery.lose(waiting_for, why)

    def _retry(self) -> None:
        try:
            self._connect()
        except DeviceError as exc:
            self._recovery.failed(str(exc).split(";")[0])  # (without the device list)
            return
        except RuntimeInitError as exc:
            self._recovery.failed(str(exc))
            return
        self._recovery.resumed()
        if self._deferred is not None:
            program, self._deferred = self._deferred, None
            try:
                self._swap(program)
            except RuntimeInitError as exc:
                log.error("audio: could not swap program %s in after the device came back: %s",
                          program.source_hash, exc)

    def _release(self, stream: _Stream, engine: NativeEngine) -> None:
        """Stop and close *stream* unless its PortAudio must not be asked; keep what it may still call."""
        if not _askable(stream) or not stream.close():
            self._graveyard.append((stream, engine))

    # --- statistics ---

    def liveness(self) -> tuple[int, bool, bool] | None:
        engine = self._engine
        return engine.liveness() if engine is not None else None

    def _new_faults(self) -> tuple[list[str], Program | None]:
        if self._engine is None:
            return [], None
        count, kind, bad, instead = self._engine.fault()
        if count == self._faults_seen:
            return [], None
        self._faults_seen = count
        what = {"nan": f"wrote NaN/inf for {NAN_RUN_LIMIT} blocks in a row",
                "slow": f"took longer than its block {SLOW_RUN_LIMIT} times in a row"}[kind]
        now = f"playing {instead.source_hash} (the program before it)" if instead else "silent until the next save"
        line = f"Kernel fault: program {bad.source_hash if bad else '?'} {what}; {now}"
        return [line], instead

    def _stats(self) -> dict[str, Any]:
        """Reads the engine's counters; writes nothing the callback reads."""
        stats = self._recovery.stats()
        if self._engine is None:
            return stats
        stats.update(self._engine.stats())
        kernel_ns, frames = stats.pop("kernel_ns"), stats["frames"]
        with self._stats_lock:
            d_kernel, d_frames = kernel_ns - self._load_mark[0], frames - self._load_mark[1]
            self._load_mark = (kernel_ns, frames)
        block_ns_total = d_frames * 1e9 / self.config.sample_rate
        stats["load"] = d_kernel / block_ns_total if block_ns_total else 0.0
        stats["sample_rate"] = self.config.sample_rate
        stats["output_latency_ms"] = self._latency_ns / 1e6
        return stats

    # --- helpers ---

    def _publish_transport(self, engine: NativeEngine) -> None:
        """The transport for the callback: a block computed at time t is heard at t plus the
        stream's output latency, so it gets the beat of that time (in step with Link peers)."""
        now_ns = time.monotonic_ns()
        heard_ns = self.transport.clock.now_ns() + self._latency_ns
        engine.set_transport(self.transport.tempo_bpm, self.transport.beat_at(heard_ns), now_ns)

    def _answered(self, stream: _Stream, answer, poll_s: float | None = None, extra_s: float = 0.0) -> bool:
        """Wait (off the audio thread) until *answer()* holds.

        Not for a stream that is lost, nor while close() waits for an attempt
        to get the device back (it has set ``_stop``, not yet ``closed``).
        """
        def done() -> bool:
            return answer() or self._stop.is_set() and not self.closed or not _askable(stream)

        wait_until(done, ANSWER_TIMEOUT_S + float(self.settings["crossfade_ms"]) / 1000.0 + extra_s,
                   poll_s or self._poll_s)
        return answer()


def _askable(stream: _Stream) -> bool:
    """Whether PortAudio may be asked about *stream*: its own PortAudio, on a server still there."""
    return stream.generation == _PORTAUDIO.generation and not _PORTAUDIO.gone()


def _sees(sd, hostapi: str | None) -> bool:
    """Whether PortAudio sees any device (on *hostapi*, when given)."""
    if hostapi is None:
        return len(sd.query_devices()) > 0
    return any(api["name"] == hostapi for api in sd.query_hostapis())


def _shape(config: StreamConfig | None) -> tuple | None:
    """What an engine is built for: a stream with the same shape can take it over."""
    if config is None:
        return None
    return config.sample_rate, config.channels_in, config.channels_out, config.block_frames
