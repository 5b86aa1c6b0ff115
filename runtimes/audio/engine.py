"""The native PortAudio callback: a GIL-free trampoline around compiled kernels.

PortAudio calls :data:`audio_callback` (a numba ``@cfunc`` with the
``PaStreamCallback`` signature) once per host buffer, on its own thread. It
never touches Python objects: everything it needs sits in one preallocated
record of :data:`SLOTS_DTYPE` handed over as PortAudio's ``userData``, plus
buffers whose addresses that record holds. The Python side talks to it only
by writing request fields and bumping a sequence number, which the callback
answers at the next block boundary by writing an acknowledgement.

Per block the trampoline

1. drains the control ring into the newest program's state (writes
   addressed to its layout; see :mod:`runtimes.realtime.controls`);
2. takes a pending swap: carries the newest program's state into the new
   program's state with the precomputed field-offset table, starts a linear
   crossfade of ``fade_frames`` from the current mix to the new program
   (every playing voice ramps from its current gain to 0, the new one from 0
   to 1, so the gains always sum to 1: equal gain), then drains the writes
   that were waiting for the new layout;
3. runs each playing voice's kernel into its own scratch buffer, sanitises
   it (NaN/inf -> 0, counted per block), mixes with the per-frame gains and
   hard-clips the mix to +-1 (counted per sample);
4. records the callback's duration (1 us histogram bins), the kernel time,
   and xruns, both from PortAudio's status flags and from timing (a
   callback that ran longer than its block, or that started more than two
   blocks after the previous one): PortAudio under-reports them on JACK.

Time comes from ``clock_gettime(CLOCK_MONOTONIC)`` (the clock behind
``time.monotonic_ns``), called through its address in the slots, so the
cached cfunc holds no ctypes object. Every buffer the callback touches is
written once before the stream starts (no first-touch page fault, which
would wait on the memory-map lock any allocating thread holds). This module
must not import sounddevice: the compile worker imports it to warm numba's
cache (``livehost run`` tells it to).
"""

from __future__ import annotations

import ctypes

import numba
import numpy as np
from numba import carray, types

from compiler_bridge.abi import (CTX_DTYPE, EVENT_HEADER_COUNT, acquire_fence, address_of, as_voidptr, call_kernel,
                                 carry_state, fill_context, native_function, new_context, new_events, prefault,
                                 release_fence)
from compiler_bridge.program import Program

from ..realtime import controls
from ..realtime.controls import ControlRing

MAX_VOICES = 4  # the playing program plus up to three fading out
MAX_BLOCK_FRAMES = 4096  # scratch size; longer host buffers are rendered in chunks
HIST_BINS = 50_000  # callback durations in 1 us bins; the last bin holds longer ones
CLOCK_MONOTONIC = 1  # Linux clockid_t of the clock behind time.monotonic_ns
PA_CONTINUE = 0
NAN_RUN_LIMIT = 8  # blocks in a row of NaN/inf from the newest program before the watchdog steps in
SLOW_RUN_LIMIT = 64  # blocks in a row over the block's time (about a third of a second at 256 frames)
FAULT_NAN, FAULT_SLOW = 1, 2
# paInputUnderflow | paInputOverflow | paOutputUnderflow | paOutputOverflow
PA_XRUN_FLAGS = 0x1 | 0x2 | 0x4 | 0x8
METER_CHANNELS = 8  # output channels metered
METER_S = 0.3  # meter time constant: peaks fall and the RMS averages over about this long
METER_FLOOR_DBFS = -120.0  # what the meters show for silence

