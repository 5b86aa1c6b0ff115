"""The tick engine: every MIDI kernel runs here, with no Python in the loop.

One native per-tick step, :func:`tick_step`, serves every way a MIDI kernel
plays: the JACK process callback :data:`process` (the ``midi`` runtime on a
JACK server: clock bytes and kernel events written at exact frame offsets),
and :data:`step`, called once per tick by a clock thread or a render loop
(the ``midi`` runtime over python-rtmidi, the ``logic`` runtime, offline MIDI
renders), which appends the tick's messages to the ``queue`` array instead.
So swaps, Start/Stop/Song Position, clock bytes, the sounding-note table and
the notes-off on close are the same code everywhere.

Everything the native code touches is reached through one record of
:data:`SLOTS_DTYPE` holding integer addresses (libjack entry points, the
playing program, buffers) and counters, so the compiled code holds no Python
object and loads from numba's cache.

Timing is in frames. Tick *n* is due at ``anchor_frame + (n - anchor_tick)
* frames_per_tick`` rounded to a frame: computed from an anchor, never
accumulated, so it cannot drift. A tempo change re-anchors at the last tick
played, so the next tick is one new period after it (no phase jump, no lost
or doubled tick).

Per tick: a Song Position jump, then state writes queued for the playing
program (:mod:`runtimes.realtime.controls`), then a pending program swap
(state carried, notes of the old program ended), then writes that waited for
the new layout, Start, the clock byte, messages from ``send()``, MIDI input
(mapped to state fields), and the kernel. Python hands things over only
through rings, and fields published with release/acquire ordering.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numba
import numpy as np
from numba import carray, types

from compiler_bridge.abi import (CTX_DTYPE, EVENT_CAPACITY, EVENT_HEADER_CHANNEL, EVENT_HEADER_COUNT,
                                 acquire_fence, as_voidptr, call_kernel, carry_state, fill_context, native_function,
                                 new_context, new_events, prefault, release_fence)
from compiler_bridge.config import swap_every_beats
from compiler_bridge.program import Program
from compiler_bridge.state import StateLayout

from ..base import wait_until
from ..realtime import controls, ring
from ..realtime.controls import ControlRing
from ..realtime.ring import Ring

# run_state values
IDLE, STARTING, RUNNING, STOPPING, STOPPED = 0, 1, 2, 3, 4

HIST_FRAMES = 4096  # lateness histogram buckets, one per frame (the last holds the rest)
QUEUE_CAPACITY = 4096  # messages per tick on the ticked path
CONTROL_ROWS = 130  # rows 0-127: CC number -> field; row 128: note field; row 129: velocity field
ROW_NOTE, ROW_VELOCITY = 128, 129

# Following an outside clock: the tempo is the least-squares slope of the last
# CLOCK_WINDOW clock bytes' frames (four beats); a byte further than CLOCK_RESET of a
# period from where the slope puts it starts the window again (a tempo change, a
# lost byte), so a new tempo is estimated from its own bytes only: with +-0.5 ms of
# jitter, one beat of them gives it within about 0.05 BPM (one standard deviation at
# 140 BPM), two beats within about 0.02. None for LOST_CLOCKS periods: the clock is
# lost, the ticks go on at its last tempo until it comes back.
# Bytes closer together than a tempo of MAX_CLOCK_BPM (the config's bound) are a burst:
# held up upstream (a late client, a busy USB or network link) and delivered at once.
# They count as ticks but say nothing of the tempo, and a tempo is published only from
# a window whose intervals agree (three bytes or more) and that lies within the bounds.
# A JACK frame time that goes back, or forward by more than JUMP_S past the cycle expected, is the
# server's frame clock set anew, not time that passed: PipeWire moves a client to another driver when
# the graph changes (seen: 22,528 frames back when an audio client joined or left). The ticks'
# schedule goes on by the time that passed on JACK's clock (which runs on across drivers), or, when
# that is not known, as if the cycle had followed the last. A smaller step forward is missed cycles
# (an xrun): their ticks are played late, at once.
JUMP_S = 0.5
CLOCK_WINDOW = 96
CLOCK_RESET = 0.1
LOST_CLOCKS = 3.0
MIN_CLOCK_BPM, MAX_CLOCK_BPM = 20.0, 999.0
EXT_STOPPED, EXT_ARMED, EXT_RUNNING = 0, 1, 2

# One MIDI message of up to three bytes: the outbox (send()) and the input ring (rtmidi input).
MESSAGE_DTYPE = np.dtype([("status", "u1"), ("data1", "u1"), ("data2", "u1"), ("size", "u1")])

SLOTS_DTYPE = np.dtype(
    [
        # libjack entry points and handles (0 on the ticked path)
        ("fn_get_buffer", "i8"), ("fn_clear_buffer", "i8"), ("fn_event_write", "i8"),
        ("fn_last_frame_time", "i8"), ("fn_event_count", "i8"), ("fn_event_get", "i8"),
        ("client", "i8"), ("out_port", "i8"), ("in_port", "i8"),
        # buffers owned by the Python side (addresses)
        ("ctx", "i8"), ("events", "i8"), ("notes", "i8"), ("hist", "i8"), ("scratch", "i8"), ("queue", "i8"),
        # rings (header, records, capacity): state writes, send() messages, rtmidi input
        ("controls", "i8", (3,)), ("outbox", "i8", (3,)), ("inbox", "i8", (3,)),
        # the playing program (an address of a PROGRAM_DTYPE record) and a pending swap
        ("program", "i8"), ("pending", "i8"), ("swaps", "i8"),
        # schedule, in frames
        ("run_state", "i8"), ("next_tick", "i8"), ("anchor_tick", "i8"), ("anchor_frame", "f8"),
        ("frames_per_tick", "f8"), ("tempo_bpm", "f8"), ("sample_rate", "f8"),
        ("pending_bpm", "f8"), ("tempo_seq", "i8"), ("tempo_applied", "i8"),
        ("ppqn", "i8"), ("clock_div", "i8"), ("send_clock", "i8"), ("send_transport", "i8"),
        ("channel", "i8"), ("last_note_in", "i8"),
        # the cycle's first frame on the engine's own count (JACK's frame time unwrapped, and carried
        # across a jump of it), JACK's frame time of that cycle, its length (0: no cycle yet), jumps
        ("cycle_start", "i8"), ("last_cycle", "i8"), ("cycle_frames", "i8"), ("clock_jumps", "i8"),
        ("cycle_us", "f8"),  # that cycle's time on JACK's clock (jack_frames_to_time; JACK path)
        ("beat_origin", "f8"),  # the transport's beat at tick 0
        ("jump_tick", "i8"),  # -1, or the tick to continue from at the next tick (Song Position Pointer)
        ("release", "i8"),  # 1: end the sounding notes at the next tick (the channel setting changed)
        ("panic", "i8"),  # 1: All Notes Off on every channel before Start (a previous run may have left notes on)
        # counters read by stats()
        ("ticks", "i8"), ("late_ticks", "i8"), ("max_late_frames", "i8"), ("drift_frames", "f8"),
        ("events_out", "i8"), ("events_in", "i8"), ("notes_on", "i8"), ("channels_used", "i8"),
        ("kernel_errors", "i8"), ("dropped", "i8"), ("cycles", "i8"), ("queued", "i8"),
        ("writes_applied", "i8"), ("writes_dropped", "i8"),
        # liveness, read by the host's heartbeat: calls of process() or step() begun and returned, and 1
        # while a kernel runs (a call begun and not returned, with this set, is a kernel that hangs)
        ("entered", "i8"), ("returned", "i8"), ("in_kernel", "i8"),
        # following an outside MIDI clock (JACK path, ``clock_source = "midi"``)
        ("follow", "i8"),  # 1: incoming clock bytes drive the ticks
        ("clk_window", "i8"),  # address of a float64 CLOCK_WINDOW array: the latest clock bytes' frames
        ("clk_n", "i8"), ("clk_head", "i8"),  # frames in the window, next slot
        ("clk_period", "f8"), ("clk_last", "f8"),  # frames per clock byte (least squares), last clock's frame
        ("clk_slope", "f8"),  # frames per clock byte of the window so far (clk_period once published)
        ("clk_index", "i8"),  # the clock byte that plays next (armed) or played last (running), from Start
        ("ext", "i8"),  # EXT_STOPPED, EXT_ARMED (Start/Continue seen: the next clock plays) or EXT_RUNNING
        ("clk_lost", "i8"),  # 1: no clock byte for LOST_CLOCKS periods: the last tempo holds
        ("clocks_in", "i8"), ("clock_losses", "i8"), ("clock_resets", "i8"),
        # an Ableton Link session's timeline (JACK path): beat = link_beat + (t - link_time_us) * tempo / 60e6,
        # published by a host thread under link_seq (odd while it writes); tick n sits at beat n / ppqn
        ("link", "i8"), ("fn_frames_to_time", "i8"), ("link_seq", "i8"),
        ("link_tempo", "f8"), ("link_beat", "f8"), ("link_time_us", "f8"),
        ("link_quantum", "f8"), ("link_latency_us", "f8"),
        ("link_on", "i8"),  # 1 once a tick was placed on the timeline (before: the first goes to a quantum boundary)
        # a start on a beat (JACK path, no Link): tick 0 at the frame where the host's transport, published
        # in the link_* fields on JACK's clock, reaches start_beat
        ("start_on", "i8"), ("start_beat", "f8"),
    ],
    align=True,
)

PROGRAM_DTYPE = np.dtype(
    [
        ("kernel", "i8"),  # native entry address, 0 when the program has no midi kernel
        ("state", "i8"),  # address of the state record
        ("state_bytes", "i8"),
        ("tag", "i8"),  # the state's layout tag
        ("carry", "i8"), ("carry_rows", "i8"),  # int64 (rows, 3) copy table from the previous program
        ("controls", "i8"),  # int64 (CONTROL_ROWS, 2) [byte offset, kind]; offset -1 = unmapped; swapped by pointer
        ("failed", "i8"),  # the kernel raised: it is not called again
        ("swap_every", "i8"),  # ticks: it takes over at the first tick on a multiple of this many; 0: any
    ],
    align=True,
)


# error_model="numpy": nothing in the process thread raises (a Python exception there
# would take the GIL to be reported and leave the slots half written).
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

# --- calls into libjack by integer address (cacheable: no ctypes objects) -----

_jack_port_get_buffer = native_function("ptr", "ptr", "i32")  # (port, nframes) -> buffer
_jack_midi_clear_buffer = native_function("void", "ptr")  # (buffer)
_jack_midi_event_write = native_function("i32", "ptr", "i32", "ptr", "i64")  # (buffer, time, data, size)
_jack_last_frame_time = native_function("u32", "ptr")  # (client) -> frames
_jack_midi_get_event_count = native_function("u32", "ptr")  # (buffer) -> count
_jack_midi_event_get = native_function("i32", "ptr", "ptr", "i32")  # (jack_midi_event_t *, buffer, index)
_jack_frames_to_time = native_function("i64", "ptr", "u32")  # (client, frames) -> microseconds


# --- helpers ---------------------------------------------------------------------


@_jit
def _program(address):
    return carray(as_voidptr(address), 1, PROGRAM_DTYPE)[0]


@_jit
def _message_length(status):
    """Bytes in a message with this status (channel and system real-time messages)."""
    kind = status & 0xF0
    if kind == 0xC0 or kind == 0xD0 or status == 0xF1 or status == 0xF3:
        return 2
    if status >= 0xF4 or status == 0xF6:
        return 1
    return 3


@_jit
def _write(sl, out_buffer, offset, status, data1, data2):
    """Write one message at frame *offset* (JACK) or append it to the queue."""
    size = _message_length(status)
    if out_buffer != 0:
        scratch = carray(as_voidptr(sl.scratch), 8, np.uint8)
        scratch[0], scratch[1], scratch[2] = status, data1, data2
        if _jack_midi_event_write(sl.fn_event_write, out_buffer, offset, sl.scratch, size) != 0:
            sl.dropped += 1
            return
    else:
        if sl.queued >= QUEUE_CAPACITY:
            sl.dropped += 1
            return
        queue = carray(as_voidptr(sl.queue), (QUEUE_CAPACITY, 4), np.int32)
        queue[sl.queued, 0], queue[sl.queued, 1], queue[sl.queued, 2], queue[sl.queued, 3] = status, data1, data2, size
        sl.queued += 1
    sl.events_out += 1
    if status < 0xF0:
        sl.channels_used |= 1 << (status & 15)


@_jit
def _track(sl, status, data1, data2):
    """Keep the sounding-note table in step with a message going out."""
    kind = status & 0xF0
    if kind != 0x80 and kind != 0x90:
        return
    notes = carray(as_voidptr(sl.notes), 16 * 128, np.uint8)
    slot = (status & 15) * 128 + (data1 & 127)
    on = kind == 0x90 and data2 > 0
    if on and notes[slot] == 0:
        sl.notes_on += 1
    elif not on and notes[slot] != 0:
        sl.notes_on -= 1
    notes[slot] = 1 if on else 0


@_jit
def _release_notes(sl, out_buffer, offset):
    """NoteOff for each sounding note."""
    notes = carray(as_voidptr(sl.notes), 16 * 128, np.uint8)
    for slot in range(16 * 128):
        if notes[slot] != 0:
            notes[slot] = 0
            _write(sl, out_buffer, offset, 0x80 | (slot // 128), slot % 128, 64)
    sl.notes_on = 0


@_jit
def _silence(sl, out_buffer, offset):
    """NoteOff for each sounding note, then All Notes Off on every channel used."""
    _release_notes(sl, out_buffer, offset)
    used = sl.channels_used
    for ch in range(16):
        if used & (1 << ch):
            _write(sl, out_buffer, offset, 0xB0 | ch, 123, 0)


@_jit
def _header(triple):
    """The header of a ring whose ``[header, records, capacity]`` addresses are *triple*."""
    return carray(as_voidptr(triple[0]), ring.HEADER_SIZE, np.int64)


@_jit
def _messages(triple):
    return carray(as_voidptr(triple[1]), triple[2], MESSAGE_DTYPE)


@_jit
def _drain_controls(sl, stop_tag):
    """Apply queued state writes to the playing state; stop at writes for *stop_tag*."""
    if sl.program == 0:
        return
    prog = _program(sl.program)
    header = _header(sl.controls)
    records = carray(as_voidptr(sl.controls[1]), sl.controls[2], controls.WRITE_DTYPE)
    applied, dropped = controls.drain(header, records, carray(as_voidptr(prog.state), prog.state_bytes, np.uint8),
                                      prog.tag, stop_tag)
    sl.writes_applied += applied
    sl.writes_dropped += dropped


@_jit
def _swap_if_pending(sl, out_buffer, offset):
    """Switch to the pending program, carrying state bytes across layouts (not from a
    program whose kernel faulted).

    Writes queued for the old state are applied first (then carried), writes
    for the new layout after. Notes the old kernel left sounding end here:
    the new kernel may never send their NoteOff (a save that changed the
    notes would leave them stuck).
    """
    pending = sl.pending
    acquire_fence()  # the record behind the address is complete
    if pending == 0 or pending == sl.program:
        _drain_controls(sl, 0)
        return
    new = _program(pending)
    _drain_controls(sl, new.tag)
    if sl.program != 0 and new.swap_every > 1:  # a swap on the beat or bar: the first tick at or after it
        at = sl.beat_origin * sl.ppqn + sl.next_tick  # the transport's position in ticks
        if np.floor(at / new.swap_every) == np.floor((at - 1.0) / new.swap_every):
            return
    if sl.program != 0 and _program(sl.program).failed == 0:  # a faulted kernel's state is not carried:
        old = _program(sl.program)  # (an index out of range may be in it) the next program starts afresh
        src = carray(as_voidptr(old.state), old.state_bytes, np.uint8)
        dst = carray(as_voidptr(new.state), new.state_bytes, np.uint8)
        carry_state(src, dst, carray(as_voidptr(new.carry), (new.carry_rows, 3), np.int64))
    _release_notes(sl, out_buffer, offset)
    sl.program = pending
    sl.swaps += 1
    _drain_controls(sl, 0)


@_jit
def _run_kernel(sl, out_buffer, offset, tick, due_frame):
    """Call the playing program's midi kernel once and write what it emitted."""
    if sl.program == 0:
        return
    prog = _program(sl.program)
    if prog.kernel == 0 or prog.failed != 0:
        return
    ctx = carray(as_voidptr(sl.ctx), 1, CTX_DTYPE)
    fill_context(ctx, np.int64(sl.frames_per_tick + 0.5), tick, due_frame, sl.beat_origin + tick / sl.ppqn,
                 sl.tempo_bpm)
    ctx[0].channel = sl.channel
    ev = carray(as_voidptr(sl.events), (EVENT_CAPACITY + 1, 3), np.int32)
    ev[0, EVENT_HEADER_COUNT] = 0
    ev[0, EVENT_HEADER_CHANNEL] = sl.channel
    sl.in_kernel = 1
    ok = call_kernel(prog.kernel, as_voidptr(prog.state), as_voidptr(sl.ctx), as_voidptr(0), as_voidptr(0),
                     as_voidptr(sl.events))
    sl.in_kernel = 0
    if ok == 0:
        sl.kernel_errors += 1
        prog.failed = 1
        _silence(sl, out_buffer, offset)
        return
    for i in range(1, ev[0, EVENT_HEADER_COUNT] + 1):
        _send(sl, out_buffer, offset, ev[i, 0], ev[i, 1], ev[i, 2])


