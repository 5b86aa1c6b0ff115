"""The Python side of the audio engine: it owns every buffer :data:`.callback.audio_callback`
reads or writes, and hands it programs and requests.

This module must not import sounddevice: the compile worker imports it to
warm numba's cache (``livehost run`` tells it to).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from compiler_bridge.abi import MIDI_IN_BYTES, acquire_fence, new_context, new_events, prefault, release_fence

from ..realtime.controls import ControlRing
from ..realtime.handover import Handover, Offer
from ..realtime.ring import Ring
from ..realtime.timing import histogram_percentiles
from .callback import (FAULT_NAN, FAULT_SLOW, HIST_BINS, MAX_BLOCK_FRAMES, MAX_VOICES, METER_CHANNELS,
                       METER_FLOOR_DBFS, NAN_RUN_LIMIT, SLOTS_DTYPE, SLOW_RUN_LIMIT, SNAP_DTYPE, audio_callback,
                       render_block)
from .keys import INPUT_CAPACITY, INPUT_DTYPE

__all__ = ["NativeEngine", "audio_callback", "MAX_BLOCK_FRAMES", "NAN_RUN_LIMIT", "SLOW_RUN_LIMIT",
           "METER_FLOOR_DBFS"]


def libc_address(name: str) -> int:
    """Address of a libc function: ``clock_gettime`` (a vDSO call: no syscall, no lock), ``gettid``."""
    return ctypes.cast(getattr(ctypes.CDLL(None), name), ctypes.c_void_p).value


class NativeEngine:
    """Owns the slots and every buffer :data:`audio_callback` reads or writes.

    Keep it alive for as long as a stream may call the callback. Programs go
    through :attr:`handover` (:meth:`request_swap`); a close and a snapshot
    are requests the callback answers (:meth:`acked`). :attr:`controls`
    takes state writes (``push(*layout.target(name), value)``) from any thread.

    Parameters
    ----------
    sample_rate : float
        Stream rate in Hz.
    channels_in, channels_out : int
        Interleaved channel counts of PortAudio's buffers.
    max_frames : int
        Frames per kernel call at most; longer host buffers are split.
    crossfade_ms : float
        Swap and close fade length in milliseconds.
    """

    def __init__(self, sample_rate: float, channels_in: int, channels_out: int,
                 max_frames: int = MAX_BLOCK_FRAMES, crossfade_ms: float = 10.0) -> None:
        self.slots = np.zeros(1, SLOTS_DTYPE)
        self.scratch = np.zeros((MAX_VOICES, max_frames * channels_out), np.float32)
        self.silence_in = np.zeros(max_frames * max(channels_in, 1), np.float32)
        self.ctx = new_context(sample_rate=sample_rate, channels_in=channels_in, channels_out=channels_out,
                               ppqn=24)
        self.events = new_events()
        self.hist = np.zeros(HIST_BINS, np.int64)
        self.controls = ControlRing()
        self.handover = Handover(self.slots)
        self.keys: Ring | None = None  # MIDI input (take_input)
        self._snapshots: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # seq -> (request, dst), until answered
        self._snap_seq = 0
        self._lock = threading.Lock()  # one writer at a time of each request field
        prefault(self.slots, self.scratch, self.silence_in, self.ctx, self.events, self.hist,
                 self.controls.header, self.controls.records)
        s = self.slots[0]
        s["sample_rate"] = sample_rate
        s["channels_in"], s["channels_out"], s["max_frames"] = channels_in, channels_out, max_frames
        for name, array in (("scratch", self.scratch), ("silence_in", self.silence_in), ("ctx", self.ctx),
                            ("events", self.events), ("hist", self.hist), ("ring_header", self.controls.header),
                            ("ring_records", self.controls.records)):
            s[name] = array.ctypes.data
        s["ring_capacity"] = self.controls.capacity
        s["clock_fn"], s["tid_fn"] = libc_address("clock_gettime"), libc_address("gettid")
        s["newest"] = -1
        self.set_crossfade_ms(crossfade_ms)
        self.set_transport(120.0, 0.0, 0)

    @property
    def address(self) -> int:
        """The ``userData`` pointer to hand to PortAudio."""
        return self.slots.ctypes.data

    def take_input(self) -> Ring:
        """Have the callback play MIDI input (:mod:`.keys`) pushed into the returned ring as
        ``push(arrival_ns, status, data1, data2)``; before the stream starts."""
        if self.keys is None:
            self.keys, self.msg = Ring(INPUT_DTYPE, INPUT_CAPACITY), np.zeros(MIDI_IN_BYTES, np.int32)
            prefault(self.keys.header, self.keys.records, self.msg)
            s = self.slots[0]
            s["msg"] = self.msg.ctypes.data
            s["keys"] = (self.keys.header.ctypes.data, self.keys.records.ctypes.data, self.keys.capacity)
        return self.keys

    def set_crossfade_ms(self, crossfade_ms: float) -> None:
        self.slots[0]["fade_frames"] = round(crossfade_ms * self.slots[0]["sample_rate"] / 1000.0)

    def set_transport(self, tempo_bpm: float, beat: float, at_ns: int) -> None:
        """Publish *beat* at monotonic *at_ns* and the tempo (a seqlock: the callback reads
        it between two equal, even reads of ``transport_seq``)."""
        with self._lock:
            s = self.slots[0]
            seq = int(s["transport_seq"])
            s["transport_seq"] = seq + 1  # odd: being written
            release_fence()
            s["transport"] = (tempo_bpm, beat, float(at_ns))
            release_fence()
            s["transport_seq"] = seq + 2

    # --- requests ---

    def start_on_beat(self, beat: float) -> None:
        """Before the stream starts: the first program starts at the exact frame where the
        transport reaches *beat* (silence until then), or at once when that has passed."""
        s = self.slots[0]
        s["start_beat"] = beat
        s["start_gate"] = 1

    def request_swap(self, offer: Offer) -> int:
        """Ask for *offer* to play (from the next block, or the frame of its beat or bar);
        return the seq to wait for with ``acked("swap", seq)``. A request not taken yet is
        replaced, never torn: the callback takes one or the other, state carried."""
        fallback = self.handover.record_at(int(self.slots[0]["fallback"]))
        record = self.handover.post(offer, also_from=[fallback] if fallback is not None else [])
        return record.seq

    def request_close(self) -> int:
        with self._lock:
            s = self.slots[0]
            seq = int(s["close_seq"]) + 1
            release_fence()
            s["close_seq"] = seq
            return seq

    def request_snapshot(self) -> int:
        """Ask for a copy of the playing state between two blocks; read it with :meth:`snapshot`."""
        with self._lock:
            size = max([r.state.nbytes for r in self.handover.sources()] or [0])
            request, dst = np.zeros(1, SNAP_DTYPE), np.zeros(size, np.uint8)
            self._snap_seq += 1
            request["seq"], request["dst"], request["bytes"] = self._snap_seq, dst.ctypes.data, size
            answered = int(self.slots[0]["snap_ack"])
            self._snapshots = {q: v for q, v in self._snapshots.items() if q > answered}
            self._snapshots[self._snap_seq] = (request, dst)  # alive while the callback may write them
            release_fence()
            self.slots[0]["snap_post"] = request.ctypes.data
            return self._snap_seq

    def snapshot(self, seq: int) -> tuple[Any, np.ndarray] | None:
        """The answer to snapshot request *seq*: the program whose state was copied and the copy."""
        if not self.acked("snap", seq):
            return None
        request, dst = self._snapshots[seq]
        record = self.handover.record_at(int(request["copied"][0]))
        if record is None:
            return None
        if record.failed:
            return record.owner, record.layout.defaults()
        return record.owner, dst[: record.state.nbytes].view(record.layout.dtype).copy()

    def acked(self, kind: str, seq: int) -> bool:
        """Whether the callback has answered request *seq* of *kind* (swap/close/snap)."""
        if kind == "swap":
            return self.handover.taken(seq)
        answered = int(self.slots[0][f"{kind}_ack"]) >= seq
        acquire_fence()  # what the callback wrote before its answer is visible after it
        return answered

    def release_finished(self) -> None:
        """Drop programs and states the callback no longer reads (voices faded out; never what
        plays, what is requested, the watchdog's way back or what it reports)."""
        s = self.slots[0]
        acquire_fence()
        voices = [int(r) for r, a in zip(s["v_rec"], s["v_active"]) if a]
        self.handover.release([*voices, int(s["fallback"]), int(s["fault_rec"]), int(s["fault_to"])])

    def playing(self) -> tuple[Any, np.ndarray] | None:
        """The program the callback plays now (the newest taken, or the watchdog's fallback) and its
        state (not a copy); the program's defaults when its kernel failed (that state is never carried)."""
        record = self.handover.playing()
        if record is None:
            return None
        return record.owner, (record.layout.defaults() if record.failed else record.state)

    def callback_faults(self) -> tuple[int, int] | None:
        """Page faults (minor, major) of the thread that last called the callback, so far; None
        before a callback or once that thread is gone."""
        tid = int(self.slots[0]["thread_id"])
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return int(fields[7]), int(fields[9])  # (minflt and majflt: fields 10 and 12 of stat)

    def liveness(self) -> tuple[int, bool, bool]:
        """Callbacks that returned, whether one is under way, and whether a kernel runs in it."""
        s = self.slots[0]
        returned = int(s["callbacks"])
        return returned, int(s["entered"]) != returned, bool(s["in_kernel"])

    def fault(self) -> tuple[int, str, Any, Any]:
        """The watchdog's count of faults, and the last one: its kind, the program
        that faulted and the program playing instead (None: silence)."""
        s = self.slots[0]
        count = int(s["faults"])
        acquire_fence()
        kind = {FAULT_NAN: "nan", FAULT_SLOW: "slow"}.get(int(s["fault_kind"]), "")
        bad, instead = (self.handover.record_at(int(s[k])) for k in ("fault_rec", "fault_to"))
        return count, kind, bad and bad.owner, instead and instead.owner

    def render(self, out: np.ndarray, at_ns: int) -> None:
        """Play ``out.shape[0]`` frames into *out* (float32, frames x channels_out) offline."""
        render_block(self.address, out.ctypes.data, out.shape[0], at_ns)

    def stats(self) -> dict:
        """Counters and callback-duration percentiles (us) so far; reads only."""
        s = self.slots[0]
        keys = ("blocks", "callbacks", "xruns", "xruns_flagged", "xruns_late", "overruns", "nan_blocks",
                "clipped_samples", "swaps", "kernel_errors", "faults", "writes_applied", "writes_dropped", "frames",
                "kernel_ns", "carry_misses", "in_events", "in_handled", "in_late", "handler_errors")
        out = {k: int(s[k]) for k in keys}
        p50, p99 = histogram_percentiles(self.hist, (0.5, 0.99))
        middle = 0.5 if out["callbacks"] else 0.0  # (the middle of a 1 us bin)
        out.update(callback_p50_us=p50 + middle, callback_p99_us=p99 + middle,
                   callback_max_us=int(s["callback_max_ns"]) / 1000.0, block_frames=int(s["last_frames"]))
        out.update(self.meters())
        return out

    def meters(self) -> dict[str, list[float]]:
        """Per output channel: peak and RMS level in dBFS over about ``METER_S`` (silence: ``METER_FLOOR_DBFS``)."""
        s = self.slots[0]
        n = min(int(s["channels_out"]), METER_CHANNELS)
        with np.errstate(divide="ignore"):
            peak = np.maximum(20.0 * np.log10(s["meter_peak"][:n].copy()), METER_FLOOR_DBFS)
            rms = np.maximum(10.0 * np.log10(s["meter_ms"][:n].copy()), METER_FLOOR_DBFS)
        return {"peak_dbfs": [round(float(v), 1) for v in peak], "rms_dbfs": [round(float(v), 1) for v in rms]}
