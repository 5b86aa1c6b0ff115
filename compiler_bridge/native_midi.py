"""The MIDI runtime's native engine: a JACK process callback with no Python in it.

:data:`process` is a numba ``@cfunc`` with JACK's process-callback signature
``int process(jack_nframes_t nframes, void *arg)``. Everything it touches is
reached through *arg*, one record of :data:`SLOTS_DTYPE` holding integer
addresses (libjack entry points, the kernel, state, buffers) and counters, so
the compiled code holds no Python object and loads from numba's cache.

Timing is in JACK frames. Tick *n* is due at ``anchor_frame + (n -
anchor_tick) * frames_per_tick`` rounded to a frame: computed from an anchor,
never accumulated, so it cannot drift. A tempo change re-anchors at the last
tick played, so the next tick is one new period after it (no phase jump, no
lost or doubled tick). At each due tick the callback writes, at that exact
frame offset, Start (tick 0), MIDI clock 0xF8 (every ``ppqn / 24`` ticks) and
the events the patch's ``midi`` kernel emitted.

The same per-tick code, :func:`tick_step`, serves the non-JACK path: called
from a tick thread with ``out_buffer == 0`` it appends raw messages to the
``queue`` array for Python to send. It never allocates, logs, locks or takes
the GIL.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import carray, types

from .abi import (CTX_DTYPE, EVENT_CAPACITY, EVENT_HEADER_COUNT, RING_HEADER_READ, RING_HEADER_WRITE,
                  apply_controls, as_voidptr, call_kernel, carry_state, native_function)

# run_state values
IDLE, STARTING, RUNNING, STOPPING, STOPPED = 0, 1, 2, 3, 4

HIST_FRAMES = 4096  # lateness histogram buckets, one per frame (the last holds the rest)
QUEUE_CAPACITY = 4096  # raw messages per tick on the non-JACK path
CONTROL_ROWS = 130  # rows 0-127: CC number -> field; row 128: note field; row 129: velocity field
ROW_NOTE, ROW_VELOCITY = 128, 129

SLOTS_DTYPE = np.dtype(
    [
        # libjack entry points and handles (0 on the non-JACK path)
        ("fn_get_buffer", "i8"), ("fn_clear_buffer", "i8"), ("fn_event_write", "i8"),
        ("fn_last_frame_time", "i8"), ("fn_event_count", "i8"), ("fn_event_get", "i8"),
        ("client", "i8"), ("out_port", "i8"), ("in_port", "i8"),
        # buffers owned by the Python side (addresses)
        ("ctx", "i8"), ("events", "i8"), ("notes", "i8"), ("hist", "i8"), ("scratch", "i8"),
        ("queue", "i8"), ("ring_header", "i8"), ("ring_records", "i8"), ("ring_capacity", "i8"),
        ("outbox_header", "i8"), ("outbox_records", "i8"), ("outbox_capacity", "i8"),  # MidiRuntime.send()
        # the playing program (an address of a PROGRAM_DTYPE record) and a pending swap
        ("program", "i8"), ("pending", "i8"), ("swaps", "i8"),
        # schedule, in frames
        ("run_state", "i8"), ("next_tick", "i8"), ("anchor_tick", "i8"), ("anchor_frame", "f8"),
        ("frames_per_tick", "f8"), ("tempo_bpm", "f8"), ("sample_rate", "f8"),
        ("pending_bpm", "f8"), ("tempo_seq", "i8"), ("tempo_applied", "i8"),
        ("ppqn", "i8"), ("clock_div", "i8"), ("send_clock", "i8"), ("send_transport", "i8"),
        ("channel", "i8"), ("frame_base", "i8"), ("last_cycle", "i8"), ("last_note_in", "i8"),
        ("jump_tick", "i8"),  # -1, or the tick to continue from at the next tick (Song Position Pointer)
        ("release", "i8"),  # 1: end the sounding notes at the next tick (the channel setting changed)
        # counters read by stats()
        ("ticks", "i8"), ("late_ticks", "i8"), ("max_late_frames", "i8"), ("drift_frames", "f8"),
        ("events_out", "i8"), ("events_in", "i8"), ("notes_on", "i8"), ("channels_used", "i8"),
        ("kernel_errors", "i8"), ("dropped", "i8"), ("cycles", "i8"), ("queued", "i8"),
    ],
    align=True,
)

PROGRAM_DTYPE = np.dtype(
    [
        ("kernel", "i8"),  # native entry address, 0 when the program has no midi kernel
        ("state", "i8"),  # address of the state record
        ("carry", "i8"), ("carry_rows", "i8"),  # int64 (rows, 3) copy table from the previous program
        ("controls", "i8"),  # int64 (CONTROL_ROWS, 2) [byte offset, ring kind]; offset -1 = unmapped
        ("state_bytes", "i8"),
        ("failed", "i8"),  # the kernel raised: it is not called again
    ],
    align=True,
)


# --- calls into libjack by integer address (cacheable: no ctypes objects) -----

_jack_port_get_buffer = native_function("ptr", "ptr", "i32")  # (port, nframes) -> buffer
_jack_midi_clear_buffer = native_function("void", "ptr")  # (buffer)
_jack_midi_event_write = native_function("i32", "ptr", "i32", "ptr", "i64")  # (buffer, time, data, size)
_jack_last_frame_time = native_function("u32", "ptr")  # (client) -> frames
_jack_midi_get_event_count = native_function("u32", "ptr")  # (buffer) -> count
_jack_midi_event_get = native_function("i32", "ptr", "ptr", "i32")  # (jack_midi_event_t *, buffer, index)


# --- helpers ---------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _slots(address):
    return carray(as_voidptr(address), 1, SLOTS_DTYPE)[0]


@numba.njit(cache=True, nogil=True)
def _program(address):
    return carray(as_voidptr(address), 1, PROGRAM_DTYPE)[0]


@numba.njit(cache=True, nogil=True)
def _message_length(status):
    """Bytes in a message with this status (channel and system real-time messages)."""
    kind = status & 0xF0
    if kind == 0xC0 or kind == 0xD0 or status == 0xF1 or status == 0xF3:
        return 2
    if status >= 0xF4 or status == 0xF6:
        return 1
    return 3


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
def _release_notes(sl, out_buffer, offset):
    """NoteOff for each sounding note."""
    notes = carray(as_voidptr(sl.notes), 16 * 128, np.uint8)
    for slot in range(16 * 128):
        if notes[slot] != 0:
            notes[slot] = 0
            _write(sl, out_buffer, offset, 0x80 | (slot // 128), slot % 128, 64)
    sl.notes_on = 0


@numba.njit(cache=True, nogil=True)
def _silence(sl, out_buffer, offset):
    """NoteOff for each sounding note, then All Notes Off on every channel used."""
    _release_notes(sl, out_buffer, offset)
    used = sl.channels_used
    for ch in range(16):
        if used & (1 << ch):
            _write(sl, out_buffer, offset, 0xB0 | ch, 123, 0)


@numba.njit(cache=True, nogil=True)
def _swap_if_pending(sl, out_buffer, offset):
    """Switch to the pending program, carrying state bytes across layouts.

    Notes the old kernel left sounding end here: the new kernel may never
    send their NoteOff (a save that changed the notes would leave them stuck).
    """
    if sl.pending == 0 or sl.pending == sl.program:
        return
    new = _program(sl.pending)
    if sl.program != 0:
        old = _program(sl.program)
        src = carray(as_voidptr(old.state), old.state_bytes, np.uint8)
        dst = carray(as_voidptr(new.state), new.state_bytes, np.uint8)
        carry_state(src, dst, carray(as_voidptr(new.carry), (new.carry_rows, 3), np.int64))
    _release_notes(sl, out_buffer, offset)
    sl.program = sl.pending
    sl.swaps += 1


@numba.njit(cache=True, nogil=True)
def _run_kernel(sl, out_buffer, offset, tick, due_frame):
    """Call the playing program's midi kernel once and write what it emitted."""
    if sl.program == 0:
        return
    prog = _program(sl.program)
    if sl.ring_header != 0:  # writes queued by MIDI input land at this tick boundary
        header = carray(as_voidptr(sl.ring_header), 2, np.int64)
        records = carray(as_voidptr(sl.ring_records), (sl.ring_capacity, 3), np.float64)
        apply_controls(header, records, carray(as_voidptr(prog.state), prog.state_bytes, np.uint8))
    if prog.kernel == 0 or prog.failed != 0:
        return
    ctx = carray(as_voidptr(sl.ctx), 1, CTX_DTYPE)[0]
    ctx.tick = tick
    ctx.ppqn = sl.ppqn
    ctx.beat = tick / sl.ppqn
    ctx.tempo_bpm = sl.tempo_bpm
    ctx.sample_rate = sl.sample_rate
    ctx.block_frames = np.int64(sl.frames_per_tick + 0.5)
    ctx.frame_time = due_frame
    ctx.channel = sl.channel
    ev = carray(as_voidptr(sl.events), (EVENT_CAPACITY + 1, 3), np.int32)
    ev[0, EVENT_HEADER_COUNT] = 0
    ev[0, 2] = sl.channel
    ok = call_kernel(prog.kernel, as_voidptr(prog.state), as_voidptr(sl.ctx), as_voidptr(0), as_voidptr(0),
                     as_voidptr(sl.events))
    if ok == 0:
        sl.kernel_errors += 1
        prog.failed = 1
        _silence(sl, out_buffer, offset)
        return
    for i in range(1, ev[0, EVENT_HEADER_COUNT] + 1):
        status, data1, data2 = ev[i, 0], ev[i, 1], ev[i, 2]
        _write(sl, out_buffer, offset, status, data1, data2)
        _track(sl, status, data1, data2)