@_jit
def _send(sl, out_buffer, offset, status, data1, data2):
    """Write one message and keep the sounding-note table in step with it."""
    _write(sl, out_buffer, offset, status, data1, data2)
    _track(sl, status, data1, data2)


@_jit
def _drain_outbox(sl, out_buffer, offset):
    """Write what Python sent (``MidiRuntime.send``) at this tick; notes are tracked."""
    header, records = _header(sl.outbox), _messages(sl.outbox)
    slot = ring.peek(header, records.shape[0])
    while slot >= 0:
        m = records[slot]
        _send(sl, out_buffer, offset, np.int64(m.status), np.int64(m.data1), np.int64(m.data2))
        ring.advance(header)
        slot = ring.peek(header, records.shape[0])


@_jit
def _drain_inbox(sl):
    """Map MIDI input that arrived through Python (rtmidi) to state writes."""
    header, records = _header(sl.inbox), _messages(sl.inbox)
    slot = ring.peek(header, records.shape[0])
    while slot >= 0:
        m = records[slot]
        control_in(sl, np.int64(m.status), np.int64(m.data1), np.int64(m.data2))
        ring.advance(header)
        slot = ring.peek(header, records.shape[0])


@_jit
def tick_step(sl, out_buffer, offset, due_frame, late_frames, ideal_frame):
    """Play tick ``sl.next_tick``: Start, clock, the kernel's events; count it.

    *offset* is the frame offset in the JACK buffer (ignored without one),
    *late_frames* how far after its due frame it is written (frames).
    """
    if sl.jump_tick >= 0:
        _jump(sl, out_buffer, offset, ideal_frame)
    tick = sl.next_tick
    if sl.release != 0:
        sl.release = 0
        _release_notes(sl, out_buffer, offset)
    _swap_if_pending(sl, out_buffer, offset)
    if sl.ticks == 0 and sl.panic != 0:
        for ch in range(16):
            _write(sl, out_buffer, offset, 0xB0 | ch, 123, 0)
    if sl.ticks == 0 and sl.send_transport != 0 and sl.follow == 0:  # (a follower passes on the leader's)
        _write(sl, out_buffer, offset, 0xFA, 0, 0)
    if sl.send_clock != 0 and tick % sl.clock_div == 0:
        _write(sl, out_buffer, offset, 0xF8, 0, 0)
    _drain_outbox(sl, out_buffer, offset)
    _drain_inbox(sl)
    _run_kernel(sl, out_buffer, offset, tick, due_frame)
    hist = carray(as_voidptr(sl.hist), HIST_FRAMES, np.int64)
    hist[min(late_frames, HIST_FRAMES - 1)] += 1
    if late_frames > 0:
        sl.late_ticks += 1
        sl.max_late_frames = max(sl.max_late_frames, late_frames)
    sl.drift_frames = due_frame + late_frames - ideal_frame
    sl.next_tick = tick + 1
    sl.ticks += 1


