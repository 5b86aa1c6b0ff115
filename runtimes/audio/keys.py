"""MIDI input played by the PortAudio callback: each message at a fixed delay after it arrived.

An rtmidi thread stamps each message with its arrival (monotonic ns) and
pushes it into a ring (:data:`INPUT_DTYPE`). The audio callback, starting at
``start_ns`` with ``frame_count`` frames, plays a message at the frame
``arrival + block - start_ns``: one block after it arrived, at its offset.
Wherever in a block a message came, it is heard the same time later
(constant latency, no jitter from the block grid); one that could not be
placed in time (the callback ran late) plays at the block's first frame and
is counted. The block is split at the message's frame and the patch's
``midi_in(s, ctx, status, data1, data2)`` runs there, as on the ``jack``
runtime (which reads JACK's own frame times instead).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import carray

from compiler_bridge.abi import KERNEL_MIDI_IN, as_voidptr, call_kernel

from ..realtime import handover, ring

INPUT_DTYPE = np.dtype([("t_ns", "i8"), ("status", "i8"), ("data1", "i8"), ("data2", "i8")])
INPUT_CAPACITY = 1024

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _records(s):
    return (carray(as_voidptr(s.keys[0]), ring.HEADER_SIZE, np.int64),
            carray(as_voidptr(s.keys[1]), s.keys[2], INPUT_DTYPE))


@_jit
def next_input_at(s, start_ns, frame_count):
    """The frame offset in this callback of the oldest message waiting: below 0 when its frame
    has passed (the callback came late), *frame_count* when there is none due in this callback
    (or input is off)."""
    if s.keys[0] == 0:
        return frame_count
    header, records = _records(s)
    slot = ring.peek(header, records.shape[0])
    if slot < 0:
        return frame_count
    block_ns = frame_count * 1e9 / s.sample_rate
    offset = np.int64(np.ceil((records[slot].t_ns + block_ns - start_ns) * s.sample_rate / 1e9))
    return min(offset, frame_count)


@_jit
def play_input(s, late):
    """Hand the oldest waiting message to the playing program's midi_in() (the context filled)."""
    header, records = _records(s)
    slot = ring.peek(header, records.shape[0])
    m = records[slot]
    status, data1, data2 = m.status, m.data1, m.data2
    ring.advance(header)
    s.in_events += 1
    s.in_late += np.int64(late)
    if s.playing == 0 or status < 0x80 or status >= 0xF0:
        return
    ran = call_midi_in(handover.program(s.playing), s, s.msg, s.ctx, s.events, status, data1, data2)
    s.in_handled += np.int64(ran >= 0)
    if ran == 0:
        s.kernel_errors += 1
        s.handler_errors += 1


@_jit
def call_midi_in(prog, flags, msg_address, ctx_address, events_address, status, data1, data2):
    """Hand one message to program *prog*'s midi_in(), *flags*.in_kernel raised meanwhile (the
    liveness signal), the context at *ctx_address* filled. 1: it ran; 0: it raised, and the
    program is silent until the next save, as a kernel that raised anywhere (never carried);
    -1: there is none to run (no midi_in(), or the program failed before). Both runtimes that
    take MIDI input call it: the PortAudio callback here, the ``jack`` runtime's process."""
    kernel = prog.kernels[KERNEL_MIDI_IN]
    if kernel == 0 or prog.failed != 0:
        return -1
    msg = carray(as_voidptr(msg_address), 3, np.int32)
    msg[0], msg[1], msg[2] = status, data1, data2
    flags.in_kernel = 1
    ok = call_kernel(kernel, as_voidptr(prog.state), as_voidptr(ctx_address), as_voidptr(msg_address), as_voidptr(0),
                     as_voidptr(events_address))
    flags.in_kernel = 0
    if ok == 0:
        prog.failed = 1
        return 0
    return 1
