"""State writes from outside the kernel (MIDI input, the host, OSC), applied
by the engine at a block or tick boundary.

A write names its target as ``(layout tag, byte offset, kind)``
(:meth:`compiler_bridge.state.StateLayout.target`). The engine applies it
only to a state of that layout: a write meant for a layout that no longer
plays is dropped, never written at a stale offset. Engines drain writes
before they take a swap, so writes pushed before a save land in the state
they were meant for and are carried over with it.
"""

from __future__ import annotations

import numpy as np

from compiler_bridge.abi import KIND_F4, KIND_F8, KIND_I4, KIND_I8

from . import ring
from .ring import Ring

WRITE_DTYPE = np.dtype([("tag", "i8"), ("offset", "i8"), ("kind", "i8"), ("value", "f8")], align=True)
CAPACITY = 1024


class ControlRing(Ring):
    """State writes from Python threads: ``push(*layout.target(name), value)``."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        super().__init__(WRITE_DTYPE, capacity)


@ring._jit
def write_value(state, offset, kind, value):
    """Store *value* at *offset* of *state* bytes as *kind*; False when it does not fit."""
    size = 8 if kind == KIND_F8 or kind == KIND_I8 else 4 if kind == KIND_F4 or kind == KIND_I4 else 1
    if offset < 0 or offset + size > state.shape[0] or offset % size != 0:
        return False
    if kind == KIND_F8:
        state[offset : offset + 8].view(np.float64)[0] = value
    elif kind == KIND_F4:
        state[offset : offset + 4].view(np.float32)[0] = np.float32(value)
    elif kind == KIND_I8:
        state[offset : offset + 8].view(np.int64)[0] = np.int64(value)
    elif kind == KIND_I4:
        state[offset : offset + 4].view(np.int32)[0] = np.int32(value)
    else:
        state[offset] = np.uint8(value != 0.0)
    return True


@ring._jit
def drain(header, records, state, tag, stop_tag):
    """Apply queued writes addressed to layout *tag* to *state* bytes.

    Stops before the first write addressed to *stop_tag* (the layout of a
    swap waiting to be taken: those writes are for the next state), so the
    caller takes the swap and drains again. Other writes are dropped.
    Returns ``(applied, dropped)``.
    """
    applied = dropped = 0
    capacity = records.shape[0]
    slot = ring.peek(header, capacity)
    while slot >= 0:
        w = records[slot]
        if w.tag != tag:
            if w.tag == stop_tag:
                break
            dropped += 1
        elif write_value(state, w.offset, w.kind, w.value):
            applied += 1
        else:
            dropped += 1
        ring.advance(header)
        slot = ring.peek(header, capacity)
    return applied, dropped