@_jit
def _jump(sl, out_buffer, offset, ideal_frame):
    """Continue from ``sl.jump_tick`` at this tick's time: Stop, Song Position, Continue.

    The time grid is kept (re-anchored at this tick), only the tick count moves.
    """
    tick = sl.jump_tick
    sl.jump_tick = -1
    sl.anchor_frame = ideal_frame
    sl.anchor_tick = tick
    sl.next_tick = tick
    if sl.send_transport != 0 and sl.ticks > 0:
        sixteenths = tick // (6 * sl.clock_div)
        _write(sl, out_buffer, offset, 0xFC, 0, 0)
        _write(sl, out_buffer, offset, 0xF2, sixteenths & 127, (sixteenths >> 7) & 127)
        _write(sl, out_buffer, offset, 0xFB, 0, 0)


@_jit
def finish_step(sl, out_buffer):
    """End every sounding note, send Stop; nothing plays after this."""
    _drain_outbox(sl, out_buffer, 0)  # what was sent before close still goes out (and its notes end)
    _silence(sl, out_buffer, 0)
    if sl.send_transport != 0 and sl.run_state != IDLE:
        _write(sl, out_buffer, 0, 0xFC, 0, 0)
    sl.run_state = STOPPED


@_jit
def _ideal(sl, tick):
    """The frame, unrounded, where *tick* is due on the schedule's anchor and period."""
    return sl.anchor_frame + (tick - sl.anchor_tick) * sl.frames_per_tick


