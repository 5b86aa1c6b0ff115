"""Settings schemas of the built-in runtimes: defaults, checks, live keys.

Kept here (pure data, no device imports) so the compile worker can validate a
config without importing any runtime; ``runtimes.registry`` pairs each schema
with its factory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

Check = Callable[[Any], str | None]  # returns a problem text, or None when fine


@dataclass(frozen=True)
class RuntimeSchema:
    """What one runtime accepts in its ``[[runtime_settings]]`` table.

    *live_keys* can change while the runtime plays (a hot swap); any other
    changed key needs a new runtime (destroy, then create).
    """

    id: str
    defaults: dict[str, Any]
    checks: dict[str, Check]
    live_keys: frozenset[str] = field(default_factory=frozenset)

    def problems(self, settings: dict[str, Any]) -> list[tuple[str, str]]:
        """Return ``(key, problem)`` for every bad key in *settings*."""
        out = []
        for key, value in settings.items():
            if key == "runtime":
                continue
            if key not in self.defaults:
                known = ", ".join(sorted(self.defaults))
                out.append((key, f"unknown key {key!r} for runtime {self.id!r} (known: {known})"))
                continue
            problem = self.checks[key](value) if key in self.checks else None
            if problem:
                out.append((key, f"{key} = {value!r}: {problem}"))
        return out

    def resolve(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Return the defaults merged with *settings* (``runtime`` kept)."""
        return {"runtime": self.id, **self.defaults, **{k: v for k, v in settings.items() if k != "runtime"}}

    def needs_new_runtime(self, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        """Return the changed keys that a hot swap cannot apply."""
        keys = set(old) | set(new)
        return sorted(k for k in keys if k not in self.live_keys and old.get(k) != new.get(k))


# --- checks -------------------------------------------------------------------


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def number(lo: float, hi: float, *, optional: bool = False) -> Check:
    def check(v):
        if v is None and optional:
            return None
        if not _is_num(v) or not lo <= v <= hi:
            return f"expected a number from {lo} to {hi}"
        return None

    return check


def integer(lo: int, hi: int, *, optional: bool = False, multiple_of: int = 1, power_of_two: bool = False) -> Check:
    def check(v):
        if v is None and optional:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            return f"expected a whole number from {lo} to {hi}"
        if v % multiple_of:
            return f"expected a multiple of {multiple_of}"
        if power_of_two and v & (v - 1):
            return "expected a power of two"
        return None

    return check


def boolean(v) -> str | None:
    return None if isinstance(v, bool) else "expected true or false"


def text(*, optional: bool = True, choices: tuple[str, ...] = ()) -> Check:
    def check(v):
        if v is None and optional:
            return None
        if not isinstance(v, str):
            return "expected a string"
        if choices and v not in choices:
            return f"expected one of {', '.join(choices)}"
        return None

    return check


def device(v) -> str | None:
    if v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return None
    return "expected a device name (substring) or index"


def latency(v) -> str | None:
    if v in ("low", "high") or (_is_num(v) and 0 < v <= 2):
        return None
    return 'expected "low", "high" or seconds (0 to 2)'


def field_map(v) -> str | None:
    if not isinstance(v, dict):
        return 'expected a table like { "74" = "cutoff" }'
    for k, name in v.items():
        if not str(k).isdigit() or not 0 <= int(k) <= 127 or not isinstance(name, str):
            return f"entry {k!r} = {name!r}: expected a CC number 0-127 mapped to a state field name"
    return None


# --- the built-in runtimes -----------------------------------------------------

AUDIO = RuntimeSchema(
    "audio",
    defaults={"device": None, "sample_rate": None, "block_frames": None, "channels_out": 2,
              "channels_in": 0, "latency": "low", "crossfade_ms": 10.0, "midi_input": None},
    checks={"device": device, "sample_rate": integer(8000, 384000, optional=True),
            "block_frames": integer(16, 4096, optional=True, power_of_two=True),
            "channels_out": integer(1, 64), "channels_in": integer(0, 64), "latency": latency,
            "crossfade_ms": number(0.0, 1000.0), "midi_input": text()},
    live_keys=frozenset({"crossfade_ms"}),
)

MIDI = RuntimeSchema(
    "midi",
    defaults={"output": None, "connect_to": None, "connect_from": None, "input": None, "tempo_bpm": None, "ppqn": 24,
              "send_clock": True, "send_transport": True, "channel": 1, "backend": "auto",
              "cc_map": {}, "note_field": None, "velocity_field": None, "clock_source": "internal"},
    checks={"output": text(), "connect_to": text(), "connect_from": text(), "input": text(),
            "tempo_bpm": number(20.0, 999.0, optional=True), "ppqn": integer(24, 960, multiple_of=24),
            "send_clock": boolean, "send_transport": boolean, "channel": integer(1, 16),
            "backend": text(optional=False, choices=("auto", "jack", "native", "alsa", "rtmidi_jack")),
            "cc_map": field_map, "note_field": text(), "velocity_field": text(),
            "clock_source": text(optional=False, choices=("internal", "midi"))},
    live_keys=frozenset({"tempo_bpm", "cc_map", "note_field", "velocity_field", "channel", "send_clock"}),
)

# Audio and MIDI in one JACK callback: the MIDI keys of the native JACK path, and audio ports.
JACK = RuntimeSchema(
    "jack",
    defaults={**{k: v for k, v in MIDI.defaults.items() if k != "backend"}, "input": "in", "output": "out",
              "channels_out": 2, "channels_in": 0, "crossfade_ms": 10.0, "connect_audio": True,
              "max_events_in": 256},
    checks={**{k: v for k, v in MIDI.checks.items() if k != "backend"}, "channels_out": integer(1, 64),
            "channels_in": integer(0, 64), "crossfade_ms": number(0.0, 1000.0), "connect_audio": boolean,
            "max_events_in": integer(1, 4096)},
    live_keys=MIDI.live_keys | {"crossfade_ms"},
)

LOGIC = RuntimeSchema(
    "logic",
    defaults={"ppqn": 24, "channel": 1},
    checks={"ppqn": integer(24, 960, multiple_of=24), "channel": integer(1, 16)},
    live_keys=frozenset({"channel"}),
)

OFFLINE = RuntimeSchema(
    "offline",
    defaults={"output": None, "seconds": 10.0, "sample_rate": 48000, "block_frames": 256,
              "channels_out": 2, "ppqn": 24, "channel": 1},
    checks={"output": text(), "seconds": number(0.001, 86400.0), "sample_rate": integer(8000, 384000),
            "block_frames": integer(16, 4096, power_of_two=True), "channels_out": integer(1, 64),
            "ppqn": integer(24, 960, multiple_of=24),
            "channel": integer(1, 16)},
)

SCHEMAS: dict[str, RuntimeSchema] = {s.id: s for s in (AUDIO, MIDI, JACK, LOGIC, OFFLINE)}
DEFAULT_RUNTIME = "logic"