@numba.njit(cache=True, nogil=True)
def _drain_outbox(sl, out_buffer, offset):
    """Write what Python sent (``MidiRuntime.send``) at this tick; notes are tracked.

    The outbox is a ring like the control ring: float64 ``(capacity, 3)``
    rows of ``[status, data1, data2]``, header ``[written, read]``.
    """
    if sl.outbox_header == 0:
        return
    header = carray(as_voidptr(sl.outbox_header), 2, np.int64)
    records = carray(as_voidptr(sl.outbox_records), (sl.outbox_capacity, 3), np.float64)
    read = header[RING_HEADER_READ]
    while read < header[RING_HEADER_WRITE]:
        r = read % sl.outbox_capacity
        status, data1, data2 = np.int64(records[r, 0]), np.int64(records[r, 1]), np.int64(records[r, 2])
        _write(sl, out_buffer, offset, status, data1, data2)
        _track(sl, status, data1, data2)
        read += 1
    header[RING_HEADER_READ] = read


@numba.njit(cache=True, nogil=True)
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
    if sl.ticks == 0 and sl.send_transport != 0:
        _write(sl, out_buffer, offset, 0xFA, 0, 0)
    if sl.send_clock != 0 and tick % sl.clock_div == 0:
        _write(sl, out_buffer, offset, 0xF8, 0, 0)
    _drain_outbox(sl, out_buffer, offset)
    _run_kernel(sl, out_buffer, offset, tick, due_frame)
    hist = carray(as_voidptr(sl.hist), HIST_FRAMES, np.int64)
    hist[min(late_frames, HIST_FRAMES - 1)] += 1
    if late_frames > 0:
        sl.late_ticks += 1
        sl.max_late_frames = max(sl.max_late_frames, late_frames)
    sl.drift_frames = due_frame + late_frames - ideal_frame
    sl.next_tick = tick + 1
    sl.ticks += 1


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
def finish_step(sl, out_buffer):
    """End every sounding note, send Stop; nothing plays after this."""
    _silence(sl, out_buffer, 0)
    if sl.send_transport != 0 and sl.run_state != IDLE:
        _write(sl, out_buffer, 0, 0xFC, 0, 0)
    sl.run_state = STOPPED


