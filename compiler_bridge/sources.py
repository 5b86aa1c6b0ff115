"""Reading a project's own files, ``livehost.toml`` and ``patch.py``.

Whatever a performer saves there (a binary, another encoding, a huge file, a
folder, a link out of the project) becomes one ``file:line: message`` error
of the caller's kind, never a traceback.
"""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path

from .errors import SourceError


def read_source(project_dir: Path, name: str, *, max_bytes: int, error: type[SourceError], what: str) -> str:
    """Read ``<project_dir>/<name>`` as UTF-8 text; a leading byte-order mark is dropped.

    Parameters
    ----------
    max_bytes : int
        Largest file accepted, in bytes; a bigger one is refused unread.
    error : type
        The :class:`SourceError` kind to raise (``ConfigError``, ``PatchError``).
    what : str
        What the file is, for messages: ``"project config"``, ``"patch"``.
    """
    path = Path(project_dir) / name
    shown = str(path)
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(os.path.realpath(project_dir)):
        raise error(shown, None, f"links to {real}, outside the project folder; copy the file into the project")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not hang the compile
    except OSError as exc:
        raise error(shown, None, f"cannot read {what}: {exc.strerror}") from None
    try:
        _check_file(os.fstat(fd), shown, error, what, max_bytes)
        with open(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew after the size check
        raise _too_big(shown, error, what, len(data), max_bytes)
    return _decode(data, shown, error)


def _check_file(info: os.stat_result, shown: str, error: type[SourceError], what: str, max_bytes: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise error(shown, None, f"is a folder; the {what} must be a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(shown, None, f"is not a regular file; the {what} must be a plain text file")
    if info.st_size > max_bytes:
        raise _too_big(shown, error, what, info.st_size, max_bytes)


def _too_big(shown: str, error: type[SourceError], what: str, size_bytes: int, max_bytes: int) -> SourceError:
    return error(shown, None, f"too big for a {what}: {size_bytes:,} bytes (at most {max_bytes >> 20} MiB)")


def _decode(data: bytes, shown: str, error: type[SourceError]) -> str:
    data = data.removeprefix(codecs.BOM_UTF8)
    if (nul := data.find(b"\0")) >= 0:  # first: it tells a binary file best
        line = data.count(b"\n", 0, nul) + 1
        raise error(shown, line, "contains a NUL byte: is it a binary file? save it as UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(shown, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8") from None
