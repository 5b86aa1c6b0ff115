"""What a patch imports: state declarations and MIDI helpers.

A patch is plain Python::

    import math
    from compiler_bridge.api import array

    class State:
        freq_hz = 440.0          # float64
        gain = 0.2
        phase = 0.0
        steps = array([60, 63, 67, 70])   # int64[4]
        cutoff_hz = param(800.0, lo=20.0, hi=8000.0, curve="exp")   # float64 with a range

    def audio(s, ctx, inp, out):          # once per block
        ...

    def midi(s, ctx, ev):                 # once per tick
        if ctx.tick % 6 == 0:
            note_on(ev, 60, 100)

``s`` is the state record (fields by name), ``ctx`` the context record (see
:data:`compiler_bridge.abi.CTX_DTYPE`), ``inp``/``out`` float32 arrays of
``(frames, channels)``, ``ev`` the event buffer the helpers below write to.
"""

from __future__ import annotations

import numba
import numpy as np

from .abi import EVENT_HEADER_CAPACITY, EVENT_HEADER_CHANNEL, EVENT_HEADER_COUNT


class array(np.ndarray):
    """A fixed-size array state field: ``array([1, 2, 3])``, ``array(16, "f4")``.

    An int gives that many zeros; a sequence gives those values. The dtype
    defaults to float64 for zeros and to the values' own (int64 / float64).
    """

    def __new__(cls, values, dtype=None):
        if isinstance(values, int):
            data = np.zeros(values, dtype or np.float64)
        else:
            data = np.asarray(values, dtype=dtype)
            if data.dtype.kind == "i":
                data = data.astype(dtype or np.int64)
        if data.ndim != 1 or data.size == 0:
            raise ValueError("array state fields are one-dimensional and non-empty")
        return data.view(cls)


CURVES = ("lin", "exp")


class param(float):
    """A float state field with a range: ``param(440.0, lo=20.0, hi=2000.0, curve="exp")``.

    The kernel sees a plain float64. Writes from outside (OSC) are clamped to
    ``[lo, hi]``; a ``cc_map`` maps CC 0-127 onto the range along *curve*:
    ``"lin"`` (equal steps) or ``"exp"`` (equal ratios: frequencies, times;
    *lo* must be above 0).
    """

    def __new__(cls, default: float, lo: float, hi: float, curve: str = "lin"):
        value = super().__new__(cls, default)
        if not lo < hi:
            raise ValueError(f"param({default!r}, lo={lo!r}, hi={hi!r}): lo must be below hi")
        if not lo <= value <= hi:
            raise ValueError(f"param({default!r}, lo={lo!r}, hi={hi!r}): the default is outside its range")
        if curve not in CURVES:
            raise ValueError(f"param(..., curve={curve!r}): expected one of {', '.join(map(repr, CURVES))}")
        if curve == "exp" and lo <= 0.0:
            raise ValueError(f"param(..., lo={lo!r}, curve='exp'): an exp curve needs lo above 0")
        value.lo, value.hi, value.curve = float(lo), float(hi), curve
        return value


@numba.njit(cache=True, nogil=True)
def _emit(ev, status, data1, data2, channel):
    n = ev[0, EVENT_HEADER_COUNT]
    if n >= ev[0, EVENT_HEADER_CAPACITY]:
        return False
    if channel < 0:
        channel = ev[0, EVENT_HEADER_CHANNEL]
    ev[n + 1, 0] = status | (channel & 15)
    ev[n + 1, 1] = data1 & 127
    ev[n + 1, 2] = data2 & 127
    ev[0, EVENT_HEADER_COUNT] = n + 1
    return True


@numba.njit(cache=True, nogil=True)
def note_on(ev, note, velocity=100, channel=-1):
    """Emit a NoteOn. *channel* 0-15; -1 is the runtime's ``channel`` setting."""
    return _emit(ev, 0x90, note, velocity, channel)


@numba.njit(cache=True, nogil=True)
def note_off(ev, note, channel=-1):
    """Emit a NoteOff (velocity 0x40)."""
    return _emit(ev, 0x80, note, 64, channel)


@numba.njit(cache=True, nogil=True)
def cc(ev, control, value, channel=-1):
    """Emit a Control Change."""
    return _emit(ev, 0xB0, control, value, channel)
