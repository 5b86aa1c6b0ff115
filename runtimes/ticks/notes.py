"""Messages out, and the sounding-note table that makes sure every NoteOn gets its NoteOff.

A message goes either into the JACK output buffer at a frame offset, or (on
the ticked path, no buffer) into the ``queue`` array that Python reads after
the step. Every NoteOn and NoteOff the kernel or ``send()`` writes is tracked,
so a swap, a kernel error, a Stop or a close can end exactly what sounds.
"""

from __future__ import annotations

import numpy as np
from numba import carray

from compiler_bridge.abi import as_voidptr

from ..realtime import ring
from .slots import MESSAGE_DTYPE, QUEUE_CAPACITY, jack_midi_event_write, jit


@jit
def message_length(status):
    """Bytes in a message with this status (channel and system real-time messages)."""
    kind = status & 0xF0
    if kind == 0xC0 or kind == 0xD0 or status == 0xF1 or status == 0xF3:
        return 2
    if status >= 0xF4 or status == 0xF6:
        return 1
    return 3


@jit
def write(sl, out_buffer, offset, status, data1, data2):
    """Write one message at frame *offset* (JACK) or append it to the queue."""
    size = message_length(status)
    if out_buffer != 0:
        scratch = carray(as_voidptr(sl.scratch), 8, np.uint8)
        scratch[0], scratch[1], scratch[2] = status, data1, data2
        if jack_midi_event_write(sl.fn_event_write, out_buffer, offset, sl.scratch, size) != 0:
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


@jit
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


@jit
def send(sl, out_buffer, offset, status, data1, data2):
    """Write one message and keep the sounding-note table in step with it."""
    write(sl, out_buffer, offset, status, data1, data2)
    _track(sl, status, data1, data2)


@jit
def release_notes(sl, out_buffer, offset):
    """NoteOff for each sounding note."""
    notes = carray(as_voidptr(sl.notes), 16 * 128, np.uint8)
    for slot in range(16 * 128):
        if notes[slot] != 0:
            notes[slot] = 0
            write(sl, out_buffer, offset, 0x80 | (slot // 128), slot % 128, 64)
    sl.notes_on = 0


@jit
def silence(sl, out_buffer, offset):
    """NoteOff for each sounding note, then All Notes Off on every channel used."""
    release_notes(sl, out_buffer, offset)
    used = sl.channels_used
    for ch in range(16):
        if used & (1 << ch):
            write(sl, out_buffer, offset, 0xB0 | ch, 123, 0)


@jit
def ring_header(triple):
    """The header of a ring whose ``[header, records, capacity]`` addresses are *triple*."""
    return carray(as_voidptr(triple[0]), ring.HEADER_SIZE, np.int64)


@jit
def ring_messages(triple):
    return carray(as_voidptr(triple[1]), triple[2], MESSAGE_DTYPE)


@jit
def drain_outbox(sl, out_buffer, offset):
    """Write what Python sent (``MidiRuntime.send``) at this tick; notes are tracked."""
    header, records = ring_header(sl.outbox), ring_messages(sl.outbox)
    slot = ring.peek(header, records.shape[0])
    while slot >= 0:
        m = records[slot]
        send(sl, out_buffer, offset, np.int64(m.status), np.int64(m.data1), np.int64(m.data2))
        ring.advance(header)
        slot = ring.peek(header, records.shape[0])
