"""Handing programs to a native callback: written once, for every engine.

A program reaches the real-time side as one immutable record of
:data:`PROGRAM_DTYPE` (its kernels' addresses, its state's address and size,
its layout tag, and copy tables to carry state from each program that may be
playing when it is taken). Python publishes a request by storing the
record's address in ``swap_post``, one 8-byte store after the record is
complete, so the callback sees either the old request or the new one, never
half of one. Each field has one writer:

* Python: ``swap_post`` (and, before any native call, ``playing``);
* the callback: ``swap_seen`` (the newest request it has looked at),
  ``swap_taken`` (the sequence number of the request it took) and
  ``playing`` (the record it plays now), and a record's ``failed`` flag.

A request that was not taken yet may be replaced by a newer one: the new
record carries a table for the program playing *and* for the one it
replaces, so whichever the callback plays when it takes it, the state is
carried. The callback checks a table against the playing record (address,
layout tag and size) and every row against both states' sizes: a table for
another layout is never applied. "What plays now" (``playing``) is kept apart
from "what was last requested" (``swap_post``), so a fallback, a pending swap
on a bar and the snapshot each read the right one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable

import numba
import numpy as np
from numba import carray

from compiler_bridge.abi import KERNEL_NAMES, acquire_fence, as_voidptr, carry_state, prefault, release_fence
from compiler_bridge.state import StateLayout

CARRY_SOURCES = 3  # tables per record: the program playing, the request it replaces, a fallback

PROGRAM_DTYPE = np.dtype(
    [
        ("seq", "i8"),  # the request's number (1, 2, ...), set as it is posted
        ("kernels", "i8", (len(KERNEL_NAMES),)),  # native entry addresses by abi.KERNEL_NAMES index; 0: none
        ("state", "i8"), ("state_bytes", "i8"), ("tag", "i8"),  # its state record and layout tag
        ("every_beats", "f8"),  # it takes over on the transport's next multiple of this many beats; 0: at once
        ("controls", "i8"),  # an engine's own table (the tick engine's MIDI input map), swapped by pointer
        ("failed", "i8"),  # the callback's: the kernel raised or faulted, it is not called again nor carried
        # carry tables: from the record at carry_from[k] (of layout carry_tag[k], carry_bytes[k] bytes)
        ("carry_from", "i8", (CARRY_SOURCES,)), ("carry_tag", "i8", (CARRY_SOURCES,)),
        ("carry_bytes", "i8", (CARRY_SOURCES,)), ("carry", "i8", (CARRY_SOURCES,)),
        ("carry_rows", "i8", (CARRY_SOURCES,)),
    ],
    align=True,
)

# The fields an engine's slots record holds for its hand-over.
SLOT_FIELDS = [
    ("swap_post", "i8"),  # Python: address of the newest requested record (0: none yet)
    ("swap_seen", "i8"),  # callback: seq of the newest request it has seen
    ("swap_taken", "i8"),  # callback: seq of the request it took last
    ("playing", "i8"),  # callback: address of the record it plays (0: none)
    ("carry_misses", "i8"),  # callback: swaps whose record had no table for what played (state not carried)
]

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


# --- the real-time side ----------------------------------------------------------


@_jit
def program(address):
    """The :data:`PROGRAM_DTYPE` record at *address*."""
    return carray(as_voidptr(address), 1, PROGRAM_DTYPE)[0]


@_jit
def posted(sl):
    """The address of a requested record not taken yet, else 0; notes it as seen."""
    address = sl.swap_post
    acquire_fence()  # the record behind the address is complete
    if address == 0:
        return np.int64(0)
    seq = program(address).seq
    if seq == sl.swap_taken:
        return np.int64(0)
    sl.swap_seen = seq
    return address


@_jit
def _rows_fit(table, src_bytes, dst_bytes):
    for k in range(table.shape[0]):
        s, d, n = table[k, 0], table[k, 1], table[k, 2]
        if s < 0 or d < 0 or n < 0 or s + n > src_bytes or d + n > dst_bytes:
            return False
    return True


@_jit
def carry(old_address, new_address):
    """Copy the carried fields of the record at *old_address* into the new record's state.

    Only with the table made for that very record, of its layout and size,
    whose rows fit both states; never from a program that failed. Returns 1
    when carried, 0 when there is nothing to carry from (no program, or one
    that failed), -1 when the new record has no table that fits.
    """
    if old_address == 0:
        return 0
    old, new = program(old_address), program(new_address)
    if old.failed != 0:
        return 0
    for k in range(CARRY_SOURCES):
        if new.carry_from[k] != old_address or new.carry_tag[k] != old.tag or new.carry_bytes[k] != old.state_bytes:
            continue
        table = carray(as_voidptr(new.carry[k]), (new.carry_rows[k], 3), np.int64)
        if not _rows_fit(table, old.state_bytes, new.state_bytes):
            return -1
        carry_state(carray(as_voidptr(old.state), old.state_bytes, np.uint8),
                    carray(as_voidptr(new.state), new.state_bytes, np.uint8), table)
        return 1
    return -1


@_jit
def take(sl, address):
    """Carry the playing record's state into the record at *address*, play that from now
    on, and say so (a swap whose state could not be carried is counted)."""
    if carry(sl.playing, address) < 0:
        sl.carry_misses += 1
    sl.playing = address
    release_fence()  # the carried state is visible with the answer
    sl.swap_taken = program(address).seq


# --- the Python side --------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """What an engine is handed: its kernels' addresses, a state and its layout, when to take over.

    *owner* is what the runtime gets back (its ``Program``); the engine reads
    only addresses and layout tags.
    """

    owner: Any
    kernels: tuple[int, ...]  # entry addresses by abi.KERNEL_NAMES index (0: none); each engine calls its own
    state: np.ndarray
    layout: StateLayout
    every_beats: float = 0.0


class ProgramRecord:
    """One program as the native side sees it; owns every array its record points to.

    *sources* are the records that may be playing when the callback takes
    this one: a carry table is made from each.
    """

    def __init__(self, offer: Offer, sources: Iterable["ProgramRecord"] = ()) -> None:
        self.owner = offer.owner
        self.layout = layout = offer.layout
        self.state = np.ascontiguousarray(offer.state)
        self.record = np.zeros(1, PROGRAM_DTYPE)
        self._kept: list[np.ndarray] = []  # tables the record points to (old control tables too)
        self.tables: dict[str, np.ndarray] = {}  # the table each engine field points to now
        prefault(self.state)
        r = self.record
        r["kernels"][0, : len(offer.kernels)], r["every_beats"] = offer.kernels, offer.every_beats
        r["state"], r["state_bytes"], r["tag"] = self.state.ctypes.data, self.state.nbytes, layout.tag
        for k, source in enumerate(list(dict.fromkeys(sources))[:CARRY_SOURCES]):
            table = np.ascontiguousarray(layout.carry_table(source.layout), np.int64).reshape(-1, 3)
            self._kept.append(table)
            r["carry_from"][0, k], r["carry_tag"][0, k] = source.address, source.layout.tag
            r["carry_bytes"][0, k], r["carry"][0, k], r["carry_rows"][0, k] = (
                source.state.nbytes, table.ctypes.data, table.shape[0])

    @property
    def address(self) -> int:
        return self.record.ctypes.data

    @property
    def seq(self) -> int:
        return int(self.record["seq"][0])

    @property
    def failed(self) -> bool:
        return bool(self.record["failed"][0])

    def point_to(self, field: str, table: np.ndarray) -> None:
        """Swap an engine's table in by pointer (the native side may be reading the old one, kept alive)."""
        self._kept.append(table)
        self.tables[field] = table
        release_fence()
        self.record[field] = table.ctypes.data


