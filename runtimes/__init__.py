"""Runtimes and their registry: ``audio``, ``midi``, ``logic`` (default), ``offline``.

Runtime modules are imported lazily by the registry; importing this package
opens no device.
"""

from pathlib import Path

from .realtime.caches import clear_if_stale

_HERE = Path(__file__).resolve().parent
# the engines' native code is compiled from these (compiler_bridge's abi and api are compiled into it)
clear_if_stale([_HERE, _HERE.parent / "compiler_bridge"], _HERE / "__pycache__")

from .registry import Registry, RegistryEntry, default_registry  # noqa: E402

__all__ = ["Registry", "RegistryEntry", "default_registry"]
