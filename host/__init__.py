"""livehost's host: runtime selection, the lifecycle lock, watching, the CLI."""

from .host import Host, HostError

__all__ = ["Host", "HostError"]