@numba.njit(cache=True, nogil=True)
def _retempo(sl):
    """Apply a pending tempo: the next tick comes one new period after the last."""
    if sl.tempo_seq == sl.tempo_applied:
        return
    old_fpt = sl.frames_per_tick
    new_fpt = sl.sample_rate * 60.0 / (sl.pending_bpm * sl.ppqn)
    if sl.next_tick > 0:
        last = sl.anchor_frame + (sl.next_tick - 1 - sl.anchor_tick) * old_fpt
        sl.anchor_frame = last + new_fpt
        sl.anchor_tick = sl.next_tick
    sl.frames_per_tick = new_fpt
    sl.tempo_bpm = sl.pending_bpm
    sl.tempo_applied = sl.tempo_seq


# --- reading the input port -------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _push(sl, offset, kind, value):
    """Queue one state write on the control ring (native producer)."""
    if offset < 0 or sl.ring_header == 0:
        return
    header = carray(as_voidptr(sl.ring_header), 2, np.int64)
    records = carray(as_voidptr(sl.ring_records), (sl.ring_capacity, 3), np.float64)
    written = header[RING_HEADER_WRITE]
    if written - header[RING_HEADER_READ] >= sl.ring_capacity:
        sl.dropped += 1
        return
    r = written % sl.ring_capacity
    records[r, 0], records[r, 1], records[r, 2] = offset, kind, value
    header[RING_HEADER_WRITE] = written + 1


