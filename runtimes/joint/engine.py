"""The Python side of the joint engine: a tick engine and an audio engine played by one callback.

:class:`JointEngine` is a :class:`~runtimes.ticks.engine.TickEngine` (the
``midi`` runtime's code drives it unchanged: programs, clock, transport,
input map, Link, a lost server) that also owns a
:class:`~runtimes.audio.engine.NativeEngine` for the audio kernel, the
interleaved audio buffers and the joint record :data:`.process.process`
reads. Programs go through the tick engine's hand-over only; records stay
alive while an audio voice still fades them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler_bridge.abi import MIDI_IN_BYTES, acquire_fence, prefault

from ..audio.engine import MAX_BLOCK_FRAMES, NativeEngine
from ..base import wait_until
from ..realtime.handover import Offer
from ..ticks.engine import TickEngine
from ..ticks.slots import STOPPED, WANT_RUN, WANT_STOP
from . import process
from .process import JOINT_DTYPE, MAX_CYCLE_FRAMES, MAX_PORTS

JOINT_COUNTERS = ("in_events", "in_handled", "in_overflow", "in_bad", "handler_errors", "long_cycles")


class JointEngine(TickEngine):
    """A tick engine whose JACK callback also plays the program's audio kernel.

    *settings* are the ``jack`` runtime's (MIDI keys, ``channels_in``,
    ``channels_out``, ``crossfade_ms``, ``max_events_in``).
    """

    def __init__(self, settings: dict[str, Any], sample_rate: float, tempo_bpm: float,
                 beat_origin: float = 0.0) -> None:
        super().__init__(settings, sample_rate, tempo_bpm, beat_origin)
        channels_in, channels_out = int(settings["channels_in"]), int(settings["channels_out"])
        if max(channels_in, channels_out) > MAX_PORTS:
            raise ValueError(f"at most {MAX_PORTS} audio ports each way")
        self.audio = NativeEngine(sample_rate, channels_in, channels_out, MAX_BLOCK_FRAMES,
                                  float(settings["crossfade_ms"]))
        self.joint = np.zeros(1, JOINT_DTYPE)
        self.in_buf = np.zeros(MAX_CYCLE_FRAMES * max(channels_in, 1), np.float32)
        self.out_buf = np.zeros(MAX_CYCLE_FRAMES * channels_out, np.float32)
        self.msg = np.zeros(MIDI_IN_BYTES, np.int32)
        prefault(self.joint, self.in_buf, self.out_buf, self.msg)
        j = self.joint
        j["ticks"], j["audio"] = self.address, self.audio.address
        j["in_buf"], j["out_buf"], j["msg"] = self.in_buf.ctypes.data, self.out_buf.ctypes.data, self.msg.ctypes.data
        j["max_in"] = int(settings["max_events_in"])

    # --- what the JACK client is given ---

    @property
    def callback(self) -> tuple[int, int]:
        return process.process.address, self.joint.ctypes.data

    def attach(self, register) -> dict[str, list[int]]:
        """Register the audio ports with *register(short_name, is_output)* (a port handle) and
        point the joint record at them; their handles by direction."""
        ports = {"in": [register(f"audio_in_{c + 1}", False) for c in range(int(self.audio.slots[0]["channels_in"]))],
                 "out": [register(f"audio_out_{c + 1}", True)
                         for c in range(int(self.audio.slots[0]["channels_out"]))]}
        for name, handles in (("audio_in", ports["in"]), ("audio_out", ports["out"])):
            self.joint[name] = 0
            self.joint[name][0, : len(handles)] = handles
        return ports

    # --- programs: one hand-over, records kept while a voice fades them ---

    def request(self, offer: Offer) -> int:
        seq = self.handover.post(offer, self._set_controls).seq
        self.release_faded()
        return seq

    def release_faded(self) -> None:
        """Drop records neither engine reads: what the tick side plays is read first, then the
        audio voices, so a record moving from one to the other between the reads is kept."""
        playing = int(self.slots["playing"][0])
        acquire_fence()
        s = self.audio.slots[0]
        voices = [int(r) for r, a in zip(s["v_rec"], s["v_active"]) if a]
        self.handover.release([playing, int(self.joint["synced"][0]), *voices, int(s["fallback"]),
                               int(s["fault_rec"]), int(s["fault_to"])])

    # --- run and stop ---

    def stop(self, timeout_s: float, lost=lambda: False) -> bool:
        """End every note and send Stop (the tick side), fade the audio out; wait for both."""
        ran = self.get("run_want") == WANT_RUN
        seq = self.audio.request_close()
        if ran:
            self.want(WANT_STOP)
        return wait_until(lambda: (not ran or self.get("run_state") == STOPPED) and self.audio.acked("close", seq)
                          or lost(), timeout_s)

    # --- what the host reads ---

    def liveness(self) -> tuple[int, bool, bool]:
        returned, under_way, in_kernel = super().liveness()
        return returned, under_way, in_kernel or bool(self.audio.slots[0]["in_kernel"])

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        a = self.audio.stats()
        out.update({k: a[k] for k in ("xruns", "overruns", "nan_blocks", "clipped_samples", "callback_p50_us",
                                      "callback_p99_us", "callback_max_us", "peak_dbfs", "rms_dbfs")})
        out["kernel_errors"] += a["kernel_errors"]
        out.update({k: int(self.joint[k][0]) for k in JOINT_COUNTERS})
        return out