class Handover:
    """Python's end of an engine's program hand-over (see the module docstring).

    *slots* is the engine's one-record slots array holding :data:`SLOT_FIELDS`.
    Records stay alive while the native side may read them: the one playing,
    the one requested, and what :meth:`release` is told to keep.
    """

    def __init__(self, slots: np.ndarray) -> None:
        self._slots = slots
        self._records: dict[int, ProgramRecord] = {}  # address -> record
        self._seq = 0
        self._lock = threading.Lock()  # one writer of swap_post at a time

    def first(self, offer: Offer, prepare=None) -> ProgramRecord:
        """Play *offer* from the first call; only before the native side has run.
        *prepare(record)* adds an engine's own tables before anything can read it."""
        with self._lock:
            record = self._numbered(ProgramRecord(offer), prepare)
            self._records = {record.address: record}
            self._slots["playing"] = record.address
            self._slots["swap_taken"] = self._slots["swap_seen"] = record.seq
            return record

    def post(self, offer: Offer, prepare=None, also_from: Iterable[ProgramRecord] = ()) -> ProgramRecord:
        """Request *offer*; its record carries state from every record that may play when
        the callback takes it: what plays, a request it replaces, and *also_from*."""
        with self._lock:
            record = self._numbered(ProgramRecord(offer, [*self.sources(), *also_from]), prepare)
            self._records[record.address] = record
            self._slots["swap_post"] = record.address  # (after the fence in _numbered: the record is complete)
            return record

    def _numbered(self, record: ProgramRecord, prepare) -> ProgramRecord:
        if prepare is not None:
            prepare(record)
        self._seq += 1
        record.record["seq"] = self._seq
        release_fence()
        return record

    def sources(self) -> list[ProgramRecord]:
        found = [self.playing(), self.pending()]
        return [r for r in found if r is not None]

    def _get(self, field: str) -> ProgramRecord | None:
        address = int(self._slots[field][0])
        acquire_fence()
        return self._records.get(address)

    def playing(self) -> ProgramRecord | None:
        """The record the callback plays now (the newest taken, or what it fell back to)."""
        return self._get("playing")

    def pending(self) -> ProgramRecord | None:
        """The newest request, while the callback has not taken it."""
        record = self._get("swap_post")
        return record if record is not None and not self.taken(record.seq) else None

    def seen(self, seq: int) -> bool:
        """Whether the callback has seen request *seq* (or a newer one): it is there for the taking."""
        return int(self._slots["swap_seen"][0]) >= seq

    def answered(self, seq: int, every_beats: float) -> bool:
        """Whether request *seq* got as far as one call of the callback takes it: taken when it
        was asked for at once, seen when it waits for its beat or bar."""
        return self.taken(seq) if every_beats <= 0.0 else self.seen(seq)

    def taken(self, seq: int) -> bool:
        """Whether the callback took request *seq* (or a newer one)."""
        answered = int(self._slots["swap_taken"][0]) >= seq
        acquire_fence()
        return answered

    def kept(self) -> list[Any]:
        """The owners of every record kept alive for the native side."""
        return [r.owner for r in self._records.values()]

    def record_at(self, address: int) -> ProgramRecord | None:
        return self._records.get(int(address))

    def release(self, keep: Iterable[int] = ()) -> None:
        """Drop records the native side no longer reads: all but the one playing, the addresses
        in *keep* (voices still fading, a fallback), and every request the callback has not
        seen past. A call of the callback reads ``swap_post`` once, then notes what it read in
        ``swap_seen``: a request replaced after that read may still be in its hands until a
        later call has seen a newer one."""
        with self._lock:
            seen = int(self._slots["swap_seen"][0])
            acquire_fence()
            alive = {int(self._slots["playing"][0]), int(self._slots["swap_post"][0]), *map(int, keep)}
            self._records = {a: r for a, r in self._records.items() if a in alive or r.seq >= seen}
