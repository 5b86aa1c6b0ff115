"""``livehost.toml``: parse, validate, merge registry defaults.

``tomllib`` gives no positions, so :func:`_key_lines` maps every key to its
line to let errors say ``livehost.toml:LINE: ...``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import SCHEMAS, RuntimeSchema, number
from .sources import read_source

CONFIG_NAME = "livehost.toml"
PATCH_NAME = "patch.py"
# Far above any real project's files; a bigger one is a mistake, refused unread.
MAX_CONFIG_BYTES = 1 << 20
MAX_PATCH_BYTES = 4 << 20

TOP_LEVEL = {
    "name": (str, "a string"),
    "selected_runtime": (int, "a whole number (an index into runtime_settings)"),
    "tempo_bpm": ((int, float), "a number of beats per minute"),
    "runtime_settings": (list, "an array of [[runtime_settings]] tables"),
    "swap_on": (str, '"block", "beat" or "bar"'),
    "beats_per_bar": (int, "a whole number of beats"),
    "osc_port": (int, "a UDP port number (livehost run listens for OSC there)"),
    "osc_host": (str, 'an address to bind OSC to, e.g. "127.0.0.1"'),
    "link": (bool, "true or false (join an Ableton Link session)"),
    "quantum": ((int, float), "a number of beats (Link's phase cycle)"),
    "jack_server": (str, 'the name of a JACK server (jackd -n NAME), e.g. "stage"'),
    "lock_memory": (bool, "true or false (lock livehost's memory in RAM: no page fault in a callback)"),
}
DEFAULT_TEMPO_BPM = 120.0
# When a new program takes over: at the next block (at once: a changed number is heard within
# milliseconds, and a drone or a sine has no beat to wait for), or on the transport's next beat
# or bar, so an edit to a rhythmic patch lands on the downbeat.
SWAP_ON = ("block", "beat", "bar")
_tempo_check = number(20.0, 999.0)


@dataclass
class ProjectConfig:
    path: Path
    name: str
    selected_runtime: int
    tempo_bpm: float
    runtime_settings: list[dict[str, Any]]  # resolved: defaults merged
    warnings: list[str] = field(default_factory=list)
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)
    text: str = field(default="", repr=False)  # the file as read
    swap_on: str = "block"
    beats_per_bar: int = 4
    osc_port: int | None = None  # read by livehost run when it starts
    osc_host: str = "127.0.0.1"
    link: bool = False
    quantum: float = 4.0
    jack_server: str | None = None  # read by livehost run when it starts (JACK_DEFAULT_SERVER)
    lock_memory: bool = True  # read by livehost run when it starts

    def line_of(self, *key) -> int | None:
        return self.lines.get(tuple(key))

    def to_json(self) -> dict:
        return {"name": self.name, "selected_runtime": self.selected_runtime,
                "tempo_bpm": self.tempo_bpm, "runtime_settings": self.runtime_settings,
                "swap_on": self.swap_on, "beats_per_bar": self.beats_per_bar, "link": self.link,
                "quantum": self.quantum}



def swap_every_beats(config: dict) -> float:
    """Beats between the points where a new program may take over (a compiled
    config's ``config``); 0: at the next block or tick."""
    unit = {"beat": 1.0, "bar": float(config.get("beats_per_bar", 4))}
    return unit.get(config.get("swap_on", "block"), 0.0)


_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]")
_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _key_lines(text: str) -> dict[tuple, int]:
    """Map ``(key,)`` and ``("runtime_settings", i, key)`` to 1-based lines."""
    lines: dict[tuple, int] = {}
    scope: tuple = ()
    counts: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if m := _HEADER.match(line):
            name = m.group(1)
            counts[name] = counts.get(name, -1) + 1
            scope = (name, counts[name])
            lines.setdefault(scope, n)
        elif m := _TABLE.match(line):
            scope = (m.group(1),)
            lines.setdefault(scope, n)
        elif m := _KEY.match(line):
            lines.setdefault(scope + (m.group(1).strip("\"'"),), n)
    return lines