SLOTS_DTYPE = np.dtype(
    [
        # --- fixed before the stream starts (Python writes) ---
        ("sample_rate", "f8"),  # Hz
        ("channels_in", "i8"),
        ("channels_out", "i8"),
        ("max_frames", "i8"),  # frames per scratch buffer
        ("scratch", "i8"),  # address: float32 (MAX_VOICES, max_frames * channels_out)
        ("silence_in", "i8"),  # address: float32 zeros, max_frames * max(channels_in, 1)
        ("ctx", "i8"),  # address: one CTX_DTYPE record
        ("events", "i8"),  # address: the event buffer (abi.new_events)
        ("hist", "i8"),  # address: int64 [HIST_BINS] callback-duration histogram
        ("clock_fn", "i8"),  # address of clock_gettime
        ("ring_header", "i8"),  # address: ControlRing.header
        ("ring_records", "i8"),  # address: ControlRing.records
        ("ring_capacity", "i8"),
        # --- live requests (Python writes fields first, then bumps *_seq) ---
        ("fade_frames", "i8"),  # crossfade length in frames
        ("transport", "f8", (2, 3)),  # double buffer of [tempo_bpm, anchor_beat, anchor_ns]
        ("transport_index", "i8"),  # which row of `transport` is current
        ("swap_seq", "i8"),
        ("swap_kernel", "i8"),  # kernel entry address
        ("swap_state", "i8"),  # address of the new program's state
        ("swap_bytes", "i8"),  # its size in bytes
        ("swap_table", "i8"),  # address: int64 (rows, 3) carry table from the newest state
        ("swap_rows", "i8"),
        ("swap_tag", "i8"),  # the new program's layout tag (state writes addressed to it wait for it)
        ("swap_src_tag", "i8"),  # the layout the carry table reads from: no carry from another
        ("swap_every", "f8"),  # beats: the swap takes over on the transport's next multiple of it; 0: next block
        ("start_beat", "f8"),  # with start_gate: the first program waits for the frame of this transport beat
        ("start_gate", "i8"),
        # the program to fall back to if the new one faults (the one playing when the swap was asked)
        ("swap_fb_seq", "i8"), ("swap_fb_kernel", "i8"), ("swap_fb_state", "i8"), ("swap_fb_bytes", "i8"),
        ("swap_fb_tag", "i8"),
        ("close_seq", "i8"),
        ("snap_seq", "i8"),
        ("snap_dst", "i8"),  # address to copy the newest state into
        ("snap_bytes", "i8"),
        # --- answers (the callback writes) ---
        ("swap_ack", "i8"),
        ("close_ack", "i8"),
        ("snap_ack", "i8"),
        ("closing", "i8"),
        ("newest", "i8"),  # voice index of the newest program, -1 when none
        ("v_active", "i8", (MAX_VOICES,)),
        ("v_seq", "i8", (MAX_VOICES,)),  # swap_seq that started the voice
        ("v_kernel", "i8", (MAX_VOICES,)),
        ("v_state", "i8", (MAX_VOICES,)),
        ("v_bytes", "i8", (MAX_VOICES,)),
        ("v_tag", "i8", (MAX_VOICES,)),  # layout tag of the voice's state
        ("v_gain", "f8", (MAX_VOICES,)),  # gain of the last frame played
        ("v_step", "f8", (MAX_VOICES,)),  # gain change per frame while ramping
        ("v_target", "f8", (MAX_VOICES,)),  # gain at the end of the ramp
        ("v_left", "i8", (MAX_VOICES,)),  # frames left in the ramp
        # --- statistics (the callback writes) ---
        ("entered", "i8"),  # callbacks begun (``callbacks`` counts those that returned)
        ("in_kernel", "i8"),  # 1 while a kernel runs: a callback begun and not returned with it set hangs there
        ("callbacks", "i8"),
        ("blocks", "i8"),
        ("frames", "i8"),  # frames played since start
        ("last_frames", "i8"),  # frames in the last callback
        ("xruns", "i8"),  # callbacks with any xrun sign below
        ("xruns_flagged", "i8"),  # PortAudio status flags said so
        ("xruns_late", "i8"),  # callback overran its block or started > 2 blocks late
        ("overruns", "i8"),  # callback took longer than its block: our own fault, not the graph's
        # --- the watchdog (the callback writes) ---
        ("fb_seq", "i8"), ("fb_kernel", "i8"), ("fb_state", "i8"), ("fb_bytes", "i8"), ("fb_tag", "i8"),
        ("bad_run", "i8"),  # blocks in a row the newest program wrote NaN/inf
        ("slow_run", "i8"),  # blocks in a row its kernel took longer than the block
        ("faults", "i8"),  # times the watchdog replaced the newest program
        ("fault_kind", "i8"),  # of the last: FAULT_NAN or FAULT_SLOW
        ("fault_seq", "i8"),  # the swap that started the program that faulted
        ("fault_to_seq", "i8"),  # what plays instead: the fallback's swap, or 0 for silence
        ("nan_blocks", "i8"),
        ("clipped_samples", "i8"),
        ("swaps", "i8"),
        ("kernel_errors", "i8"),
        ("writes_applied", "i8"),  # state writes from the control ring
        ("writes_dropped", "i8"),  # ... addressed to a layout that no longer plays
        ("kernel_ns", "i8"),  # total time spent in kernels
        ("callback_max_ns", "i8"),
        ("last_start_ns", "i8"),
        ("ts", "i8", (2,)),  # struct timespec written by clock_gettime
        # --- output meters per channel (the callback writes; read without a lock: aligned 8-byte values) ---
        ("meter_peak", "f8", (METER_CHANNELS,)),  # peak, falling back by METER_S
        ("meter_ms", "f8", (METER_CHANNELS,)),  # mean square, averaged over about METER_S
    ],
    align=True,
)
_TS_OFFSET = SLOTS_DTYPE.fields["ts"][1]

