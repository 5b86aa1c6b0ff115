"""MIDI input mapped to the playing state's fields (``cc_map``, ``note_field``, ``velocity_field``).

Input arrives in the JACK input buffer (read in frame order by the cycle) or,
on the ticked path, through a ring filled by an rtmidi thread. Each message
becomes a state write through the playing program's control table, a
``(CONTROL_ROWS, CONTROL_COLUMNS)`` array of ``[byte offset, kind, lo, hi, curve]`` swapped in by pointer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import carray

from compiler_bridge.abi import acquire_fence, as_voidptr
from compiler_bridge.state import StateLayout

from ..realtime import controls, handover, ring
from .notes import ring_header, ring_messages
from .slots import CONTROL_ROWS, ROW_NOTE, ROW_VELOCITY, jack_midi_event_get, jit


CURVE_RAW, CURVE_LIN, CURVE_EXP = 0, 1, 2
CONTROL_COLUMNS = 5  # byte offset, kind, lo, hi, curve


def control_table(layout: StateLayout, settings: dict[str, Any]) -> np.ndarray:
    """Return the float64 ``(CONTROL_ROWS, CONTROL_COLUMNS)`` map of MIDI input to state fields.

    Rows 0-127 are CC numbers (from ``cc_map``), then ``note_field`` and
    ``velocity_field``; each row is ``[byte offset, kind, lo, hi, curve]``,
    offset -1 when unmapped or when this program has no such field. A CC
    mapped to a ``param()`` field writes 0-127 onto its range along its curve;
    everything else writes the value as it came.
    """
    table = np.zeros((CONTROL_ROWS, CONTROL_COLUMNS), np.float64)
    table[:, 0] = -1
    targets = [(int(cc), name) for cc, name in (settings.get("cc_map") or {}).items()]
    targets += [(ROW_NOTE, settings.get("note_field")), (ROW_VELOCITY, settings.get("velocity_field"))]
    names = set(layout.names())
    for row, name in targets:
        if name in names:
            table[row, :2] = layout.offset_of(name)
            ranged = layout.field(name).range
            if ranged and row < ROW_NOTE:
                table[row, 2:] = ranged[0], ranged[1], CURVE_EXP if ranged[2] == "exp" else CURVE_LIN
    return table


@jit
def _write_field(sl, prog, controls_table, row, value):
    offset = np.int64(controls_table[row, 0])
    if offset < 0:
        return
    lo, hi, curve = controls_table[row, 2], controls_table[row, 3], controls_table[row, 4]
    x = float(value)
    if curve == CURVE_LIN:
        x = lo + (hi - lo) * x / 127.0
    elif curve == CURVE_EXP:
        x = lo * (hi / lo) ** (x / 127.0)
    if controls.write_value(carray(as_voidptr(prog.state), prog.state_bytes, np.uint8), offset,
                            np.int64(controls_table[row, 1]), x):
        sl.writes_applied += 1


@jit
def control_in(sl, status, data1, data2):
    """Write one incoming message to the playing state's mapped fields."""
    sl.events_in += 1
    if sl.playing == 0:
        return
    prog = handover.program(sl.playing)
    table_address = prog.controls
    acquire_fence()  # a table swapped in by pointer is complete
    if table_address == 0:
        return
    table = carray(as_voidptr(table_address), (CONTROL_ROWS, CONTROL_COLUMNS), np.float64)
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


@jit
def input_event(sl, in_buffer, index):
    """JACK input event *index*: ``(frame offset, size, data address)``; offset -1 when it cannot be read."""
    event = carray(as_voidptr(sl.scratch + 8), 3, np.int64)  # jack_midi_event_t
    if jack_midi_event_get(sl.fn_event_get, sl.scratch + 8, in_buffer, index) != 0:
        return np.int64(-1), np.int64(0), np.int64(0)
    return np.int64(event[0] & 0xFFFFFFFF), np.int64(event[1]), np.int64(event[2])


@jit
def message_in(sl, data, size):
    """A channel message from the input to the state's mapped fields; anything shorter is only counted."""
    if size >= 2:
        control_in(sl, np.int64(data[0]), np.int64(data[1]), np.int64(data[2]) if size >= 3 else 0)
    else:
        sl.events_in += 1


@jit
def read_input(sl, in_buffer, index, count, until_offset):
    """Take JACK input events with frame offset <= *until_offset*; return the next index."""
    while index < count:
        offset, size, address = input_event(sl, in_buffer, index)
        if offset > until_offset:
            break
        if offset >= 0:
            message_in(sl, carray(as_voidptr(address), max(size, 1), np.uint8), size)
        index += 1
    return index


@jit
def drain_inbox(sl):
    """Map MIDI input that arrived through Python (rtmidi) to state writes."""
    header, records = ring_header(sl.inbox), ring_messages(sl.inbox)
    slot = ring.peek(header, records.shape[0])
    while slot >= 0:
        m = records[slot]
        control_in(sl, np.int64(m.status), np.int64(m.data1), np.int64(m.data2))
        ring.advance(header)
        slot = ring.peek(header, records.shape[0])