def load_config(project_dir: Path, schemas: dict[str, RuntimeSchema] = SCHEMAS) -> ProjectConfig:
    """Read and validate ``<project_dir>/livehost.toml``.

    Raises :class:`ConfigError` naming the file, line and key. An unknown
    runtime id is not an error: it is kept, with a warning (the host falls
    back to the default runtime at start-up).
    """
    path = Path(project_dir) / CONFIG_NAME
    text = read_source(project_dir, CONFIG_NAME, max_bytes=MAX_CONFIG_BYTES, error=ConfigError, what="project config")
    data = _parse(path, text)
    lines = _key_lines(text)

    def fail(key: tuple, message: str):
        raise ConfigError(str(path), lines.get(key) or lines.get(key[:2]), message)

    _check_top_level(data, fail)
    tempo = data.get("tempo_bpm", DEFAULT_TEMPO_BPM)
    if problem := _tempo_check(tempo):
        fail(("tempo_bpm",), f"tempo_bpm = {tempo!r}: {problem}")
    resolved, warnings = _resolve_entries(data.get("runtime_settings") or [{"runtime": "logic"}], schemas, fail,
                                          lambda key: f"{path}:{lines.get(key)}")
    swap_on = data.get("swap_on", "block")
    if swap_on not in SWAP_ON:
        fail(("swap_on",), f"swap_on = {swap_on!r}: expected one of {', '.join(map(repr, SWAP_ON))}")
    beats_per_bar = data.get("beats_per_bar", 4)
    if not 1 <= beats_per_bar <= 64:
        fail(("beats_per_bar",), f"beats_per_bar = {beats_per_bar!r}: expected a whole number from 1 to 64")
    quantum = data.get("quantum", 4.0)
    if not 1 <= quantum <= 64:
        fail(("quantum",), f"quantum = {quantum!r}: expected a number of beats from 1 to 64")
    osc_port = data.get("osc_port")
    if osc_port is not None and not 1 <= osc_port <= 65535:
        fail(("osc_port",), f"osc_port = {osc_port!r}: expected a UDP port from 1 to 65535")
    selected = data.get("selected_runtime", 0)
    if not 0 <= selected < len(resolved):
        warnings.append(
            f"{path}:{lines.get(('selected_runtime',))}: selected_runtime = {selected} is out of range "
            f"(0..{len(resolved) - 1}); the default runtime is used"
        )
    return ProjectConfig(path, data.get("name", Path(project_dir).resolve().name), selected,
                         float(tempo), resolved, warnings, lines, text, swap_on, beats_per_bar, osc_port,
                         data.get("osc_host", "127.0.0.1"), data.get("link", False), float(quantum),
                         data.get("jack_server") or None, data.get("lock_memory", True))


def _parse(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(str(path), None, "invalid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # TOMLDecodeError, or an integer too long for int()
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(str(path), int(m.group(1)) if m else None, f"invalid TOML: {exc}") from None


def _check_top_level(data: dict[str, Any], fail) -> None:
    """Unknown top-level keys (with a did-you-mean) and wrong types are errors."""
    for key, value in data.items():
        if key not in TOP_LEVEL:
            close = difflib.get_close_matches(key, TOP_LEVEL, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            fail((key,), f"unknown key {key!r}{hint}; known: {', '.join(TOP_LEVEL)}")
        types_, what = TOP_LEVEL[key]
        if not isinstance(value, types_) or isinstance(value, bool) and types_ is not bool:
            fail((key,), f"{key} = {value!r}: expected {what}")


def _resolve_entries(entries: list, schemas: dict[str, RuntimeSchema], fail,
                     where) -> tuple[list[dict[str, Any]], list[str]]:
    """Validate each ``[[runtime_settings]]`` table and merge its runtime's defaults.

    An unknown runtime id is kept as written, with a warning; *where(key)*
    gives ``file:line`` for a key.
    """
    resolved, warnings = [], []
    for i, entry in enumerate(entries):
        scope = ("runtime_settings", i)
        if not isinstance(entry, dict):
            fail(scope, f"runtime_settings[{i}]: expected a table")
        rid = entry.get("runtime")
        if not isinstance(rid, str):
            fail(scope + ("runtime",), f'runtime_settings[{i}]: needs runtime = "<id>" (one of {", ".join(schemas)})')
        schema = schemas.get(rid)
        if schema is None:
            close = difflib.get_close_matches(rid, schemas, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            warnings.append(f"{where(scope + ('runtime',))}: unknown runtime {rid!r} in runtime_settings[{i}]{hint}")
            resolved.append(dict(entry))
            continue
        for key, problem in schema.problems(entry):
            fail(scope + (key,), f"runtime_settings[{i}] ({rid}): {problem}")
        resolved.append(schema.resolve(entry))
    return resolved, warnings
