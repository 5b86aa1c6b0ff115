"""The native PortAudio callback: a GIL-free trampoline around compiled kernels.

PortAudio calls :data:`audio_callback` (a numba ``@cfunc`` with the
``PaStreamCallback`` signature) once per host buffer, on its own thread. It
never touches Python objects: everything it needs sits in one preallocated
record of :data:`SLOTS_DTYPE` handed over as PortAudio's ``userData``, plus
buffers whose addresses that record holds. The Python side talks to it only
through the program hand-over (:mod:`runtimes.realtime.handover`) and request
records it posts by address, which the callback answers at the next block
boundary; each field has one writer.

Per block the trampoline

1. drains the control ring into the playing program's state (writes
   addressed to its layout; see :mod:`runtimes.realtime.controls`);
2. takes a requested program (at once, or at the frame of its beat or bar):
   carries the playing program's state into it, starts a linear
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

import numba
import numpy as np
from numba import carray, types

from compiler_bridge.abi import (CTX_DTYPE, EVENT_HEADER_COUNT, KERNEL_AUDIO, acquire_fence, address_of, as_voidptr, call_kernel,
                                 fill_context, native_function, release_fence)

from ..realtime import controls, handover
from . import keys

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
        ("tid_fn", "i8"),  # address of gettid
        ("ring_header", "i8"),  # address: ControlRing.header
        ("ring_records", "i8"),  # address: ControlRing.records
        ("ring_capacity", "i8"),
        # --- Python's requests ---
        ("fade_frames", "i8"),  # crossfade length in frames
        ("transport", "f8", (3,)),  # [tempo_bpm, anchor_beat, anchor_ns], published under transport_seq
        ("transport_seq", "i8"),  # odd while Python writes the transport
        ("start_beat", "f8"),  # with start_gate (set before the stream starts): the first program waits
        ("start_gate", "i8"),  # for the frame of this transport beat
        ("close_seq", "i8"),
        ("snap_post", "i8"),  # address of a SNAP_DTYPE record: copy the playing state there
        ("keys", "i8", (3,)),  # MIDI input ring (.keys; header, records, capacity addresses); 0: no input
        ("msg", "i8"),  # address: int32[3], the message midi_in() reads
        # --- the program hand-over (runtimes.realtime.handover) and answers (the callback writes) ---
        *handover.SLOT_FIELDS,
        ("fallback", "i8"),  # the record that played before the newest: the watchdog goes back to it
        ("close_ack", "i8"),
        ("snap_ack", "i8"),
        ("closing", "i8"),
        ("newest", "i8"),  # voice index of the playing program, -1 when none
        ("v_active", "i8", (MAX_VOICES,)),
        ("v_rec", "i8", (MAX_VOICES,)),  # the voice's program record (handover.PROGRAM_DTYPE)
        ("v_gain", "f8", (MAX_VOICES,)),  # gain of the last frame played
        ("v_step", "f8", (MAX_VOICES,)),  # gain change per frame while ramping
        ("v_target", "f8", (MAX_VOICES,)),  # gain at the end of the ramp
        ("v_left", "i8", (MAX_VOICES,)),  # frames left in the ramp
        # --- statistics (the callback writes) ---
        ("entered", "i8"),  # callbacks begun (``callbacks`` counts those that returned)
        ("in_kernel", "i8"),  # 1 while a kernel runs: a callback begun and not returned with it set hangs there
        ("callbacks", "i8"),
        ("thread_id", "i8"),  # the calling thread's id (its page faults are in /proc/self/task/<id>/stat)
        ("blocks", "i8"),
        ("frames", "i8"),  # frames played since start
        ("last_frames", "i8"),  # frames in the last callback
        ("xruns", "i8"),  # callbacks with any xrun sign below
        ("xruns_flagged", "i8"),  # PortAudio status flags said so
        ("xruns_late", "i8"),  # callback overran its block or started > 2 blocks late
        ("overruns", "i8"),  # callback took longer than its block: our own fault, not the graph's
        ("in_events", "i8"), ("in_handled", "i8"),  # MIDI input read, and handed to midi_in()
        ("in_late", "i8"),  # ... that came too late for its frame: played at the block's start
        ("handler_errors", "i8"),  # midi_in() raised
        # --- the watchdog (the callback writes) ---
        ("bad_run", "i8"),  # blocks in a row the newest program wrote NaN/inf
        ("slow_run", "i8"),  # blocks in a row its kernel took longer than the block
        ("faults", "i8"),  # times the watchdog replaced the newest program
        ("fault_kind", "i8"),  # of the last: FAULT_NAN or FAULT_SLOW
        ("fault_rec", "i8"),  # the record of the program that faulted
        ("fault_to", "i8"),  # what plays instead: the fallback's record, or 0 for silence
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

SNAP_DTYPE = np.dtype([("seq", "i8"), ("dst", "i8"), ("bytes", "i8"),
                       ("copied", "i8")])  # the callback's: the record whose state it copied (0: none)

CALLBACK_SIGNATURE = types.int32(
    types.voidptr,  # const void *input
    types.voidptr,  # void *output
    types.uint64,  # unsigned long frameCount
    types.voidptr,  # const PaStreamCallbackTimeInfo *timeInfo
    types.uint64,  # PaStreamCallbackFlags statusFlags
    types.voidptr,  # void *userData
)


_call_clock = native_function("i32", "i32", "ptr")  # int clock_gettime(clockid_t, struct timespec *)
_call_gettid = native_function("i32")  # pid_t gettid(void)


# --- the real-time side -------------------------------------------------------------

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def now_ns(s, slots_address):
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
def _start_voice(s, v, address):
    """Voice *v* plays the record at *address* as the newest program, fading in while every other fades out."""
    fade = s.fade_frames
    _fade_all_out(s, fade)
    s.v_rec[v] = address
    s.v_target[v] = 1.0
    s.v_gain[v] = 0.0 if fade > 0 else 1.0
    s.v_step[v] = 1.0 / fade if fade > 0 else 0.0
    s.v_left[v] = fade
    s.v_active[v] = 1
    s.newest = v
    s.bad_run = s.slow_run = 0


@_jit
def _take_swap(s, address):
    """Play the requested record at *address* from this frame; False if it must wait.

    It waits only when every voice is still fading (more swaps than voices
    within one crossfade): the request stays for a later block. The state
    is carried from what plays (not from a kernel that raised or faulted:
    its state may hold what made it fail; the new one starts afresh).
    """
    return _switch_to(s, address, True)


@_jit
def play_taken(s, address):
    """Play the record at *address* from this frame, which another engine's hand-over took
    (its state carried there): the joint JACK callback, whose tick engine takes the swaps.
    False when no voice is free yet."""
    return _switch_to(s, address, False)


@_jit
def _switch_to(s, address, take):
    v = _free_voice(s)
    if v < 0:
        return False
    if _playing(s):
        s.swaps += 1  # a hot swap; the first program of a stream is no swap
    playing = s.playing
    s.fallback = playing if playing != 0 and handover.program(playing).failed == 0 else 0
    if take:
        handover.take(s, address)
    else:
        s.playing = address
    _start_voice(s, v, address)
    return True


@_jit
def _fall_back(s, kind):
    """The playing program faulted: fade to the one before it (its own state), else to silence."""
    bad = s.playing
    s.faults += 1
    s.fault_kind = kind
    s.fault_rec = bad
    s.bad_run = s.slow_run = 0
    v = _free_voice(s)
    if s.fallback == 0 or s.fallback == bad or v < 0:
        handover.program(bad).failed = 1  # silent until the next swap, its state not carried
        s.fault_to = 0
        return
    _start_voice(s, v, s.fallback)
    s.playing = s.fault_to = s.fallback
    s.fallback = 0  # once: a fallback that faults too falls silent


@_jit
def _drain_controls(s, stop_tag):
    """Apply queued state writes to the newest state; stop at writes for *stop_tag*."""
    if s.newest < 0:
        return
    prog = handover.program(s.playing)
    applied, dropped = controls.drain(
        carray(as_voidptr(s.ring_header), controls.ring.HEADER_SIZE, np.int64),
        carray(as_voidptr(s.ring_records), s.ring_capacity, controls.WRITE_DTYPE),
        carray(as_voidptr(prog.state), prog.state_bytes, np.uint8), prog.tag, stop_tag)
    s.writes_applied += applied
    s.writes_dropped += dropped


@_jit
def _beat_at(s, at_ns):
    """The transport's beat and tempo at monotonic *at_ns* (read between two equal, even
    reads of ``transport_seq``; after a few tries, what was read last)."""
    tempo_bpm = beat = anchor_ns = 0.0
    for _ in range(TRANSPORT_TRIES):
        seq = s.transport_seq
        acquire_fence()
        tempo_bpm, beat, anchor_ns = s.transport[0], s.transport[1], s.transport[2]
        acquire_fence()
        if seq & 1 == 0 and s.transport_seq == seq:
            break
    return beat + (at_ns - anchor_ns) * tempo_bpm / 60e9, tempo_bpm


TRANSPORT_TRIES = 4
FRAME_EPS = 1e-6  # frames: rounding noise of the beat arithmetic, not a frame later


@_jit
def _frames_to_swap(s, start_ns, address):
    """Frames from this callback's start to the frame where the pending swap takes over.

    That is the first frame whose beat reaches the next multiple of
    the record's ``every_beats`` (0: at once; also when nothing plays yet). The
    first program of a gated start waits for the frame of ``start_beat``
    instead (at once when that has passed).
    """
    if s.newest < 0:
        if s.start_gate == 0:
            return 0
        beat, tempo_bpm = _beat_at(s, start_ns)
        return max(np.int64(np.ceil((s.start_beat - beat) * 60.0 * s.sample_rate / tempo_bpm - FRAME_EPS)), 0)
    every = handover.program(address).every_beats
    if every <= 0.0:
        return 0
    beat, tempo_bpm = _beat_at(s, start_ns)
    boundary = np.ceil(beat / every) * every
    return max(np.int64(np.ceil((boundary - beat) * 60.0 * s.sample_rate / tempo_bpm - FRAME_EPS)), 0)


@_jit
def take_close(s):
    """A close request: every voice fades out; the answer comes once none plays (see :func:`render_voices`)."""
    if s.close_seq != s.close_ack and not s.closing:
        s.closing = 1
        s.newest = -1
        _fade_all_out(s, s.fade_frames)


@_jit
def _take_requests(s, start_ns, frame_count):
    """Answer close, control and swap requests at the callback's start.

    Writes pushed before a swap land in the state they were addressed to,
    then the swap carries them; writes for the new layout wait for it.
    Returns the frame where a requested program takes over later in this
    callback (it lands on a beat or bar), or -1, and its record's address.
    """
    take_close(s)
    posted = np.int64(0) if s.closing else handover.posted(s)
    _drain_controls(s, handover.program(posted).tag if posted != 0 else 0)
    if posted == 0:
        return np.int64(-1), posted
    at = _frames_to_swap(s, start_ns, posted)
    if at == 0:
        if _take_swap(s, posted):
            _drain_controls(s, 0)
        return np.int64(-1), posted
    return (at if at < frame_count else np.int64(-1)), posted


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
    prog = handover.program(s.v_rec[u])
    if prog.failed != 0:  # its kernel raised or faulted: silent until the next swap
        return True
    if prog.kernels[KERNEL_AUDIO] == 0:  # a patch with midi() alone, played by the jack runtime: silence
        return True
    carray(as_voidptr(s.events), 3, np.int32)[EVENT_HEADER_COUNT] = 0
    t0 = now_ns(s, slots_address)
    s.in_kernel = 1
    ok = call_kernel(prog.kernels[KERNEL_AUDIO], as_voidptr(prog.state), as_voidptr(s.ctx), as_voidptr(in_address),
                     as_voidptr(buf_address), as_voidptr(s.events))
    s.in_kernel = 0
    s.kernel_ns += now_ns(s, slots_address) - t0
    if ok == 0:
        # numba takes the GIL to report an exception: never call this kernel again.
        s.kernel_errors += 1
        prog.failed = 1
        buf[:] = 0.0
        return True
    if u == s.newest:
        slow = (now_ns(s, slots_address) - t0) * s.sample_rate > frames * 1e9
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
    _fill_context(s, frames, start_ns)
    render_voices(s, slots_address, in_address, out_address, frames)


@_jit
def render_voices(s, slots_address, in_address, out_address, frames):
    """Play one block of *frames* (at most ``max_frames``) into the output, the context filled:
    every voice's kernel, the watchdog, the clip and the meters."""
    out = carray(as_voidptr(out_address), frames * s.channels_out, np.float32)
    out[:] = 0.0
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
    """Copy the playing state for a snapshot request, between two blocks, and say whose it is."""
    address = s.snap_post
    acquire_fence()  # the request record is complete
    if address == 0:
        return
    req = carray(as_voidptr(address), 1, SNAP_DTYPE)[0]
    if req.seq == s.snap_ack:
        return
    req.copied = 0
    if s.playing != 0:
        prog = handover.program(s.playing)
        if prog.state_bytes <= req.bytes:
            carray(as_voidptr(req.dst), prog.state_bytes, np.uint8)[:] = carray(
                as_voidptr(prog.state), prog.state_bytes, np.uint8)
            req.copied = s.playing
    release_fence()
    s.snap_ack = req.seq


