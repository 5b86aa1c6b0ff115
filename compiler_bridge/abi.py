"""The one native calling convention every runtime uses.

Every compiled patch exposes, per kernel, one C entry point::

    int32 entry(void *state, void *ctx, void *inp, void *out, void *events)

* ``state``  -- the patch's state block (one record of the patch's state dtype).
* ``ctx``    -- one record of :data:`CTX_DTYPE` (sample rate, block frames,
  tempo, beat, tick, frame time ...), filled by the runtime before each call.
* ``inp`` / ``out`` -- interleaved float32 frames (``block_frames`` x
  ``channels_in`` / ``channels_out``); NULL-safe when a count is 0.
* ``events`` -- an int32 array of shape ``(EVENT_CAPACITY + 1, 3)``; row 0 is
  the header ``[count, capacity, default_channel]``, rows 1.. are
  ``[status, data1, data2]`` raw MIDI bytes the kernel emitted in this call.

The audio runtime calls the entry from a PortAudio callback, the MIDI runtime
from a JACK process callback or a clock thread, the logic and offline runtimes
from Python through ctypes: the same compiled code everywhere.

Values reach a running kernel from outside (MIDI input, OSC, the host) only
through a :class:`ControlRing`, a single-producer single-consumer ring that
the real-time side drains at block or tick boundaries with
:func:`apply_controls`. Nothing here allocates, locks or takes the GIL on the
real-time side.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

ABI_VERSION = 1

CTX_DTYPE = np.dtype(
    [
        ("sample_rate", "f8"),  # Hz
        ("block_frames", "i8"),  # frames in this call (audio); frames per tick (midi)
        ("channels_in", "i8"),
        ("channels_out", "i8"),
        ("tempo_bpm", "f8"),
        ("beat", "f8"),  # transport position at the start of this call, in beats
        ("tick", "i8"),  # tick index since start (midi/logic), block index (audio)
        ("ppqn", "i8"),  # kernel ticks per quarter note
        ("frame_time", "i8"),  # absolute frame count at the start of this call
        ("channel", "i8"),  # default MIDI channel, 0-15
    ],
    align=True,
)

EVENT_CAPACITY = 256
EVENT_HEADER_COUNT, EVENT_HEADER_CAPACITY, EVENT_HEADER_CHANNEL = 0, 1, 2

KERNEL_SIGNATURE = types.int32(*(types.voidptr,) * 5)
KERNEL_NAMES = ("audio", "midi")

# ControlRing record kinds: how a value is stored at its byte offset.
KIND_F8, KIND_F4, KIND_I8, KIND_I4, KIND_U1 = 0, 1, 2, 3, 4
_KINDS = {"f8": KIND_F8, "f4": KIND_F4, "i8": KIND_I8, "i4": KIND_I4, "u1": KIND_U1, "b1": KIND_U1}


def kind_of(dtype: np.dtype) -> int:
    """Return the ring kind code for a scalar dtype (native byte order)."""
    key = f"{dtype.kind}{dtype.itemsize}"
    if key not in _KINDS:
        raise TypeError(f"unsupported state dtype {dtype}")
    return _KINDS[key]


def new_events(channel: int = 0) -> np.ndarray:
    """Return an empty event buffer whose helpers default to *channel* (0-15)."""
    ev = np.zeros((EVENT_CAPACITY + 1, 3), np.int32)
    ev[0, EVENT_HEADER_CAPACITY] = EVENT_CAPACITY
    ev[0, EVENT_HEADER_CHANNEL] = channel
    return ev


def new_context(**values) -> np.ndarray:
    """Return a one-record context array with *values* set (others zero)."""
    ctx = np.zeros(1, CTX_DTYPE)
    for name, value in values.items():
        ctx[name] = value
    return ctx


# --- native building blocks (usable from numba code) -------------------------


@intrinsic
def as_voidptr(typingctx, address):
    """Turn an integer address into a ``void *`` (numba intrinsic)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return types.voidptr(address), codegen


_C_TYPES = {"i32": ir.IntType(32), "u32": ir.IntType(32), "i64": ir.IntType(64), "ptr": ir.IntType(8).as_pointer()}
_RESULTS = {"void": types.none, "i32": types.int32, "u32": types.int64, "i64": types.int64, "ptr": types.int64}