CALLBACK_SIGNATURE = types.int32(
    types.voidptr,  # const void *input
    types.voidptr,  # void *output
    types.uint64,  # unsigned long frameCount
    types.voidptr,  # const PaStreamCallbackTimeInfo *timeInfo
    types.uint64,  # PaStreamCallbackFlags statusFlags
    types.voidptr,  # void *userData
)


_call_clock = native_function("i32", "i32", "ptr")  # int clock_gettime(clockid_t, struct timespec *)


# --- the real-time side -------------------------------------------------------------

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _now_ns(s, slots_address):
    """Monotonic time in ns (the clock of ``time.monotonic_ns``)."""
    _call_clock(s.clock_fn, CLOCK_MONOTONIC, slots_address + _TS_OFFSET)
    return s.ts[0] * 1_000_000_000 + s.ts[1]


@_jit
def _fade_all_out(s, fade):
    """Ramp every playing voice from its current gain to 0 over *fade* frames."""
    for u in range(MAX_VOICES):
        if s.v_active[u]:
            if fade > 0:
                s.v_target[u] = 0.0
                s.v_step[u] = -s.v_gain[u] / fade
                s.v_left[u] = fade
            else:
                s.v_active[u] = 0


@_jit
def _playing(s):
    """Whether any voice is playing (or fading)."""
    for u in range(MAX_VOICES):
        if s.v_active[u]:
            return True
    return False


@_jit
def _free_voice(s):
    for u in range(MAX_VOICES):
        if not s.v_active[u]:
            return u
    return -1


@_jit
def _start_voice(s, v, kernel, state, nbytes, tag, seq):
    """Voice *v* plays *kernel* on *state* as the newest program, fading in while every other fades out."""
    fade = s.fade_frames
    _fade_all_out(s, fade)
    s.v_kernel[v], s.v_state[v], s.v_bytes[v], s.v_tag[v], s.v_seq[v] = kernel, state, nbytes, tag, seq
    s.v_target[v] = 1.0
    s.v_gain[v] = 0.0 if fade > 0 else 1.0
    s.v_step[v] = 1.0 / fade if fade > 0 else 0.0
    s.v_left[v] = fade
    s.v_active[v] = 1
    s.newest = v
    s.bad_run = s.slow_run = 0


