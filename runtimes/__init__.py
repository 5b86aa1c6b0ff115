"""Runtimes and their registry: ``audio``, ``midi``, ``logic`` (default), ``offline``.

Runtime modules are imported lazily by the registry; importing this package
opens no device.
"""

from .registry import Registry, RegistryEntry, default_registry

__all__ = ["Registry", "RegistryEntry", "default_registry"]