@_jit
def _retempo(sl):
    """Apply a pending tempo: the next tick comes one new period after the last."""
    seq = sl.tempo_seq
    acquire_fence()  # pending_bpm was stored before tempo_seq
    if seq == sl.tempo_applied:
        return
    new_fpt = sl.sample_rate * 60.0 / (sl.pending_bpm * sl.ppqn)
    if sl.next_tick > 0:
        last = _ideal(sl, sl.next_tick - 1)  # (frames_per_tick is still the old one)
        sl.anchor_frame = last + new_fpt
        sl.anchor_tick = sl.next_tick
    sl.frames_per_tick = new_fpt
    sl.tempo_bpm = sl.pending_bpm
    sl.tempo_applied = seq


@_jit
def _start(sl, start_frame):
    """Tick 0 is due at *start_frame*."""
    sl.anchor_frame = start_frame
    sl.anchor_tick = 0
    sl.next_tick = 0
    sl.run_state = RUNNING


# --- MIDI input -------------------------------------------------------------------


@_jit
def _write_field(sl, prog, controls_table, row, value):
    offset = controls_table[row, 0]
    if offset < 0:
        return
    if controls.write_value(carray(as_voidptr(prog.state), prog.state_bytes, np.uint8), offset,
                            controls_table[row, 1], value):
        sl.writes_applied += 1


@_jit
def control_in(sl, status, data1, data2):
    """Write one incoming message to the playing state's mapped fields (``cc_map``, ``note_field`` ...)."""
    sl.events_in += 1
    if sl.program == 0:
        return
    prog = _program(sl.program)
    table_address = prog.controls
    acquire_fence()  # a table swapped in by pointer is complete
    table = carray(as_voidptr(table_address), (CONTROL_ROWS, 2), np.int64)
    kind = status & 0xF0
    if kind == 0xB0:
        _write_field(sl, prog, table, data1 & 127, data2)
    elif kind == 0x90 and data2 > 0:
        _write_field(sl, prog, table, ROW_NOTE, data1)
        _write_field(sl, prog, table, ROW_VELOCITY, data2)
        sl.last_note_in = data1
    elif (kind == 0x80 or kind == 0x90) and data1 == sl.last_note_in:
        _write_field(sl, prog, table, ROW_VELOCITY, 0)
        sl.last_note_in = -1


@_jit
def _input_event(sl, in_buffer, index):
    """JACK input event *index*: ``(frame offset, size, data address)``; offset -1 when it cannot be read."""
    event = carray(as_voidptr(sl.scratch + 8), 3, np.int64)  # jack_midi_event_t
    if _jack_midi_event_get(sl.fn_event_get, sl.scratch + 8, in_buffer, index) != 0:
        return np.int64(-1), np.int64(0), np.int64(0)
    return np.int64(event[0] & 0xFFFFFFFF), np.int64(event[1]), np.int64(event[2])


@_jit
def _message_in(sl, data, size):
    """A channel message from the input to the state's mapped fields; anything shorter is only counted."""
    if size >= 2:
        control_in(sl, np.int64(data[0]), np.int64(data[1]), np.int64(data[2]) if size >= 3 else 0)
    else:
        sl.events_in += 1