@_jit
def _take_swap(s):
    """Start the requested program at this block; False if it must wait.

    It waits only when every voice is still fading (more swaps than voices
    within one crossfade): the request stays pending for a later block.
    """
    req = s.swap_seq
    acquire_fence()
    v = _free_voice(s)
    if v < 0:
        return False
    # (not from a kernel that raised: its state may hold what made it raise; the new one starts afresh)
    if s.newest >= 0 and s.swap_rows > 0 and s.v_tag[s.newest] == s.swap_src_tag and s.v_kernel[s.newest] != 0:
        src = carray(as_voidptr(s.v_state[s.newest]), s.v_bytes[s.newest], np.uint8)
        dst = carray(as_voidptr(s.swap_state), s.swap_bytes, np.uint8)
        carry_state(src, dst, carray(as_voidptr(s.swap_table), (s.swap_rows, 3), np.int64))
    if _playing(s):
        s.swaps += 1  # a hot swap; the first program of a stream is no swap
    _start_voice(s, v, s.swap_kernel, s.swap_state, s.swap_bytes, s.swap_tag, req)
    s.fb_seq, s.fb_kernel, s.fb_state = s.swap_fb_seq, s.swap_fb_kernel, s.swap_fb_state
    s.fb_bytes, s.fb_tag = s.swap_fb_bytes, s.swap_fb_tag
    release_fence()
    s.swap_ack = req
    return True


@_jit
def _fall_back(s, kind):
    """The newest program faulted: fade to the fallback program (its own state), else to silence."""
    bad = s.newest
    s.faults += 1
    s.fault_kind = kind
    s.fault_seq = s.v_seq[bad]
    s.bad_run = s.slow_run = 0
    v = _free_voice(s)
    if s.fb_kernel == 0 or s.fb_seq == s.v_seq[bad] or v < 0:
        s.v_kernel[bad] = 0  # silent until the next swap
        s.fault_to_seq = 0
        return
    _start_voice(s, v, s.fb_kernel, s.fb_state, s.fb_bytes, s.fb_tag, s.fb_seq)
    s.fault_to_seq = s.fb_seq
    s.fb_kernel = 0  # once: a fallback that faults too falls silent


@_jit
def _drain_controls(s, stop_tag):
    """Apply queued state writes to the newest state; stop at writes for *stop_tag*."""
    if s.newest < 0:
        return
    applied, dropped = controls.drain(
        carray(as_voidptr(s.ring_header), controls.ring.HEADER_SIZE, np.int64),
        carray(as_voidptr(s.ring_records), s.ring_capacity, controls.WRITE_DTYPE),
        carray(as_voidptr(s.v_state[s.newest]), s.v_bytes[s.newest], np.uint8), s.v_tag[s.newest], stop_tag)
    s.writes_applied += applied
    s.writes_dropped += dropped


@_jit
def _beat_at(s, at_ns):
    """The transport's beat and tempo at monotonic *at_ns*."""
    row = s.transport_index
    acquire_fence()
    tempo_bpm = s.transport[row, 0]
    return s.transport[row, 1] + (at_ns - s.transport[row, 2]) * tempo_bpm / 60e9, tempo_bpm


FRAME_EPS = 1e-6  # frames: rounding noise of the beat arithmetic, not a frame later


@_jit
def _frames_to_swap(s, start_ns):
    """Frames from this callback's start to the frame where the pending swap takes over.

    That is the first frame whose beat reaches the next multiple of
    ``swap_every`` beats (0: at once; also when nothing plays yet). The
    first program of a gated start waits for the frame of ``start_beat``
    instead (at once when that has passed).
    """
    if s.newest < 0:
        if s.start_gate == 0:
            return 0
        beat, tempo_bpm = _beat_at(s, start_ns)
        return max(np.int64(np.ceil((s.start_beat - beat) * 60.0 * s.sample_rate / tempo_bpm - FRAME_EPS)), 0)
    every = s.swap_every
    if every <= 0.0:
        return 0
    beat, tempo_bpm = _beat_at(s, start_ns)
    boundary = np.ceil(beat / every) * every
    return max(np.int64(np.ceil((boundary - beat) * 60.0 * s.sample_rate / tempo_bpm - FRAME_EPS)), 0)


