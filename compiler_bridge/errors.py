"""livehost's errors: one family, each kind also a built-in exception.

Like python-rtmidi's: catch :class:`HostError` for anything livehost raises on
purpose, or the built-in (``ValueError``, ``OSError``, ``RuntimeError``) a
caller already handles. Errors a performer can hit say what and where.
"""

from __future__ import annotations


class HostError(Exception):
    """Base of every error livehost raises on purpose."""


class SourceError(HostError, ValueError):
    """A problem in a project file, reported as ``file:line: message``.

    *line* is 1-based, or ``None`` when no line applies.
    """

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(message)
        self.path = str(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"

    def to_json(self) -> dict:
        return {"file": self.path, "line": self.line, "message": self.message, "text": str(self)}


class ConfigError(SourceError):
    """A bad ``livehost.toml``: unknown key, wrong type, out-of-range value."""


class PatchError(SourceError):
    """A bad ``patch.py``: syntax, typing, exception or NaN/inf in the test run."""


class CompiledConfigError(HostError, ValueError):
    """A ``compiled.json`` that cannot be played: unreadable, incomplete, another version."""


class RuntimeInitError(HostError, RuntimeError):
    """A runtime could not start, swap or stop; the message says why."""


class DeviceError(RuntimeInitError, OSError):
    """An audio device, a MIDI port or the JACK server is missing or failed.

    *code* is the device layer's own error code when it has one (PortAudio's
    ``PaError``), else ``None``.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0])
