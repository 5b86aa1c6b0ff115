"""Runtime registry: ids -> entries of defaults, validation and a factory.

Factories import their runtime module lazily, so looking an id up never opens
a device (sounddevice opens a JACK client on import).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from compiler_bridge.settings import DEFAULT_RUNTIME, SCHEMAS, RuntimeSchema

Factory = Callable[..., Any]  # factory(settings, *, transport, clock) -> Runtime


@dataclass(frozen=True)
class RegistryEntry:
    """A runtime id, its settings schema (defaults, validation, live keys) and its factory."""

    id: str
    schema: RuntimeSchema
    factory: Factory


class Registry:
    """Runtime entries by id, with a default id for unknown ones."""

    def __init__(self, entries: list[RegistryEntry], default_id: str) -> None:
        self._entries = {e.id: e for e in entries}
        if default_id not in self._entries:
            raise ValueError(f"default runtime {default_id!r} is not registered")
        self.default_id = default_id

    def get(self, runtime_id: str) -> RegistryEntry | None:
        return self._entries.get(runtime_id)


def _lazy(module: str, cls: str) -> Factory:
    def factory(settings, **kwargs):
        return getattr(importlib.import_module(f"runtimes.{module}"), cls)(settings, **kwargs)

    factory.__qualname__ = f"{module}.{cls}"
    return factory


def default_registry() -> Registry:
    return Registry(
        [
            RegistryEntry("logic", SCHEMAS["logic"], _lazy("logic", "LogicRuntime")),
            RegistryEntry("offline", SCHEMAS["offline"], _lazy("offline", "OfflineRuntime")),
            RegistryEntry("audio", SCHEMAS["audio"], _lazy("audio", "AudioRuntime")),
            RegistryEntry("midi", SCHEMAS["midi"], _lazy("midi", "MidiRuntime")),
            RegistryEntry("jack", SCHEMAS["jack"], _lazy("joint", "JackRuntime")),
        ],
        DEFAULT_RUNTIME,
    )
