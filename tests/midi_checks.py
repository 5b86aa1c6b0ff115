"""Checks on recorded MIDI, shared by the tests (independent of runtimes/notes.py)."""

from __future__ import annotations

from typing import Iterable, Sequence


def stuck_notes(messages: Iterable[Sequence[int]]) -> set[tuple[int, int]]:
    """Return the ``(channel, note)`` pairs left sounding by raw *messages*.

    A NoteOn with velocity > 0 starts a note; a NoteOff, or a NoteOn with
    velocity 0, ends it. Other messages are ignored.
    """
    sounding: set[tuple[int, int]] = set()
    for data in messages:
        if len(data) < 3 or data[0] & 0xF0 not in (0x80, 0x90):
            continue
        key = (data[0] & 15, data[1])
        if data[0] & 0xF0 == 0x90 and data[2] > 0:
            sounding.add(key)
        else:
            sounding.discard(key)
    return sounding
