"""The audio runtime: compiled kernels played by a native PortAudio callback.

PortAudio calls :data:`runtimes.audio.engine.audio_callback` directly
(opened through sounddevice's own cffi handles), so the audio thread never
waits for the GIL: garbage collection, compiles or a busy host cannot stall
it. Python only writes requests into the engine's slots and waits for the
callback's answer at a block boundary.

sounddevice is imported inside methods only: importing it initialises
PortAudio, which opens a JACK client.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler_bridge.errors import DeviceError, RuntimeInitError
from compiler_bridge.program import Program

from ..base import BaseRuntime, require_kernel, wait_until
from ..realtime.controls import ControlRing
from .engine import MAX_BLOCK_FRAMES, NativeEngine, audio_callback

log = logging.getLogger("livehost.runtimes")

ANSWER_TIMEOUT_S = 2.0  # a running stream answers within a block or two
POLLS_PER_BLOCK = 4  # how often a waiting caller looks for the answer: few wake-ups, little delay


@dataclass(frozen=True)
class StreamConfig:
    """What :func:`resolve_stream` chose for ``Pa_OpenStream``.

    ``block_frames`` 0 means PortAudio's ``paFramesPerBufferUnspecified``:
    the callback gets the host's own buffer (the JACK period).
    """

    output_device: int
    input_device: int | None
    device_name: str
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


def _rescan_if_empty(sd) -> None:
    """PortAudio lists devices once, when it initialises: if it saw none (the
    JACK server started after this process), look again before giving up."""
    if len(sd.query_devices()):
        return
    sd._terminate()
    sd._initialize()
    if not len(sd.query_devices()):
        raise DeviceError("PortAudio sees no audio device: start a JACK server (`jackd -d alsa`, or "
                               "`jackd --no-realtime -d dummy` without a sound card) or connect a sound card")


def resolve_stream(settings: dict[str, Any], sd) -> StreamConfig:
    """Resolve the ``device``, rate, block and latency settings against PortAudio.

    Raises
    ------
    DeviceError
        When no device matches, with the device list.
    """
    device, channels_in = settings.get("device"), int(settings.get("channels_in") or 0)
    _rescan_if_empty(sd)
    try:
        out_info = sd.query_devices(device, "output")
        in_info = sd.query_devices(device, "input") if channels_in else None
    except (ValueError, sd.PortAudioError) as exc:
        raise DeviceError(f"{exc}; {device_hint(sd)}") from None
    sample_rate = float(settings.get("sample_rate") or out_info["default_samplerate"])
    return StreamConfig(
        output_device=int(out_info["index"]),
        input_device=int(in_info["index"]) if in_info else None,
        device_name=str(out_info["name"]),
        sample_rate=sample_rate,
        block_frames=int(settings.get("block_frames") or 0),
        channels_out=int(settings.get("channels_out") or 2),
        channels_in=channels_in,
        output_latency_s=_latency(settings.get("latency", "low"), out_info, "output"),
        input_latency_s=_latency(settings.get("latency", "low"), in_info, "input") if in_info else 0.0,
    )


class _Stream:
    """One PortAudio stream whose callback is the native trampoline.

    Holds the cffi objects PortAudio keeps pointers into for the stream's life.
    """

    def __init__(self, sd, config: StreamConfig, engine: NativeEngine) -> None:
        self._sd, self._lib, self._ffi = sd, sd._lib, sd._ffi
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
        self._graveyard: list[tuple[_Stream, NativeEngine]] = []  # streams PortAudio failed to close
        self._load_mark = (0, 0)  # (kernel_ns, frames) at the last stats()
        self._stats_lock = threading.Lock()  # stats() may be called from several threads
        self._poll_s = 0.001  # set from the block length once the stream is open

    # --- lifecycle ---

    def _open(self, program: Program, state: np.ndarray) -> None:
        import sounddevice as sd

        require_kernel(program, "audio")
        config = resolve_stream(self.settings, sd)
        engine = NativeEngine(config.sample_rate, config.channels_in, config.channels_out,
                              config.block_frames or MAX_BLOCK_FRAMES, float(self.settings["crossfade_ms"]))
        self._publish_transport(engine)
        seq = engine.request_swap(program, np.ascontiguousarray(state), np.zeros((0, 3), np.int64))
        stream = _Stream(sd, config, engine)
        self.config, self._engine, self._stream = config, engine, stream
        block_s = (config.block_frames or 256) / config.sample_rate
        self._poll_s = max(block_s, stream.latency_s() / 2) / POLLS_PER_BLOCK
        try:
            stream.start()
            self._wait("swap", seq, "start playing")
        except RuntimeInitError:
            if not stream.close():
                self._graveyard.append((stream, engine))  # PortAudio may still call into them
            raise

    def _load(self, program: Program) -> None:
        require_kernel(program, "audio")
        engine = self._engine
        self._publish_transport(engine)
        state = program.layout.defaults()
        seq = engine.request_swap(program, state, program.layout.carry_table(self.program.layout))
        self._wait("swap", seq, "swap programs")
        engine.release_finished()

    def _update_settings(self, settings: dict[str, Any]) -> None:
        self._engine.set_crossfade_ms(float(settings["crossfade_ms"]))
        self._publish_transport(self._engine)

    def _snapshot(self) -> np.ndarray:
        engine = self._engine
        dst = np.zeros(1, self.program.layout.dtype)
        if self._stream is not None and self._stream.open:
            seq = engine.request_snapshot(dst)
            if self._answered("snap", seq):
                return dst
        newest = engine.newest()  # no answer: the stream is stopped, nothing writes the state now
        if newest is None:
            raise RuntimeInitError("audio: nothing is playing")
        return newest[1].copy()

    def _close(self) -> None:
        engine, stream = self._engine, self._stream
        if stream is None:
            return
        seq = engine.request_close()
        if not self._answered("close", seq):
            log.warning("audio: the stream did not fade out in time; closing anyway")
        if stream.close():
            self._stream = None  # PortAudio holds no pointer into it any more
        else:
            self._graveyard.append((stream, engine))

    @property
    def controls(self) -> ControlRing:
        """State writes applied at the next block boundary (see the class docstring)."""
        if self._engine is None:
            raise RuntimeInitError("audio: controls of a runtime that is not running")
        return self._engine.controls

    # --- statistics ---

    def _stats(self) -> dict[str, Any]:
        """Reads the engine's counters; writes nothing the callback reads."""
        if self._engine is None:
            return {}
        stats = self._engine.stats()
        kernel_ns, frames = stats.pop("kernel_ns"), stats["frames"]
        with self._stats_lock:
            d_kernel, d_frames = kernel_ns - self._load_mark[0], frames - self._load_mark[1]
            self._load_mark = (kernel_ns, frames)
        block_ns_total = d_frames * 1e9 / self.config.sample_rate
        stats["load"] = d_kernel / block_ns_total if block_ns_total else 0.0
        stats["sample_rate"] = self.config.sample_rate
        return stats

    # --- helpers ---

    def _publish_transport(self, engine: NativeEngine) -> None:
        now_ns = time.monotonic_ns()
        engine.set_transport(self.transport.tempo_bpm, self.transport.beat_at(self.transport.clock.now_ns()), now_ns)

    def _answered(self, kind: str, seq: int) -> bool:
        """Wait (off the audio thread) until the callback answers request *seq*."""
        timeout_s = ANSWER_TIMEOUT_S + float(self.settings["crossfade_ms"]) / 1000.0
        return wait_until(lambda: self._engine.acked(kind, seq), timeout_s, self._poll_s)

    def _wait(self, kind: str, seq: int, what: str) -> None:
        if not self._answered(kind, seq):
            raise RuntimeInitError(f"audio: the stream stopped calling back; could not {what} "
                                   f"(is the JACK server or the device still there?)")