@numba.njit(cache=True, nogil=True)
def control_in(sl, status, data1, data2):
    """Map one incoming message to state writes via the program's control table."""
    if sl.program == 0:
        return
    controls = carray(as_voidptr(_program(sl.program).controls), (CONTROL_ROWS, 2), np.int64)
    kind = status & 0xF0
    if kind == 0xB0:
        _push(sl, controls[data1, 0], controls[data1, 1], data2)
    elif kind == 0x90 and data2 > 0:
        _push(sl, controls[ROW_NOTE, 0], controls[ROW_NOTE, 1], data1)
        _push(sl, controls[ROW_VELOCITY, 0], controls[ROW_VELOCITY, 1], data2)
        sl.last_note_in = data1
    elif (kind == 0x80 or kind == 0x90) and data1 == sl.last_note_in:
        _push(sl, controls[ROW_VELOCITY, 0], controls[ROW_VELOCITY, 1], 0)
        sl.last_note_in = -1


@numba.njit(cache=True, nogil=True)
def _read_input(sl, in_buffer, index, count, until_offset):
    """Take input events with frame offset <= *until_offset*; return the next index."""
    event = carray(as_voidptr(sl.scratch + 8), 3, np.int64)  # jack_midi_event_t
    while index < count:
        if _jack_midi_event_get(sl.fn_event_get, sl.scratch + 8, in_buffer, index) != 0:
            index += 1
            continue
        if (event[0] & 0xFFFFFFFF) > until_offset:
            break
        size = event[1]
        data = carray(as_voidptr(event[2]), max(size, 1), np.uint8)
        if size >= 2:
            control_in(sl, np.int64(data[0]), np.int64(data[1]), np.int64(data[2]) if size >= 3 else 0)
        sl.events_in += 1
        index += 1
    return index


# --- the JACK process callback -------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def run_cycle(sl, out_buffer, in_buffer, cycle_u32, nframes):
    """Play every tick due in this cycle of *nframes* frames starting at *cycle_u32*."""
    if cycle_u32 < sl.last_cycle:  # jack_nframes_t wrapped (after ~24 h at 48 kHz)
        sl.frame_base += 1 << 32
    sl.last_cycle = cycle_u32
    start = sl.frame_base + cycle_u32
    sl.cycles += 1
    state = sl.run_state
    if state == STOPPING:
        finish_step(sl, out_buffer)
        return
    if state != STARTING and state != RUNNING:
        return
    if state == STARTING:
        sl.anchor_frame = start
        sl.anchor_tick = 0
        sl.next_tick = 0
        sl.run_state = RUNNING
    _retempo(sl)
    count = _jack_midi_get_event_count(sl.fn_event_count, in_buffer) if in_buffer != 0 else 0
    index = 0
    end = start + nframes
    while True:
        ideal = sl.anchor_frame + (sl.next_tick - sl.anchor_tick) * sl.frames_per_tick
        due = np.int64(np.floor(ideal + 0.5))
        if due >= end:
            break
        late = max(start - due, 0)
        offset = due + late - start
        index = _read_input(sl, in_buffer, index, count, offset)
        tick_step(sl, out_buffer, offset, due, late, ideal)
    _read_input(sl, in_buffer, index, count, nframes)


@numba.cfunc(types.int32(types.uint32, types.voidptr), cache=True, nogil=True)
def process(nframes, arg):
    """JACK process callback; *arg* is the address of a :data:`SLOTS_DTYPE` record."""
    sl = carray(arg, 1, SLOTS_DTYPE)[0]
    out_buffer = _jack_port_get_buffer(sl.fn_get_buffer, sl.out_port, nframes)
    _jack_midi_clear_buffer(sl.fn_clear_buffer, out_buffer)
    in_buffer = np.int64(0)
    if sl.in_port != 0:
        in_buffer = _jack_port_get_buffer(sl.fn_get_buffer, sl.in_port, nframes)
    cycle = _jack_last_frame_time(sl.fn_last_frame_time, sl.client)
    run_cycle(sl, out_buffer, in_buffer, cycle, np.int64(nframes))
    return 0


@numba.cfunc(types.int32(types.voidptr), cache=True, nogil=True)
def step(arg):
    """One tick on the non-JACK path: fills ``queue`` (``sl.queued`` rows)."""
    sl = carray(arg, 1, SLOTS_DTYPE)[0]
    sl.queued = 0
    if sl.run_state == STOPPING:
        finish_step(sl, np.int64(0))
        return 0
    if sl.run_state == STARTING:
        sl.run_state = RUNNING
    if sl.run_state != RUNNING:
        return 0
    _retempo(sl)
    tick_step(sl, np.int64(0), np.int64(0), sl.next_tick, np.int64(0), np.float64(sl.next_tick))
    return 1
