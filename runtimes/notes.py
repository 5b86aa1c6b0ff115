"""Which notes are sounding, so that nothing is ever left stuck."""

from __future__ import annotations


class SoundingNotes:
    """Track NoteOn/NoteOff by (channel, note) from raw status bytes."""

    def __init__(self) -> None:
        self._on: set[tuple[int, int]] = set()
        self.channels_used: set[int] = set()

    def feed(self, status: int, data1: int, data2: int) -> None:
        kind, channel = status & 0xF0, status & 0x0F
        if kind in (0x80, 0x90, 0xB0):
            self.channels_used.add(channel)
        if kind == 0x90 and data2 > 0:
            self._on.add((channel, data1))
        elif kind == 0x80 or kind == 0x90:
            self._on.discard((channel, data1))

    def __len__(self) -> int:
        return len(self._on)

    def release(self) -> list[tuple[int, int, int]]:
        """Return NoteOff for each sounding note, then All Notes Off (CC 123)
        on every channel used, and forget them all."""
        out = [(0x80 | ch, note, 64) for ch, note in sorted(self._on)]
        out += [(0xB0 | ch, 123, 0) for ch in sorted(self.channels_used)]
        self._on.clear()
        return out
