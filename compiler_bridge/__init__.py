"""Project config, patch loading, numba compilation and the compiled config.

Imports neither ``host`` nor ``runtimes``; never imports sounddevice.
"""

from .errors import (CompiledConfigError, ConfigError, DeviceError, HostError, PatchError, RuntimeInitError,
                     SourceError)

__all__ = ["CompiledConfigError", "ConfigError", "DeviceError", "HostError", "PatchError", "RuntimeInitError",
           "SourceError"]
