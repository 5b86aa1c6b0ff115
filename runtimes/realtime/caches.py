"""numba's cache of the engines, kept in step with their sources.

numba keys a cached function by the file it is defined in (its time and
size), not by the files of the functions it calls, whose code it compiles in:
after an edit or a ``git pull`` that changes ``ticks/inputs.py`` alone, the
cached ``ticks.cycle.step`` would go on running the old input code (seen
here: a control table read with its old layout). So one digest covers every
source the engines' native code is compiled from; when it changes, the
cached machine code next to those sources is removed and numba builds it
again (once, on the next import).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

STAMP = "engines.sha256"


def sources(roots: list[Path]) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def clear_if_stale(roots: list[Path], stamp_dir: Path) -> bool:
    """Remove numba's cache files under *roots* when their sources changed since the last
    check (recorded in *stamp_dir*); return whether it did. Never raises: a cache that
    cannot be checked is left to numba."""
    try:
        digest = hashlib.sha256()
        for path in sources(roots):
            digest.update(str(path).encode())
            digest.update(path.read_bytes())
        stamp = stamp_dir / STAMP
        if stamp.exists() and stamp.read_text() == digest.hexdigest():
            return False
        for root in roots:
            for cached in (*root.rglob("*.nbi"), *root.rglob("*.nbc")):
                cached.unlink(missing_ok=True)
        stamp_dir.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f".{STAMP}.{os.getpid()}.tmp")
        tmp.write_text(digest.hexdigest())
        tmp.replace(stamp)
        return True
    except OSError:
        return False