@_jit
def _read_input(sl, in_buffer, index, count, until_offset):
    """Take JACK input events with frame offset <= *until_offset*; return the next index."""
    while index < count:
        offset, size, address = _input_event(sl, in_buffer, index)
        if offset > until_offset:
            break
        if offset >= 0:
            _message_in(sl, carray(as_voidptr(address), max(size, 1), np.uint8), size)
        index += 1
    return index


# --- following an outside MIDI clock (JACK path) ----------------------------------------


@_jit
def _clock_estimate(sl, frame):
    """Add a clock byte at *frame* to the window and estimate frames per clock byte from it."""
    window = carray(as_voidptr(sl.clk_window), CLOCK_WINDOW, np.float64)
    tolerance = CLOCK_RESET if sl.clk_n >= 4 else 2.5 * CLOCK_RESET  # a period from few bytes is rougher
    shortest = sl.sample_rate * 60.0 / (24.0 * MAX_CLOCK_BPM)
    longest = sl.sample_rate * 60.0 / (24.0 * MIN_CLOCK_BPM)
    interval = frame - sl.clk_last
    if (sl.clk_n >= 1 and interval < shortest  # a burst
            or sl.clk_n == 1 and interval > sl.sample_rate  # a pause: slower than 2.5 BPM is no clock
            or sl.clk_n >= 2 and abs(interval - sl.clk_slope) > tolerance * sl.clk_slope):
        sl.clk_n = 0  # a new tempo, a lost byte, a burst or a pause: this byte starts the window; the tempo holds
        sl.clock_resets += 1
    window[sl.clk_head % CLOCK_WINDOW] = frame
    sl.clk_head += 1
    sl.clk_n = min(sl.clk_n + 1, CLOCK_WINDOW)
    sl.clk_last = frame
    sl.clocks_in += 1
    n = sl.clk_n
    if n < 2:
        return
    first = window[(sl.clk_head - n) % CLOCK_WINDOW]
    mean_x = (n - 1) / 2.0
    sxy = sxx = 0.0
    for i in range(n):
        dx = i - mean_x
        sxy += dx * (window[(sl.clk_head - n + i) % CLOCK_WINDOW] - first)
        sxx += dx * dx
    sl.clk_slope = sxy / sxx  # (two bytes at least a burst's interval apart: above zero)
    if n >= 3 and shortest <= sl.clk_slope <= longest:
        sl.clk_period = sl.clk_slope
        sl.tempo_bpm = sl.sample_rate * 60.0 / (sl.clk_period * 24.0)


@_jit
def _follow_ticks(sl, out_buffer, start, until):
    """Play the ticks between clock bytes (``ppqn`` over 24) due before frame *until*: at most
    up to the next clock byte's tick, unless the clock is lost."""
    while sl.ext == EXT_RUNNING:
        if sl.clk_lost == 0 and sl.next_tick >= (sl.clk_index + 1) * sl.clock_div:
            break  # the next tick comes with the next clock byte
        ideal = _ideal(sl, sl.next_tick)
        due = np.int64(np.floor(ideal + 0.5))
        if due >= until:
            break
        late = max(start - due, 0)
        tick_step(sl, out_buffer, due + late - start, due, late, ideal)


