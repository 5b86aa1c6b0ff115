"""PortAudio, reached through sounddevice's own cffi handles: devices, streams, and a fresh
PortAudio after a JACK server went away.

sounddevice is imported inside functions only: importing it initialises
PortAudio, which opens a JACK client (named ``livehost``: PortAudio is told
the name before it starts).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler_bridge.errors import DeviceError

from ..midi.jack import CLIENT_NAME, ServerWatch, libjack, physical_client
from .engine import NativeEngine, audio_callback

log = logging.getLogger("livehost.runtimes")

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


def buffer_frames(client: int) -> int:
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


class PortAudio:
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


PORTAUDIO = PortAudio()


class Stream:
    """One PortAudio stream whose callback is the native trampoline.

    Holds the cffi objects PortAudio keeps pointers into for the stream's life.
    """

    def __init__(self, sd, config: StreamConfig, engine: NativeEngine, generation: int) -> None:
        self._sd, self._lib, self._ffi = sd, sd._lib, sd._ffi
        self.generation = generation  # of the PortAudio it belongs to (see PortAudio)
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


def askable(stream: Stream) -> bool:
    """Whether PortAudio may be asked about *stream*: its own PortAudio, on a server still there."""
    return stream.generation == PORTAUDIO.generation and not PORTAUDIO.gone()


def sees(sd, hostapi: str | None) -> bool:
    """Whether PortAudio sees any device (on *hostapi*, when given)."""
    if hostapi is None:
        return len(sd.query_devices()) > 0
    return any(api["name"] == hostapi for api in sd.query_hostapis())


def shape(config: StreamConfig | None) -> tuple | None:
    """What an engine is built for: a stream with the same shape can take it over."""
    if config is None:
        return None
    return config.sample_rate, config.channels_in, config.channels_out, config.block_frames
