"""livehost's host: runtime selection, the lifecycle lock, watching, the CLI.

:class:`Host` is imported on first use, so that the CLI's supervisor process
stays small (no numba, no audio library).
"""

__all__ = ["Host"]


def __getattr__(name: str):
    if name == "Host":
        from .host import Host

        return Host
    raise AttributeError(f"module 'host' has no attribute {name!r}")