def native_function(restype: str, *argtypes: str):
    """Return a numba intrinsic that calls a C function by its integer address.

    ``f = native_function("i32", "ptr", "i32")`` is called in numba code as
    ``f(address, a, b)``. Kinds: ``"i32"``/``"u32"`` (a C int; arguments are
    truncated or zero-extended, a ``"u32"`` result comes back as int64),
    ``"i64"``, ``"ptr"`` (an integer address or a ``void *``; a result comes
    back as an int64 address) and ``"void"`` for no result. Compiled code
    that uses it holds no ctypes object, so numba can cache it.
    """
    result = _RESULTS[restype]

    @intrinsic
    def call(typingctx, address, *args):
        if not isinstance(address, types.Integer) or len(args) != len(argtypes) or not all(
                isinstance(a, types.Integer | types.RawPointer) for a in args):
            return None

        def codegen(context, builder, signature, llargs):
            restype_ir = ir.VoidType() if restype == "void" else _C_TYPES[restype]
            fn = builder.inttoptr(llargs[0], ir.FunctionType(restype_ir, [_C_TYPES[k] for k in argtypes]).as_pointer())
            out = builder.call(fn, [_to_c(builder, value, _C_TYPES[kind])
                                    for kind, value in zip(argtypes, cgutils.unpack_tuple(builder, llargs[1]))])
            if restype == "void":
                return context.get_dummy_value()
            if restype == "u32":
                return builder.zext(out, ir.IntType(64))
            return builder.ptrtoint(out, ir.IntType(64)) if restype == "ptr" else out

        return result(address, types.StarArgTuple.from_types(args)), codegen

    return call


def _to_c(builder, value, want):
    if isinstance(want, ir.PointerType):
        return value if value.type == want else builder.inttoptr(value, want)
    if value.type.width > want.width:
        return builder.trunc(value, want)
    return builder.zext(value, want) if value.type.width < want.width else value


# The kernel entry point (see the module docstring) called by address.
call_kernel = native_function("i32", "ptr", "ptr", "ptr", "ptr", "ptr")


@numba.njit(cache=True, nogil=True)
def carry_state(src, dst, table):
    """Copy carried fields from *src* to *dst* state bytes (uint8 arrays).

    *table* is int64 ``(n, 3)``: source offset, destination offset, bytes.
    """
    for k in range(table.shape[0]):
        s, d, n = table[k, 0], table[k, 1], table[k, 2]
        for i in range(n):
            dst[d + i] = src[s + i]


RING_HEADER_WRITE, RING_HEADER_READ = 0, 1


@numba.njit(cache=True, nogil=True)
def apply_controls(header, records, state):
    """Drain a :class:`ControlRing` into *state* bytes; return how many applied.

    *header* is int64 ``[written, read]``, *records* float64 ``(cap, 3)`` of
    ``[byte_offset, kind, value]``. Single consumer: only this advances read.
    A record outside *state* or misaligned for its kind (pushed for another
    program's layout) is skipped, never written.
    """
    written = header[RING_HEADER_WRITE]
    read = header[RING_HEADER_READ]
    cap = records.shape[0]
    n = 0
    while read < written:
        r = read % cap
        off = np.int64(records[r, 0])
        kind = np.int64(records[r, 1])
        value = records[r, 2]
        read += 1
        size = 8 if kind == KIND_F8 or kind == KIND_I8 else 4 if kind == KIND_F4 or kind == KIND_I4 else 1
        if off < 0 or off + size > state.shape[0] or off % size != 0:
            continue  # not a field of this state (an offset from another layout): skipped
        if kind == KIND_F8:
            state[off : off + 8].view(np.float64)[0] = value
        elif kind == KIND_F4:
            state[off : off + 4].view(np.float32)[0] = np.float32(value)
        elif kind == KIND_I8:
            state[off : off + 8].view(np.int64)[0] = np.int64(value)
        elif kind == KIND_I4:
            state[off : off + 4].view(np.int32)[0] = np.int32(value)
        else:
            state[off] = np.uint8(value != 0.0)
        n += 1
    header[RING_HEADER_READ] = read
    return n


class ControlRing:
    """Single-producer single-consumer ring of state writes.

    The producer (one Python thread) calls :meth:`push`; the real-time side
    calls :func:`apply_controls` with :attr:`header` and :attr:`records` at a
    block or tick boundary. A full ring drops the write and counts it.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.header = np.zeros(2, np.int64)
        self.records = np.zeros((capacity, 3), np.float64)
        self.dropped = 0

    def push(self, byte_offset: int, kind: int, value: float) -> bool:
        written = int(self.header[RING_HEADER_WRITE])
        cap = self.records.shape[0]
        if written - int(self.header[RING_HEADER_READ]) >= cap:
            self.dropped += 1
            return False
        self.records[written % cap] = (byte_offset, kind, value)
        # The record is stored before the count moves. x86 keeps the order of
        # two plain stores; a weakly ordered CPU (ARM64) would need a barrier.
        self.header[RING_HEADER_WRITE] = written + 1
        return True

    def pending(self) -> int:
        return int(self.header[RING_HEADER_WRITE] - self.header[RING_HEADER_READ])
