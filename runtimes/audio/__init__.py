"""The ``audio`` runtime: :mod:`.runtime` (its Python lifecycle: device,
stream, requests) and :mod:`.engine` (the native PortAudio callback)."""

from .runtime import AudioRuntime

__all__ = ["AudioRuntime"]
