"""The audio runtime: compiled kernels played by a native PortAudio callback.

PortAudio calls :data:`runtimes.audio.engine.audio_callback` directly
(opened through sounddevice's own cffi handles), so the audio thread never
waits for the GIL: garbage collection, compiles or a busy host cannot stall
it. Python only writes requests into the engine's slots and waits for the
callback's answer at a block boundary.

PortAudio itself (devices, streams, a fresh PortAudio after a lost JACK
server) is :mod:`.portaudio`.

A server or device that goes away (or is not there yet at start-up) does not
end the runtime: it keeps its engine -- program and state -- and a watch
thread opens a new stream around it when the device is back (after a JACK
server has gone that takes a fresh PortAudio: see :class:`.portaudio.PortAudio`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from compiler_bridge.errors import DeviceError, RuntimeInitError
from compiler_bridge.program import Program

from ..base import BaseRuntime, carried_to, offer, require_kernel, wait_until
from ..midi.jack import playback_latency_frames
from ..realtime.controls import ControlRing
from ..recovery import Recovery
from .engine import MAX_BLOCK_FRAMES, NAN_RUN_LIMIT, SLOW_RUN_LIMIT, NativeEngine
from .midi_input import MidiInput
from .portaudio import (JACK_HOSTAPI, PORTAUDIO, Stream, StreamConfig, askable, buffer_frames, resolve_stream, sees,
                        shape)

log = logging.getLogger("livehost.runtimes")

ANSWER_TIMEOUT_S = 2.0  # a running stream answers within a block or two
POLLS_PER_BLOCK = 4  # how often a waiting caller looks for the answer: few wake-ups, little delay
WATCH_S = 0.02  # how often the watch thread looks for a lost JACK server: noticed within a few blocks
STALL_S = 0.25  # callbacks standing still this long: ask PortAudio whether the stream still runs
MAX_LATENCY_S = 1.0  # an output latency beyond this (or below 0) is a wrong figure, not a latency


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
        self._stream: Stream | None = None
        self._latency_ns = 0  # the stream's output latency: what the kernels' beat is ahead of the callback
        self._graveyard: list[tuple[Stream, NativeEngine]] = []  # streams PortAudio must not be asked to close
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
        self._keys: MidiInput | None = None  # midi_input: an rtmidi port feeding the engine playing now

    # --- lifecycle ---

    def _open(self, program: Program, state: np.ndarray) -> None:
        require_kernel(program, "audio")
        self._held = (program, np.ascontiguousarray(state))
        try:
            self._connect()
        except DeviceError as exc:
            if len(PORTAUDIO.get().query_devices()):
                raise  # a setting no device here satisfies: the performer's to fix, not to wait for
            self._recovery.lose("JACK", str(exc))
        if self.settings.get("midi_input"):  # (a port that is not there is the performer's to fix)
            try:
                self._keys = MidiInput(self.settings["midi_input"], lambda: self._engine and self._engine.keys)
            except DeviceError:
                self._close()
                raise
        self._watch = threading.Thread(target=self._watch_loop, name="livehost-audio-watch", daemon=True)
        self._watch.start()

    def _connect(self) -> None:
        """Open a stream and play on it: the held program, or the engine that played on a lost device."""
        hostapi = self.config.hostapi if self.config else None  # where a device that played was
        sd = PORTAUDIO.get()
        if not sees(sd, hostapi):
            PORTAUDIO.look_again()  # a JACK server started after PortAudio looked, for one
            sd = PORTAUDIO.get()
        config = resolve_stream(self.settings, sd, hostapi, PORTAUDIO.jack_client())
        engine, seq, gate_s = self._engine, None, 0.0
        if engine is None and self.start_at_beat is not None:  # the first program waits for its beat
            gate_s = max(self.transport.time_at(self.start_at_beat) - self.transport.clock.now_ns(), 0) / 1e9
        if engine is None or shape(config) != shape(self.config):
            engine, seq = self._new_engine(config)
        stream = Stream(sd, config, engine, PORTAUDIO.generation)
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

    def _output_latency_s(self, stream: Stream, config: StreamConfig) -> float:
        """How far ahead of the callback its output is heard: PortAudio's figure (on JACK, our port's
        playback latency plus one cycle, read as the stream opens). A figure that is negative or over
        MAX_LATENCY_S cannot be (PipeWire's JACK gave PortAudio 89,478 s): it is logged once and
        replaced by JACK's own (the same sum, read from the port's latency range), else by one block."""
        latency_s = stream.latency_s()
        if 0.0 <= latency_s <= MAX_LATENCY_S:
            return latency_s
        client = PORTAUDIO.jack_client()
        frames = None
        if config.hostapi == JACK_HOSTAPI and client:
            frames = playback_latency_frames(client, f"{PORTAUDIO.client_name()}:out_0")
        if frames is not None and frames / config.sample_rate <= MAX_LATENCY_S:
            instead, source = frames / config.sample_rate, "JACK's port latency"
        else:
            instead = (config.block_frames or buffer_frames(client) or 256) / config.sample_rate
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
        if self.settings.get("midi_input"):
            engine.take_input()
        self._publish_transport(engine)
        if self._engine is None and self.start_at_beat is not None:
            engine.start_on_beat(self.start_at_beat)
        program, state = self._held if self._engine is None else self._engine.playing()
        seq = engine.request_swap(offer(program, np.array(state, copy=True), at_once=True))  # (it goes on where it was)
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
        offered = offer(program)
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
        if self._keys is not None:
            self._keys.close()
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
                lost = not askable(stream)
                now, count = time.monotonic(), int(self._engine.slots[0]["callbacks"])
                if count != calls:
                    calls, since = count, now
                elif not lost and now - since >= STALL_S:
                    since = now
                    lost = not stream.active()
            if lost or self._recovery.due():
                self._recovery.look(self._lock, lambda: self.closed, self._notice_loss, self._connect,
                                    self._swap_deferred)

    def _notice_loss(self) -> None:
        if self._stream is not None and self._lost(self._stream):
            self._lose()

    def _lost(self, stream: Stream) -> bool:
        return not askable(stream) or not stream.active()

    def _lose(self) -> None:
        if PORTAUDIO.gone():
            why = "the JACK server went away"
        else:
            why = f"the stream on {self.config.device_name!r} stopped"
        self._graveyard.append((self._stream, self._engine))  # PortAudio is never asked about it again
        self._stream = None
        PORTAUDIO.retire()
        waiting_for = "JACK" if self.config.hostapi == JACK_HOSTAPI else repr(self.config.device_name)
        self._recovery.lose(waiting_for, why)

    def _swap_deferred(self) -> None:
        """A program loaded while the device was away plays once it is back."""
        if self._deferred is not None and self._stream is not None:
            program, self._deferred = self._deferred, None
            try:
                self._swap(program)
            except RuntimeInitError as exc:
                log.error("audio: could not swap program %s in after the device came back: %s",
                          program.source_hash, exc)

    def _release(self, stream: Stream, engine: NativeEngine) -> None:
        """Stop and close *stream* unless its PortAudio must not be asked; keep what it may still call."""
        if not askable(stream) or not stream.close():
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

    def _answered(self, stream: Stream, answer, poll_s: float | None = None, extra_s: float = 0.0) -> bool:
        """Wait (off the audio thread) until *answer()* holds.

        Not for a stream that is lost, nor while close() waits for an attempt
        to get the device back (it has set ``_stop``, not yet ``closed``).
        """
        def done() -> bool:
            return answer() or self._stop.is_set() and not self.closed or not askable(stream)

        wait_until(done, ANSWER_TIMEOUT_S + float(self.settings["crossfade_ms"]) / 1000.0 + extra_s,
                   poll_s or self._poll_s)
        return answer()