@_jit
def _take_requests(s, start_ns, frame_count):
    """Answer close, control and swap requests at the callback's start.

    Writes pushed before a swap land in the state they were addressed to,
    then the swap carries them; writes for the new layout wait for it.
    Returns the frame where a pending swap takes over later in this
    callback (it lands on a beat or bar), or -1.
    """
    if s.close_seq != s.close_ack and not s.closing:
        s.closing = 1
        s.newest = -1
        _fade_all_out(s, s.fade_frames)
    swap = s.swap_seq != s.swap_ack and not s.closing
    acquire_fence()  # the request's fields (swap_every, swap_tag ...) were stored before its sequence number
    _drain_controls(s, s.swap_tag if swap else 0)
    if not swap:
        return -1
    at = _frames_to_swap(s, start_ns)
    if at == 0:
        if _take_swap(s):
            _drain_controls(s, 0)
        return -1
    return at if at < frame_count else -1


@_jit
def _fill_context(s, frames, at_ns):
    beat, tempo_bpm = _beat_at(s, at_ns)
    fill_context(carray(as_voidptr(s.ctx), 1, CTX_DTYPE), frames, s.blocks, s.frames, beat, tempo_bpm)


@_jit
def _sanitise(buf, n):
    """Replace NaN/inf in ``buf[:n]`` by 0; return whether any was found."""
    bad = 0
    for i in range(n):
        v = buf[i]
        # v - v is 0 for finite v and NaN for NaN/inf: a branch-free test that vectorises
        finite = (v - v) == 0.0
        bad |= not finite
        buf[i] = v if finite else np.float32(0.0)
    return bad != 0


@_jit
def _run_voice(s, slots_address, u, in_address, frames):
    """Run voice *u*'s kernel into its zeroed scratch; return whether it was finite."""
    width = s.channels_out
    buf_address = s.scratch + u * s.max_frames * width * 4
    buf = carray(as_voidptr(buf_address), frames * width, np.float32)
    buf[:] = 0.0
    if s.v_kernel[u] == 0:  # its kernel raised: silent until the next swap
        return True
    carray(as_voidptr(s.events), 3, np.int32)[EVENT_HEADER_COUNT] = 0
    t0 = _now_ns(s, slots_address)
    s.in_kernel = 1
    ok = call_kernel(s.v_kernel[u], as_voidptr(s.v_state[u]), as_voidptr(s.ctx), as_voidptr(in_address),
                     as_voidptr(buf_address), as_voidptr(s.events))
    s.in_kernel = 0
    s.kernel_ns += _now_ns(s, slots_address) - t0
    if ok == 0:
        # numba takes the GIL to report an exception: never call this kernel again.
        s.kernel_errors += 1
        s.v_kernel[u] = 0
        buf[:] = 0.0
        return True
    if u == s.newest:
        slow = (_now_ns(s, slots_address) - t0) * s.sample_rate > frames * 1e9
        s.slow_run = s.slow_run + 1 if slow else 0
    return not _sanitise(buf, frames * width)


@_jit
def _mix_voice(s, u, out, frames):
    """Add voice *u* into *out* with its per-frame gain ramp."""
    width = s.channels_out
    buf = carray(as_voidptr(s.scratch + u * s.max_frames * width * 4), frames * width, np.float32)
    g, left = s.v_gain[u], s.v_left[u]
    i = 0
    while i < frames and left > 0:
        left -= 1
        g = s.v_target[u] if left == 0 else g + s.v_step[u]
        for c in range(width):
            out[i * width + c] += np.float32(g) * buf[i * width + c]
        i += 1
    steady = np.float32(g)  # constant gain after the ramp: a loop the compiler vectorises
    for j in range(i * width, frames * width):
        out[j] += steady * buf[j]
    s.v_gain[u], s.v_left[u] = g, left
    if left == 0 and s.v_target[u] == 0.0:
        s.v_active[u] = 0


@_jit
def _clip(out, n):
    """Hard-clip ``out[:n]`` to +-1; return how many samples were clipped."""
    clipped = 0
    for i in range(n):
        v = out[i]
        clipped += (v > 1.0) | (v < -1.0)
        out[i] = min(max(v, np.float32(-1.0)), np.float32(1.0))
    return clipped


@_jit
def _meter(s, out, frames):
    """Fold this block's output into the per-channel peak and RMS meters."""
    width = s.channels_out
    keep = np.exp(-frames / (s.sample_rate * METER_S))
    for c in range(min(width, METER_CHANNELS)):
        peak, sum_sq = 0.0, 0.0
        for i in range(frames):
            v = np.float64(out[i * width + c])
            peak = max(peak, abs(v))
            sum_sq += v * v
        s.meter_peak[c] = max(peak, s.meter_peak[c] * keep)
        s.meter_ms[c] = s.meter_ms[c] * keep + sum_sq / frames * (1.0 - keep)


