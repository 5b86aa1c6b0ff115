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

Also here, because every side of that convention uses them: :func:`fill_context`
(the one place a context's per-call fields are written: the compile test run,
the logic, offline, audio and MIDI engines), the acquire/release hand-over
(:func:`load_acquire`, :func:`store_release`) and the state carry-over.
The real-time engines themselves live under ``runtimes/``. Nothing here
allocates, locks or takes the GIL on the real-time side.
"""

from __future__ import annotations

import ctypes
import mmap

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
KERNEL_NAMES = ("audio", "midi", "midi_in")
KERNEL_AUDIO, KERNEL_MIDI, KERNEL_MIDI_IN = range(len(KERNEL_NAMES))  # a program record's kernels, by index
MIDI_IN_BYTES = 3  # a message handed to midi_in(): int32 status, data1, data2 at the ``inp`` pointer

# How a state write stores its value at its byte offset (see StateLayout.target).
KIND_F8, KIND_F4, KIND_I8, KIND_I4, KIND_U1 = 0, 1, 2, 3, 4
_KINDS = {"f8": KIND_F8, "f4": KIND_F4, "i8": KIND_I8, "i4": KIND_I4, "u1": KIND_U1, "b1": KIND_U1}


def kind_of(dtype: np.dtype) -> int:
    """Return the write kind code for a scalar dtype (native byte order)."""
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




@intrinsic
def address_of(typingctx, pointer):
    """Return the integer address of a ``void *`` (for pointer arithmetic)."""
    if not isinstance(pointer, types.RawPointer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ptrtoint(args[0], ir.IntType(64))

    return types.int64(pointer), codegen


def _fence(ordering: str):
    @intrinsic
    def fence(typingctx):
        def codegen(context, builder, signature, args):
            builder.fence(ordering)
            return context.get_dummy_value()

        return types.void(), codegen

    return fence


_acquire, _release = _fence("acquire"), _fence("release")


# Memory ordering for every hand-over between a Python thread and a native
# callback: a writer fills fields, then publishes a sequence number or an
# address after release_fence(); a reader loads it, calls acquire_fence(),
# then reads the fields. Plain stores keep their order on x86 but not on
# ARM64. Both are callable from Python too (a fence orders the calling
# thread's earlier numpy stores as well).


# Compiled at import (signatures given): Python calls them while a stream plays, and a
# first-call compile there would load both cores just when a swap is being made.
@numba.njit("void()", cache=True, nogil=True)
def acquire_fence():
    _acquire()


@numba.njit("void()", cache=True, nogil=True)
def release_fence():
    _release()


@numba.njit("int64(int64[::1], int64)", cache=True, nogil=True)
def load_acquire(array, index):
    """``array[index]``, ordered before every later load (numba and Python)."""
    value = array[index]
    acquire_fence()
    return value


@numba.njit("void(int64[::1], int64, int64)", cache=True, nogil=True)
def store_release(array, index, value):
    """``array[index] = value``, ordered after every earlier store (numba and Python)."""
    release_fence()
    array[index] = value


@numba.njit(cache=True, nogil=True)
def frames_per_tick(sample_rate, tempo_bpm, ppqn):
    """Frames from one tick to the next at *tempo_bpm* with *ppqn* ticks per beat (numba and Python)."""
    return sample_rate * 60.0 / (tempo_bpm * ppqn)


@numba.njit(cache=True, nogil=True)
def fill_context(ctx, block_frames, tick, frame_time, beat, tempo_bpm):
    """Write the per-call fields of a one-record context array (every caller uses this)."""
    c = ctx[0]
    c.block_frames = block_frames
    c.tick = tick
    c.frame_time = frame_time
    c.beat = beat
    c.tempo_bpm = tempo_bpm


@numba.njit("void(uint8[::1], uint8[::1], int64[:, ::1])", cache=True, nogil=True)  # the host calls it at a switch
def carry_state(src, dst, table):
    """Copy carried fields from *src* to *dst* state bytes (uint8 arrays).

    *table* is int64 ``(n, 3)``: source offset, destination offset, bytes.
    """
    for k in range(table.shape[0]):
        s, d, n = table[k, 0], table[k, 1], table[k, 2]
        for i in range(n):
            dst[d + i] = src[s + i]


# The same entry called from Python (the compile test run, offline renders).
KERNEL_CFUNCTYPE = ctypes.CFUNCTYPE(ctypes.c_int32, *(ctypes.c_void_p,) * 5)


PAGE_BYTES = mmap.PAGESIZE


def prefault(*arrays: np.ndarray) -> None:
    """Write every page *arrays* span once (the page of the first byte to the page of the
    last: an array need not start on a page), so the real-time side never takes a
    first-touch page fault (which waits on the process's memory-map lock, held by
    whatever thread is allocating at that moment). The arrays are contiguous."""
    for array in arrays:
        raw = array.reshape(-1).view(np.uint8)
        if raw.size == 0:
            continue
        start = raw.ctypes.data
        offsets = np.arange(start - start % PAGE_BYTES, start + raw.size, PAGE_BYTES) - start
        offsets[0] = 0  # (the first page from the array's first byte)
        raw[offsets] = raw[offsets]
