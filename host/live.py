"""Keys set live (over OSC): what an edit of livehost.toml would do, in memory.

A key set live holds through later saves until a save changes that key in
``livehost.toml``: then the file's word is the last.
"""

from __future__ import annotations

import copy
from typing import Any

from compiler_bridge.config import SWAP_ON

KEYS = ("tempo_bpm", "selected_runtime", "swap_on")


class LiveOverrides:
    """The keys set live, each with what the file said when it was set."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[Any, Any]] = {}  # key -> (value, the file's value when it was set)

    def set(self, config: dict, key: str, value: Any) -> Any:
        """Hold *value* for *key* over *config* (the file's); return it as held. Raises
        ValueError for a key that cannot be set live or a value that is not one of the key's."""
        if key == "tempo_bpm":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 20.0 <= value <= 999.0:
                raise ValueError(f"tempo_bpm {value!r}: expected a number from 20 to 999")
            value = float(value)
        elif key == "selected_runtime":
            value = _runtime_index(config, value)
        elif key == "swap_on":
            if value not in SWAP_ON:
                raise ValueError(f"swap_on {value!r}: expected one of {', '.join(SWAP_ON)}")
        else:
            raise ValueError(f"{key!r} cannot be set live ({', '.join(KEYS)})")
        self._held[key] = (value, _file_value(config, key))
        return value

    def apply(self, compiled: dict) -> dict:
        """*compiled* with the keys that still hold (a key the file changed since is dropped)."""
        config = None
        for key, (value, seen) in list(self._held.items()):
            if _file_value(compiled["config"], key) != seen:  # a save changed it: the file wins
                del self._held[key]
                continue
            config = config or copy.deepcopy(compiled["config"])
            if key == "tempo_bpm":
                config["tempo_bpm"] = value
                for entry in config["runtime_settings"]:
                    if entry.get("tempo_bpm") is not None:
                        entry["tempo_bpm"] = value
            else:
                config[key] = value
        return compiled if config is None else {**compiled, "config": config}


def _file_value(config: dict, key: str) -> Any:
    """What a compiled *config* says of a live key (a runtime's own tempo included)."""
    if key == "tempo_bpm":
        return config["tempo_bpm"], [e.get("tempo_bpm") for e in config["runtime_settings"]]
    return config.get(key)


def _runtime_index(config: dict, value: Any) -> int:
    """The ``runtime_settings`` index *value* names: an index, or the first entry of a runtime id."""
    entries = config["runtime_settings"]
    if isinstance(value, str):
        for i, entry in enumerate(entries):
            if entry.get("runtime") == value:
                return i
        raise ValueError(f"no [[runtime_settings]] entry for runtime {value!r} "
                         f"(entries: {', '.join(e.get('runtime', '?') for e in entries)})")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(entries):
        raise ValueError(f"runtime {value!r}: expected a runtime id or an index from 0 to {len(entries) - 1}")
    return value