@_jit
def _render(s, slots_address, in_address, out_address, frames, start_ns):
    """Play one block of *frames* (at most ``max_frames``) into the output."""
    out = carray(as_voidptr(out_address), frames * s.channels_out, np.float32)
    out[:] = 0.0
    _fill_context(s, frames, start_ns)
    finite = True
    for u in range(MAX_VOICES):
        if s.v_active[u]:
            ok = _run_voice(s, slots_address, u, in_address, frames)
            if u == s.newest:
                s.bad_run = 0 if ok else s.bad_run + 1
            finite &= ok
            _mix_voice(s, u, out, frames)
    if not finite:
        s.nan_blocks += 1
    if s.newest >= 0 and (s.bad_run >= NAN_RUN_LIMIT or s.slow_run >= SLOW_RUN_LIMIT):
        _fall_back(s, FAULT_NAN if s.bad_run >= NAN_RUN_LIMIT else FAULT_SLOW)
    s.clipped_samples += _clip(out, frames * s.channels_out)
    _meter(s, out, frames)
    if s.closing and not _playing(s):
        release_fence()
        s.close_ack = s.close_seq
    s.blocks += 1
    s.frames += frames


@_jit
def _answer_snapshot(s):
    """Copy the newest state for a snapshot request, between two blocks."""
    req = s.snap_seq
    acquire_fence()
    if s.newest >= 0:
        n = min(s.snap_bytes, s.v_bytes[s.newest])
        carray(as_voidptr(s.snap_dst), n, np.uint8)[:] = carray(as_voidptr(s.v_state[s.newest]), n, np.uint8)
    release_fence()
    s.snap_ack = req


