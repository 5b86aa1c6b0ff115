"""Project config, patch loading, numba compilation and the compiled config.

Imports neither ``host`` nor ``runtimes``; never imports sounddevice.
"""

from .errors import ConfigError, PatchError, SourceError

__all__ = ["ConfigError", "PatchError", "SourceError"]
