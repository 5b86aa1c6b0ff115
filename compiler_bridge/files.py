"""Writing the files other processes read while they change: whole or not at all.

A host, a watcher or a compile in another process may read any of these at
any moment; each is written to a temp file beside it and renamed over it, so
a reader sees the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write *data* (text as UTF-8) to *path* through a temp file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two processes never share one
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    """Write *data* as JSON to *path* through a temp file and a rename."""
    write_atomic(path, json.dumps(data, indent=1))