@_jit
def _record_timing(s, start_ns, end_ns, frames, status_flags):
    """Histogram the callback's duration and count xruns (flags and timing)."""
    duration_ns = end_ns - start_ns
    block_ns = frames * 1e9 / s.sample_rate
    hist = carray(as_voidptr(s.hist), HIST_BINS, np.int64)
    hist[min(duration_ns // 1000, HIST_BINS - 1)] += 1
    s.callback_max_ns = max(s.callback_max_ns, duration_ns)
    overran = duration_ns > block_ns
    s.overruns += np.int64(overran)
    late = (s.last_start_ns > 0 and start_ns - s.last_start_ns > 2.0 * block_ns) or overran
    flagged = (status_flags & PA_XRUN_FLAGS) != 0
    s.xruns_late += np.int64(late)
    s.xruns_flagged += np.int64(flagged)
    s.xruns += np.int64(late or flagged)
    s.last_start_ns = start_ns
    s.last_frames = frames
    s.callbacks += 1


@_jit
def _play(s, slots_address, in_address, out_address, frame_count, start_ns):
    """Take requests, then play *frame_count* frames in blocks of at most ``max_frames``;
    a swap due on a beat or bar within them splits the block at that frame."""
    frame_count = np.int64(frame_count)
    split = _take_requests(s, start_ns, frame_count)
    done = np.int64(0)
    while done < frame_count:
        end = split if done < split else frame_count
        n = min(end - done, s.max_frames)
        block_in = s.silence_in
        if in_address != 0 and s.channels_in > 0:
            block_in = in_address + done * s.channels_in * 4
        at_ns = start_ns + np.int64(done * 1e9 / s.sample_rate)
        _render(s, slots_address, block_in, out_address + done * s.channels_out * 4, n, at_ns)
        done += n
        if done == split and _take_swap(s):
            _drain_controls(s, 0)
    if s.snap_seq != s.snap_ack:
        _answer_snapshot(s)


@numba.cfunc(CALLBACK_SIGNATURE, cache=True, nogil=True, error_model="numpy")
def audio_callback(input_p, output_p, frame_count, time_info_p, status_flags, user_p):
    """``PaStreamCallback``: play every voice into PortAudio's buffers; never stops."""
    slots_address = address_of(user_p)
    s = carray(user_p, 1, SLOTS_DTYPE)[0]
    s.entered += 1
    start_ns = _now_ns(s, slots_address)
    _play(s, slots_address, address_of(input_p), address_of(output_p), frame_count, start_ns)
    _record_timing(s, start_ns, _now_ns(s, slots_address), frame_count, status_flags)
    return PA_CONTINUE


@_jit
def render_block(slots_address, out_address, frames, at_ns):
    """Play *frames* frames as if at monotonic *at_ns*, with no input: offline renders."""
    s = carray(as_voidptr(slots_address), 1, SLOTS_DTYPE)[0]
    _play(s, slots_address, 0, out_address, frames, at_ns)


# --- the Python side ---------------------------------------------------------------


def clock_gettime_address() -> int:
    """Address of libc's ``clock_gettime`` (a vDSO call: no syscall, no lock)."""
    return ctypes.cast(ctypes.CDLL(None).clock_gettime, ctypes.c_void_p).value


class NativeEngine:
    """Owns the slots and every buffer :data:`audio_callback` reads or writes.

    Keep it alive for as long as a stream may call the callback. Requests
    (:meth:`request_swap`, :meth:`request_close`, :meth:`request_snapshot`)
    only write fields and publish a sequence number; the caller waits for the
    matching ``*_ack`` with :meth:`acked`. Only one request of a kind may be
    pending: wait for its answer before writing the next. :attr:`controls`
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
        self.pending: dict[int, tuple[Program, np.ndarray, np.ndarray]] = {}  # seq -> what it points at
        self.snapshot_dst: np.ndarray | None = None
        self.fallback = 0  # the swap whose program the watchdog may fall back to (kept alive)
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
        s["clock_fn"] = clock_gettime_address()
        s["newest"] = -1
        self.set_crossfade_ms(crossfade_ms)
        self.set_transport(120.0, 0.0, 0)

    @property
    def address(self) -> int:
        """The ``userData`` pointer to hand to PortAudio."""
        return self.slots.ctypes.data

    def set_crossfade_ms(self, crossfade_ms: float) -> None:
        self.slots[0]["fade_frames"] = round(crossfade_ms * self.slots[0]["sample_rate"] / 1000.0)

    def set_transport(self, tempo_bpm: float, beat: float, at_ns: int) -> None:
        """Publish *beat* at monotonic *at_ns* and the tempo (double-buffered).

        One writer at a time (the runtime's lock): the callback reads the
        row the index names, never the one being written.
        """
        s = self.slots[0]
        row = 1 - int(s["transport_index"])
        s["transport"][row] = (tempo_bpm, beat, float(at_ns))
        release_fence()
        s["transport_index"] = row

    # --- requests ---

    def _publish(self, field: str) -> int:
        s = self.slots[0]
        seq = int(s[field]) + 1
        release_fence()  # every field of the request is stored before its sequence number
        s[field] = seq
        return seq

    def start_on_beat(self, beat: float) -> None:
        """Before the first request: the first program starts at the exact frame where the
        transport reaches *beat* (silence until then), or at once when that has passed."""
        s = self.slots[0]
        s["start_beat"] = beat
        s["start_gate"] = 1

    def request_swap(self, program: Program, state: np.ndarray, table: np.ndarray, every_beats: float = 0.0) -> int:
        """Ask for *program* playing *state* from the next block; return the seq to wait for.

        *table* carries fields from the newest playing state into *state*
        (``program.layout.carry_table(newest_layout)``; empty for the first).
        With *every_beats*, it takes over at the exact frame where the
        transport reaches the next multiple of that many beats.
        """
        s = self.slots[0]
        table = np.ascontiguousarray(table, np.int64).reshape(-1, 3)
        prefault(state)
        newest = self.newest()
        if newest is not None:  # the watchdog's way back if the new program faults
            self.fallback = self._playing_seq()
            s["swap_fb_seq"], s["swap_fb_kernel"] = self.fallback, newest[0].kernels["audio"]
            s["swap_fb_state"], s["swap_fb_bytes"] = newest[1].ctypes.data, newest[1].nbytes
            s["swap_fb_tag"] = s["swap_src_tag"] = newest[0].layout.tag
        self.pending[int(s["swap_seq"]) + 1] = (program, state, table)  # alive while the callback may read them
        s["swap_kernel"] = program.kernels["audio"]
        s["swap_state"], s["swap_bytes"] = state.ctypes.data, state.nbytes
        s["swap_table"], s["swap_rows"] = table.ctypes.data, table.shape[0]
        s["swap_tag"] = program.layout.tag
        s["swap_every"] = every_beats
        return self._publish("swap_seq")

    def request_close(self) -> int:
        return self._publish("close_seq")

    def request_snapshot(self, dst: np.ndarray) -> int:
        self.snapshot_dst = dst  # alive until the next request, even if this one is never answered
        s = self.slots[0]
        s["snap_dst"], s["snap_bytes"] = dst.ctypes.data, dst.nbytes
        return self._publish("snap_seq")

    def acked(self, kind: str, seq: int) -> bool:
        """Whether the callback has answered request *seq* of *kind* (swap/close/snap)."""
        answered = int(self.slots[0][f"{kind}_ack"]) >= seq
        acquire_fence()  # what the callback wrote before its answer is visible after it
        return answered

    def release_finished(self) -> None:
        """Drop programs and states no voice plays any more (never the newest)."""
        s = self.slots[0]
        acked = int(s["swap_ack"])
        acquire_fence()
        playing = {int(q) for q, a in zip(s["v_seq"], s["v_active"]) if a}
        for seq in [q for q in self.pending if q < acked and q not in playing and q != self.fallback]:
            del self.pending[seq]

    def _playing_seq(self) -> int:
        s = self.slots[0]
        acked = int(s["swap_ack"])
        acquire_fence()
        newest = int(s["newest"])
        return int(s["v_seq"][newest]) if newest >= 0 else acked

    def newest(self) -> tuple[Program, np.ndarray] | None:
        """The program the callback plays (the newest one, or the watchdog's fallback) and its state."""
        seq = self._playing_seq()
        return self.pending[seq][:2] if seq in self.pending else None

    def liveness(self) -> tuple[int, bool, bool]:
        """Callbacks that returned, whether one is under way, and whether a kernel runs in it."""
        s = self.slots[0]
        returned = int(s["callbacks"])
        return returned, int(s["entered"]) != returned, bool(s["in_kernel"])

    def fault(self) -> tuple[int, str, Program | None, Program | None]:
        """The watchdog's count of faults, and the last one: its kind, the program
        that faulted and the program playing instead (None: silence)."""
        s = self.slots[0]
        count = int(s["faults"])
        acquire_fence()
        kind = {FAULT_NAN: "nan", FAULT_SLOW: "slow"}.get(int(s["fault_kind"]), "")
        bad, instead = (self.pending.get(int(s[k]), (None,))[0] for k in ("fault_seq", "fault_to_seq"))
        return count, kind, bad, instead

    def render(self, out: np.ndarray, at_ns: int) -> None:
        """Play ``out.shape[0]`` frames into *out* (float32, frames x channels_out) offline."""
        render_block(self.address, out.ctypes.data, out.shape[0], at_ns)

    def stats(self) -> dict:
        """Counters and callback-duration percentiles (us) so far; reads only."""
        s = self.slots[0]
        counts = self.hist.copy()
        total = int(counts.sum())
        cumulative = np.cumsum(counts)

        def percentile_us(p: float) -> float:
            return float(np.searchsorted(cumulative, p * total) + 0.5) if total else 0.0

        keys = ("blocks", "callbacks", "xruns", "xruns_flagged", "xruns_late", "overruns", "nan_blocks",
                "clipped_samples", "swaps", "kernel_errors", "faults", "writes_applied", "writes_dropped", "frames",
                "kernel_ns")
        out = {k: int(s[k]) for k in keys}
        out.update(callback_p50_us=percentile_us(0.5), callback_p99_us=percentile_us(0.99),
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
