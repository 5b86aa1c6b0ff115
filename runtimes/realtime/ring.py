"""One single-consumer ring of typed records, drained by native code.

A ring is a header of two indices (each on its own cache line) and an array
of records of any numpy structured dtype. Producers reserve a slot, fill the
record and commit; the consumer (a native callback) takes records in order
at a block or tick boundary. The indices only grow; a slot is
``index % capacity``. Commit and release publish with release ordering and
are read with acquire ordering, so a record is complete before the other
side sees it, on ARM64 as on x86.

Producers in Python go through :class:`Ring`, which serialises them with a
lock; native producers call :func:`reserve`/:func:`commit` themselves and
must be the only producer of their ring.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from compiler_bridge.abi import load_acquire, store_release

WRITE, READ = 0, 8  # header indices: 64 bytes apart, so the two sides never share a cache line
HEADER_SIZE = 16

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@numba.njit("int64(int64[::1], int64)", cache=True, nogil=True)  # compiled at import: Python calls it live
def reserve(header, capacity):
    """Producer: the slot to fill next, or -1 when the ring is full."""
    written = header[WRITE]
    if written - load_acquire(header, READ) >= capacity:
        return -1
    return written % capacity


@numba.njit("void(int64[::1])", cache=True, nogil=True)
def commit(header):
    """Producer: publish the reserved slot's record."""
    store_release(header, WRITE, header[WRITE] + 1)


@numba.njit("int64(int64[::1], int64)", cache=True, nogil=True)
def peek(header, capacity):
    """Consumer: the slot of the oldest unread record, or -1 when empty."""
    read = header[READ]
    if read >= load_acquire(header, WRITE):
        return -1
    return read % capacity


@numba.njit("void(int64[::1])", cache=True, nogil=True)
def advance(header):
    """Consumer: done with the record :func:`peek` gave; its slot may be reused."""
    store_release(header, READ, header[READ] + 1)


class Ring:
    """A ring of *dtype* records with *capacity* slots, fed from Python threads.

    The native consumer gets :attr:`header` and :attr:`records` (by address
    or as arrays). A full ring drops the record and counts it.
    """

    def __init__(self, dtype: np.dtype, capacity: int) -> None:
        self.header = np.zeros(HEADER_SIZE, np.int64)
        self.records = np.zeros(capacity, dtype)
        self.capacity = capacity
        self.dropped = 0
        self._lock = threading.Lock()

    def push(self, *values) -> bool:
        """Append one record (its fields in dtype order); False when full."""
        with self._lock:
            slot = reserve(self.header, self.capacity)
            if slot < 0:
                self.dropped += 1
                return False
            self.records[slot] = values
            commit(self.header)
            return True

    def pending(self) -> int:
        return int(self.header[WRITE] - self.header[READ])
