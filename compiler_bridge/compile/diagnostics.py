"""Turning what goes wrong in a patch into ``patch.py:LINE: message``.

Python's tracebacks, numba's typing errors and its KeyErrors all name places
in the build's copies of ``patch.py`` (same lines as the performer's) or
nowhere useful; each becomes a :class:`PatchError` at the performer's file.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import numba

from ..config import PATCH_NAME
from ..errors import PatchError
from ..state import StateLayout

_NUMBA_LOC = re.compile(r'File "([^"]+)", line (\d+)|at (\S+) \((\d+)\)')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KEY_LINES = ("NameError", "No implementation", "Unknown attribute", "Untyped global", "Cannot", "Invalid use")


def patch_error_from(exc: BaseException, shown: str, *real: str) -> PatchError:
    """Turn *exc* into a PatchError at the deepest frame in one of *real*."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename in real:
            line = frame.lineno
    return PatchError(shown, line, f"{type(exc).__name__}: {exc}")


def compiling(load, build: Path, layout: StateLayout, source: str, patch_path: str):
    """Call *load* (it compiles); the patch's errors become patch.py:LINE."""
    try:
        return load()
    except KeyError as exc:  # numba's own KeyError for an unknown record field
        attr = str(exc.args[0]) if exc.args else "?"
        raise PatchError(patch_path, line_of(source, f".{attr}"),
                         f"no field {attr!r} in the state or the context "
                         f"(state fields: {', '.join(layout.names()) or 'none'})") from None
    except (SyntaxError, NameError, ImportError) as exc:  # the build's patch.py runs on import
        raise patch_error_from(exc, patch_path, str(build / PATCH_NAME)) from None
    except numba.core.errors.NumbaError as exc:  # anything else is a bug of ours: the worker says so
        raise _typing_error(exc, build / PATCH_NAME, patch_path, source) from None


def _typing_error(exc: Exception, build_patch: Path, shown: str, source: str) -> PatchError:
    """Turn a numba compile error into ``patch.py:LINE: message``."""
    text = _ANSI.sub("", str(exc))
    line = None
    for m in _NUMBA_LOC.finditer(text):
        path, num = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        # the build's patch.py, or a kernel build's (.livehost/kernels/<hash>/patch.py): same lines
        where = Path(path)
        if where.name == PATCH_NAME and len(where.parents) > 2 and where.parents[2] == build_patch.parents[2]:
            line = int(num)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    message = next((ln for ln in lines if ln.startswith(_KEY_LINES)), lines[0] if lines else text)
    if message.startswith("No implementation") and (sig := next((ln for ln in lines if ln.startswith(">>>")), None)):
        message = f"no implementation for {sig.removeprefix('>>>').strip()}"
    if line is None and (m := re.search(r"name '(\w+)' is not defined", message)):
        line = line_of(source, m.group(1), word=True)
    return PatchError(shown, line, f"numba cannot compile this: {message}")


def line_of(source: str, needle: str, *, word: bool = False) -> int | None:
    """First line of *source* holding *needle* (as a whole word if *word*)."""
    pattern = re.compile(rf"\b{re.escape(needle)}\b" if word else re.escape(needle))
    for n, line in enumerate(source.splitlines(), 1):
        if pattern.search(line.split("#")[0]):
            return n
    return None


def line_of_def(patch_mod, kernel: str) -> int | None:
    fn = getattr(patch_mod, kernel, None)
    return getattr(getattr(fn, "__code__", None), "co_firstlineno", None)
