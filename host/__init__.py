"""livehost's host: runtime selection, the lifecycle lock, watching, the CLI."""

from .host import Host

__all__ = ["Host"]