@_jit
def record_timing(s, start_ns, end_ns, frames, status_flags):
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
    split, posted = _take_requests(s, start_ns, frame_count)
    done = np.int64(0)
    while done < frame_count:
        end = split if done < split else frame_count
        key = keys.next_input_at(s, start_ns, frame_count)
        while key <= done:  # MIDI input due here: midi_in() runs before this frame plays
            _fill_context(s, frame_count - done, start_ns + np.int64(done * 1e9 / s.sample_rate))
            keys.play_input(s, key < done)
            key = keys.next_input_at(s, start_ns, frame_count)
        end = min(end, key)
        n = min(end - done, s.max_frames)
        block_in = s.silence_in
        if in_address != 0 and s.channels_in > 0:
            block_in = in_address + done * s.channels_in * 4
        at_ns = start_ns + np.int64(done * 1e9 / s.sample_rate)
        _render(s, slots_address, block_in, out_address + done * s.channels_out * 4, n, at_ns)
        done += n
        if done == split and _take_swap(s, posted):
            _drain_controls(s, 0)
    _answer_snapshot(s)


@numba.cfunc(CALLBACK_SIGNATURE, cache=True, nogil=True, error_model="numpy")
def audio_callback(input_p, output_p, frame_count, time_info_p, status_flags, user_p):
    """``PaStreamCallback``: play every voice into PortAudio's buffers; never stops."""
    slots_address = address_of(user_p)
    s = carray(user_p, 1, SLOTS_DTYPE)[0]
    s.entered += 1
    s.thread_id = _call_gettid(s.tid_fn)
    start_ns = now_ns(s, slots_address)
    _play(s, slots_address, address_of(input_p), address_of(output_p), frame_count, start_ns)
    record_timing(s, start_ns, now_ns(s, slots_address), frame_count, status_flags)
    return PA_CONTINUE


@_jit
def render_block(slots_address, out_address, frames, at_ns):
    """Play *frames* frames as if at monotonic *at_ns*, with no input: offline renders."""
    s = carray(as_voidptr(slots_address), 1, SLOTS_DTYPE)[0]
    _play(s, slots_address, 0, out_address, frames, at_ns)


