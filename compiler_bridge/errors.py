"""Errors a performer can hit: each says what and where (file:line)."""

from __future__ import annotations


class SourceError(ValueError):
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