@_jit
def _clock_in(sl, out_buffer, offset, frame):
    """A clock byte at *frame*: its tick plays at that very frame (the clock out goes with it)."""
    _clock_estimate(sl, frame)
    if sl.ext == EXT_STOPPED:
        return
    if sl.ext == EXT_ARMED:
        sl.ext = EXT_RUNNING
    else:
        sl.clk_index += 1
    if sl.clk_lost != 0:  # back: go on from the tick the free run reached, at this byte
        sl.clk_lost = 0
        sl.clk_index = max(sl.clk_index, (sl.next_tick + sl.clock_div - 1) // sl.clock_div)
    tick = sl.clk_index * sl.clock_div
    while sl.next_tick < tick:  # the byte came before the ticks predicted ahead of it: they play now
        tick_step(sl, out_buffer, offset, frame, 0, frame)
    sl.next_tick = tick
    sl.anchor_frame, sl.anchor_tick = frame, tick
    if sl.clk_period > 0.0:
        sl.frames_per_tick = sl.clk_period / sl.clock_div
    tick_step(sl, out_buffer, offset, frame, 0, frame)


@_jit
def _transport_in(sl, out_buffer, offset, status, data1, data2):
    """Start, Continue, Stop and Song Position from the leader; passed on with ``send_transport``."""
    if status == 0xFA:  # Start: the next clock byte is tick 0
        sl.clk_index, sl.ext = 0, EXT_ARMED
    elif status == 0xFB:  # Continue: the next clock byte plays where the song stood
        sl.ext = EXT_ARMED
    elif status == 0xFC:  # Stop: the notes end, the position stays (the next byte's)
        if sl.ext == EXT_RUNNING:
            sl.clk_index += 1
        sl.ext = EXT_STOPPED
        _release_notes(sl, out_buffer, offset)
    else:  # Song Position Pointer, in sixteenths (6 clock bytes each)
        sl.clk_index = ((data2 & 127) << 7 | (data1 & 127)) * 6
        if sl.ext == EXT_RUNNING:
            sl.ext = EXT_ARMED
    if sl.ext == EXT_ARMED:
        sl.next_tick = sl.clk_index * sl.clock_div
    sl.events_in += 1
    if sl.send_transport != 0:
        _write(sl, out_buffer, offset, status, data1, data2)


@_jit
def _follow_cycle(sl, out_buffer, in_buffer, start, nframes):
    """A cycle led by the incoming clock: each input event in frame order, the ticks between."""
    count = _jack_midi_get_event_count(sl.fn_event_count, in_buffer) if in_buffer != 0 else 0
    for index in range(count):
        offset, size, address = _input_event(sl, in_buffer, index)
        if offset < 0 or size < 1:
            continue
        data = carray(as_voidptr(address), size, np.uint8)
        status = np.int64(data[0])
        _follow_ticks(sl, out_buffer, start, start + offset)
        if status == 0xF8:
            _clock_in(sl, out_buffer, offset, start + offset)
        elif status == 0xFA or status == 0xFB or status == 0xFC or status == 0xF2 and size >= 3:
            _transport_in(sl, out_buffer, offset, status, np.int64(data[1]) if size >= 3 else 0,
                          np.int64(data[2]) if size >= 3 else 0)
        else:
            _message_in(sl, data, size)
    end = start + nframes
    if (sl.ext == EXT_RUNNING and sl.clk_lost == 0 and sl.clk_period > 0.0
            and end - sl.clk_last > LOST_CLOCKS * sl.clk_period):
        sl.clk_lost = 1  # free run at the last tempo, from the tick that would have come next
        sl.clock_losses += 1
        sl.anchor_tick = sl.next_tick
        sl.anchor_frame = float(end)
    _follow_ticks(sl, out_buffer, start, end)


# --- playing on an Ableton Link session's timeline (JACK path) -------------------------


@_jit
def _heard_us(sl, start):
    """When the cycle that begins at frame *start* is heard, on JACK's clock (microseconds): the
    cycle's time from ``jack_frames_to_time``, plus the output latency."""
    jack_frame = (sl.last_cycle + start - sl.cycle_start) & 0xFFFFFFFF  # (the engine's count may differ from JACK's)
    return float(_jack_frames_to_time(sl.fn_frames_to_time, sl.client, jack_frame)) + sl.link_latency_us


@_jit
def _frame_of_beat(sl, start, t_start, beat, tempo, beat0, time0):
    """The frame (unrounded) where a timeline (*beat0* at *time0* on JACK's clock, at *tempo*)
    reaches *beat*, from the cycle that begins at frame *start*, heard at *t_start*."""
    return start + (time0 + (beat - beat0) * 60e6 / tempo - t_start) * sl.sample_rate / 1e6


@_jit
def _link_anchor(sl, start, starting):
    """Anchor the tick schedule at this cycle on the published Link timeline; False
    when there is none yet. *starting*: the first tick is the session's next
    quantum boundary (a quantized launch, in phase with the other peers).

    JACK's clock and Link's are both CLOCK_MONOTONIC_RAW on Linux: the cycle's
    time comes from ``jack_frames_to_time``, plus the output latency.
    """
    seq = sl.link_seq
    acquire_fence()  # the fields were stored before link_seq
    if seq == 0 or seq & 1:
        return seq != 0 and not starting  # being written: the last anchor holds
    tempo, beat0, time0 = sl.link_tempo, sl.link_beat, sl.link_time_us
    acquire_fence()
    if sl.link_seq != seq:
        return not starting
    us_per_beat = 60e6 / tempo
    t_start = _heard_us(sl, start)
    if starting:
        beat_start = beat0 + (t_start - time0) / us_per_beat
        sl.next_tick = np.int64(np.ceil(beat_start / sl.link_quantum) * sl.link_quantum * sl.ppqn)
    sl.anchor_tick = sl.next_tick
    sl.anchor_frame = _frame_of_beat(sl, start, t_start, sl.next_tick / sl.ppqn, tempo, beat0, time0)
    sl.frames_per_tick = sl.sample_rate * us_per_beat / (1e6 * sl.ppqn)
    sl.tempo_bpm = tempo
    return True


@_jit
def _start_on_beat(sl, start):
    """Tick 0 is due at the frame where the transport reaches ``start_beat`` (the kernels'
    ``ctx.beat`` goes on from it), or at *start* when that frame has passed."""
    sl.start_on = 0
    seq = sl.link_seq
    acquire_fence()  # the fields were stored before link_seq
    tempo, beat0, time0 = sl.link_tempo, sl.link_beat, sl.link_time_us
    if seq == 0 or seq & 1 or tempo <= 0.0:
        _start(sl, start)
        return
    frame = _frame_of_beat(sl, start, _heard_us(sl, start), sl.start_beat, tempo, beat0, time0)
    _start(sl, max(frame, float(start)))
    if frame >= start:
        sl.beat_origin = sl.start_beat


# --- the JACK process callback -------------------------------------------------------


@_jit
def _cycle_start(sl, cycle_u32, nframes):
    """This cycle's first frame on the engine's count: JACK's frame time *cycle_u32* unwrapped
    (jack_nframes_t wraps after about 24 h at 48 kHz), a jump of it carried over (see JUMP_S)."""
    step = (cycle_u32 - sl.last_cycle) & 0xFFFFFFFF  # frames since the last cycle began
    now_us = -1.0
    if sl.fn_frames_to_time != 0:
        now_us = float(_jack_frames_to_time(sl.fn_frames_to_time, sl.client, cycle_u32))
    most = sl.cycle_frames + JUMP_S * sl.sample_rate
    if sl.cycle_frames == 0:  # the first cycle (on this server)
        sl.cycle_start = cycle_u32
    elif step >= 1 << 31 or step > most:
        sl.clock_jumps += 1
        step = sl.cycle_frames
        if now_us >= 0.0 and sl.cycle_us >= 0.0:
            passed = np.int64(np.floor((now_us - sl.cycle_us) * sl.sample_rate / 1e6 + 0.5))
            if 0 < passed <= most:
                step = passed
        sl.cycle_start += step
    else:
        sl.cycle_start += step
    sl.last_cycle, sl.cycle_frames, sl.cycle_us = cycle_u32, nframes, now_us
    return sl.cycle_start


@_jit
def run_cycle(sl, out_buffer, in_buffer, cycle_u32, nframes):
    """Play every tick due in this cycle of *nframes* frames starting at JACK frame *cycle_u32*."""
    start = _cycle_start(sl, cycle_u32, nframes)
    sl.cycles += 1
    state = sl.run_state
    if state == STOPPING:
        finish_step(sl, out_buffer)
        return
    if state != STARTING and state != RUNNING:
        return
    if sl.link != 0 and sl.follow == 0:
        if not _link_anchor(sl, start, state == STARTING or sl.link_on == 0):
            return  # no timeline yet: the first tick waits for it
        sl.link_on = 1
        sl.run_state = state = RUNNING
    if state == STARTING:
        if sl.start_on != 0 and sl.link == 0 and sl.follow == 0:
            _start_on_beat(sl, start)
        else:
            _start(sl, start)
        if sl.follow != 0:  # nothing plays before the leader's Start (or Continue)
            sl.next_tick, sl.ext = 0, EXT_STOPPED
    if sl.follow != 0:
        _follow_cycle(sl, out_buffer, in_buffer, start, nframes)
        return
    if sl.link == 0:
        _retempo(sl)
    count = _jack_midi_get_event_count(sl.fn_event_count, in_buffer) if in_buffer != 0 else 0
    index = 0
    end = start + nframes
    while True:
        ideal = _ideal(sl, sl.next_tick)
        due = np.int64(np.floor(ideal + 0.5))
        if due >= end:
            break
        late = max(start - due, 0)
        offset = due + late - start
        index = _read_input(sl, in_buffer, index, count, offset)
        tick_step(sl, out_buffer, offset, due, late, ideal)
    _read_input(sl, in_buffer, index, count, nframes)


@numba.cfunc(types.int32(types.uint32, types.voidptr), cache=True, nogil=True, error_model="numpy")
def process(nframes, arg):
    """JACK process callback; *arg* is the address of a :data:`SLOTS_DTYPE` record."""
    sl = carray(arg, 1, SLOTS_DTYPE)[0]
    sl.entered += 1
    out_buffer = _jack_port_get_buffer(sl.fn_get_buffer, sl.out_port, nframes)
    _jack_midi_clear_buffer(sl.fn_clear_buffer, out_buffer)
    in_buffer = np.int64(0)
    if sl.in_port != 0:
        in_buffer = _jack_port_get_buffer(sl.fn_get_buffer, sl.in_port, nframes)
    cycle = _jack_last_frame_time(sl.fn_last_frame_time, sl.client)
    run_cycle(sl, out_buffer, in_buffer, cycle, np.int64(nframes))
    sl.returned += 1
    return 0


# --- the ticked path ----------------------------------------------------------------


@_jit
def _ticked_step(sl):
    sl.queued = 0
    if sl.run_state == STOPPING:
        finish_step(sl, np.int64(0))
        return 0
    if sl.run_state == STARTING:
        _start(sl, 0.0)
    if sl.run_state != RUNNING:
        return 0
    _retempo(sl)
    ideal = _ideal(sl, sl.next_tick)
    tick_step(sl, np.int64(0), np.int64(0), np.int64(np.floor(ideal + 0.5)), np.int64(0), ideal)
    return 1


@numba.cfunc(types.int32(types.voidptr), cache=True, nogil=True, error_model="numpy")
def step(arg):
    """One tick on the ticked path: fills ``queue`` (``sl.queued`` rows); 0 once stopped.

    The tick's frame is on a nominal ``sample_rate`` timeline from tick 0, as
    on the JACK path, so a kernel sees the same context everywhere.
    """
    sl = carray(arg, 1, SLOTS_DTYPE)[0]
    sl.entered += 1
    played = _ticked_step(sl)
    sl.returned += 1
    return played


# --- the Python side ------------------------------------------------------------------


def control_table(layout: StateLayout, settings: dict[str, Any]) -> np.ndarray:
    """Return the int64 ``(CONTROL_ROWS, 2)`` map of MIDI input to state fields.

    Rows 0-127 are CC numbers (from ``cc_map``), then ``note_field`` and
    ``velocity_field``; each row is ``[byte offset, kind]``, offset -1 when
    unmapped or when this program has no such field.
    """
    table = np.full((CONTROL_ROWS, 2), -1, np.int64)
    targets = [(int(cc), name) for cc, name in (settings.get("cc_map") or {}).items()]
    targets += [(ROW_NOTE, settings.get("note_field")), (ROW_VELOCITY, settings.get("velocity_field"))]
    names = set(layout.names())
    for row, name in targets:
        if name in names:
            table[row] = layout.offset_of(name)
    return table


class ProgramBlock:
    """One program as the native code sees it; owns every array it points to."""

    def __init__(self, program: Program, state: np.ndarray, carry: np.ndarray, settings: dict[str, Any]) -> None:
        self.program = program
        self.state = state
        self.carry = np.ascontiguousarray(carry, np.int64).reshape(-1, 3)
        self.tables = [control_table(program.layout, settings)]  # the last one is current; older ones stay alive
        self.record = np.zeros(1, PROGRAM_DTYPE)
        prefault(state)
        r = self.record
        r["kernel"] = program.kernels.get("midi", 0)
        r["state"], r["state_bytes"], r["tag"] = state.ctypes.data, state.nbytes, program.layout.tag
        r["carry"], r["carry_rows"] = self.carry.ctypes.data, self.carry.shape[0]
        r["controls"] = self.tables[0].ctypes.data
        r["swap_every"] = round(swap_every_beats(program.config) * settings["ppqn"])

    @property
    def address(self) -> int:
        return self.record.ctypes.data

    def set_controls(self, settings: dict[str, Any]) -> None:
        """Swap in a new control table by pointer (the native side may be reading the old one)."""
        table = control_table(self.program.layout, settings)
        if np.array_equal(table, self.tables[-1]):
            return
        self.tables.append(table)
        release_fence()
        self.record["controls"] = table.ctypes.data


class MidiEngine:
    """Slots, buffers and rings of the tick engine, kept alive for as long as
    native code may run on them.

    *sample_rate* is the JACK server's, or a nominal 48 kHz on the ticked
    path (frames then only give the kernels ``block_frames`` and ``frame_time``).
    """

    def __init__(self, settings: dict[str, Any], sample_rate: float, tempo_bpm: float,
                 beat_origin: float = 0.0) -> None:
        self.slots = np.zeros(1, SLOTS_DTYPE)
        self.ctx = new_context(sample_rate=sample_rate, ppqn=settings["ppqn"])
        self.events = new_events(settings["channel"] - 1)
        self.notes = np.zeros(16 * 128, np.uint8)
        self.hist = np.zeros(HIST_FRAMES, np.int64)
        self.scratch = np.zeros(8, np.int64)  # 8 bytes to write from, then a jack_midi_event_t
        self.queue = np.zeros((QUEUE_CAPACITY, 4), np.int32)
        self.clock_window = np.zeros(CLOCK_WINDOW, np.float64)
        self.controls = ControlRing()  # state writes from the host (and OSC)
        self.outbox = Ring(MESSAGE_DTYPE, 256)  # MidiRuntime.send()
        self.inbox = Ring(MESSAGE_DTYPE, 1024)  # MIDI input arriving on a Python thread (rtmidi)
        self.blocks: list[ProgramBlock] = []
        prefault(self.slots, self.ctx, self.events, self.notes, self.hist, self.scratch, self.queue,
                 self.clock_window)
        s = self.slots
        for name, array in (("ctx", self.ctx), ("events", self.events), ("notes", self.notes), ("hist", self.hist),
                            ("scratch", self.scratch), ("queue", self.queue), ("clk_window", self.clock_window)):
            s[name] = array.ctypes.data
        for name, r in (("controls", self.controls), ("outbox", self.outbox), ("inbox", self.inbox)):
            prefault(r.header, r.records)
            s[name] = (r.header.ctypes.data, r.records.ctypes.data, r.capacity)
        s["sample_rate"] = sample_rate
        s["ppqn"] = settings["ppqn"]
        s["clock_div"] = settings["ppqn"] // 24
        s["last_note_in"] = -1
        s["jump_tick"] = -1
        s["beat_origin"] = beat_origin
        s["follow"] = int(settings.get("clock_source") == "midi")
        s["link_quantum"] = 4.0
        self.apply_settings(settings)
        s["tempo_bpm"] = s["pending_bpm"] = tempo_bpm
        s["frames_per_tick"] = sample_rate * 60.0 / (tempo_bpm * settings["ppqn"])

    @property
    def address(self) -> int:
        return self.slots.ctypes.data

    def get(self, name: str):
        return self.slots[name][0]

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Clock, transport and channel settings (read at the next tick) and the input map."""
        s = self.slots
        s["send_clock"] = int(settings["send_clock"])
        s["send_transport"] = int(settings["send_transport"])
        if s["channel"][0] != settings["channel"] - 1:
            s["release"] = 1  # notes on the old channel would never get their NoteOff
        s["channel"] = settings["channel"] - 1
        if self.blocks:
            self.blocks[-1].set_controls(settings)

    def set_tempo(self, tempo_bpm: float) -> None:
        """Hand a tempo to the native side; it applies it at the next tick."""
        if tempo_bpm == self.slots["pending_bpm"][0]:
            return
        self.slots["pending_bpm"] = tempo_bpm
        release_fence()
        self.slots["tempo_seq"] += 1

    def set_run_state(self, run_state: int) -> None:
        self.slots["run_state"] = run_state

    def locate(self, tick: int) -> None:
        self.slots["jump_tick"] = tick

    def first(self, program: Program, state: np.ndarray, settings: dict[str, Any]) -> None:
        block = ProgramBlock(program, state, np.zeros((0, 3), np.int64), settings)
        self.blocks = [block]
        release_fence()
        self.slots["program"] = self.slots["pending"] = block.address

    def swap(self, program: Program, settings: dict[str, Any], timeout_s: float) -> bool:
        """Queue *program* for the next tick; wait up to *timeout_s* for it to play.

        Older program blocks are freed only once the native side plays the
        new one (it no longer reads them then).
        """
        old = self.blocks[-1]
        block = ProgramBlock(program, program.new_state(), program.layout.carry_table(old.program.layout), settings)
        self.blocks.append(block)
        release_fence()
        self.slots["pending"] = block.address
        applied = wait_until(lambda: self.get("program") == block.address, timeout_s)
        if applied:
            self.blocks = [block]
        return applied

    def state(self) -> np.ndarray:
        playing = self.get("program")
        acquire_fence()
        block = next(b for b in self.blocks if b.address == playing)
        return block.state.copy()

    def stats(self) -> dict[str, Any]:
        g = self.get
        return {"notes_on": int(g("notes_on")), "events_out": int(g("events_out")),
                "events_in": int(g("events_in")), "swaps": int(g("swaps")), "clock_jumps": int(g("clock_jumps")),
                "kernel_errors": int(g("kernel_errors")), "dropped": int(g("dropped")),
                "writes_applied": int(g("writes_applied")), "writes_dropped": int(g("writes_dropped"))}

    def start_on_beat(self, beat: float, tempo_bpm: float, beat_now: float, time_us: float) -> None:
        """Before the start: tick 0 at the frame where the transport (*beat_now* at *time_us* on
        JACK's clock, at *tempo_bpm*) reaches *beat* (JACK path, not on a Link session)."""
        self.set_link_timeline(tempo_bpm, beat_now, time_us)
        self.slots["start_beat"] = beat
        release_fence()
        self.slots["start_on"] = 1

    def set_link_timeline(self, tempo_bpm: float, beat: float, time_us: float) -> None:
        """Publish a Link session's timeline (*beat* at *time_us*, Link's clock) to the native side."""
        s = self.slots
        seq = int(s["link_seq"][0])
        s["link_seq"] = seq + 1  # odd: being written
        release_fence()
        s["link_tempo"], s["link_beat"], s["link_time_us"] = tempo_bpm, beat, time_us
        release_fence()
        s["link_seq"] = seq + 2

    def liveness(self) -> tuple[int, bool, bool]:
        """Calls of the native side that returned, whether one is under way, and whether a kernel runs."""
        g = self.get
        returned = int(g("returned"))
        return returned, int(g("entered")) != returned, bool(g("in_kernel"))

    def clock_in(self) -> dict[str, Any]:
        """The outside clock followed: its tempo, bytes received, whether it is lost now."""
        g = self.get
        return {"tempo_bpm": round(float(g("tempo_bpm")), 3), "clocks": int(g("clocks_in")),
                "playing": int(g("ext")) == EXT_RUNNING, "lost": bool(g("clk_lost")),
                "losses": int(g("clock_losses"))}

    def frame_stats(self) -> dict[str, Any]:
        """Tick lateness on the frame timeline (JACK path), in microseconds."""
        us = 1e6 / float(self.get("sample_rate"))
        total = int(self.hist.sum())
        cum = np.cumsum(self.hist)
        pct = [int(np.searchsorted(cum, q * total)) * us if total else 0.0 for q in (0.5, 0.99)]
        return {"ticks": int(self.get("ticks")), "late_ticks": int(self.get("late_ticks")),
                "jitter_p50_us": round(pct[0], 3), "jitter_p99_us": round(pct[1], 3),
                "jitter_max_us": round(int(self.get("max_late_frames")) * us, 3),
                "drift_us": round(float(self.get("drift_frames")) * us, 3)}

    # --- the ticked path ---

    def step(self) -> list[tuple[int, int, int]]:
        """Run one tick (:data:`step`) and return its messages as byte tuples, each of its own length."""
        self._step(self.address)  # through ctypes: the GIL is let go during the native call
        rows = self.queue[: int(self.get("queued"))]
        return [tuple(int(b) for b in row[: row[3]]) for row in rows]

    @property
    def _step(self):
        fn = self.__dict__.get("_step_fn")
        if fn is None:
            fn = self.__dict__["_step_fn"] = _STEP(step.address)
        return fn


_STEP = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)
