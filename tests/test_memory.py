"""What the callbacks touch is resident before they run: prefault and mlockall.

Residency is read from the kernel (``mincore`` for pages, ``VmLck`` for
locked memory), not inferred from timing.
"""

from __future__ import annotations

import ctypes
import mmap
import resource
import subprocess
import sys

import numpy as np

from compiler_bridge.abi import PAGE_BYTES, prefault

_LIBC = ctypes.CDLL(None, use_errno=True)


def _resident(array: np.ndarray) -> list[bool]:
    """Whether each page *array* spans is in RAM (mincore)."""
    start = array.ctypes.data
    first = start - start % PAGE_BYTES
    pages = (start + array.nbytes - first + PAGE_BYTES - 1) // PAGE_BYTES
    vec = (ctypes.c_ubyte * pages)()
    assert _LIBC.mincore(ctypes.c_void_p(first), ctypes.c_size_t(pages * PAGE_BYTES), vec) == 0, ctypes.get_errno()
    return [bool(v & 1) for v in vec]


def _fresh_unaligned(pages: int, skip: int = 100) -> tuple[mmap.mmap, np.ndarray]:
    """An array of *pages* pages' bytes starting *skip* bytes into fresh, untouched memory:
    it spans pages + 1 pages."""
    memory = mmap.mmap(-1, (pages + 2) * PAGE_BYTES)
    return memory, np.frombuffer(memory, np.uint8)[skip:skip + pages * PAGE_BYTES]


def test_prefault_makes_every_page_an_unaligned_array_spans_resident():
    memory, array = _fresh_unaligned(2)
    assert _resident(array) == [False, False, False]  # fresh: nothing touched yet
    prefault(array)
    assert _resident(array) == [True, True, True]
    # the controls: how it was done, a copy of every 4096th byte onto itself, touched nothing at all
    # (numpy skips a copy onto itself); a write of every 4096th byte from the first misses the last page
    memory2, old = _fresh_unaligned(2)
    raw = old.reshape(-1).view(np.uint8)
    raw[::4096] = raw[::4096]
    assert _resident(old) == [False, False, False]
    memory3, strided = _fresh_unaligned(2)
    strided[::PAGE_BYTES] = 1
    assert _resident(strided) == [True, True, False]
    del array, old, raw, strided
    for m in (memory, memory2, memory3):
        m.close()


LOCK = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from host.memory import lock_memory
print("locked" if lock_memory({enabled}) else "not locked")
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmLck")][0])
"""


def _run_lock(enabled: bool, limit_kib: int | None = None, drop_caps: bool = False) -> list[str]:
    def limit() -> None:
        if limit_kib is not None:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (limit_kib * 1024, limit_kib * 1024))

    cmd = [sys.executable, "-c", LOCK.format(enabled=enabled)]
    if drop_caps:  # as a user without CAP_IPC_LOCK (capsh, from libcap2-bin, when it is there)
        cmd = ["capsh", "--drop=cap_ipc_lock", "--", "-c", " ".join(f"'{c}'" for c in cmd)]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=60, check=True).stdout
    return out.strip().splitlines()


def test_memory_is_locked_by_default_where_allowed_and_says_so_either_way():
    import os
    import shutil

    may = os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] == resource.RLIM_INFINITY
    lines = _run_lock(True)
    if may:
        assert lines[0].startswith("Memory locked in RAM") and lines[1] == "locked", lines
        assert int(lines[2]) > 10_000  # kB: the interpreter and numpy at least
    else:
        assert lines[0].startswith("Memory not locked: the memory-lock limit is"), lines
    off = _run_lock(False)
    assert off == ["Memory not locked (lock_memory = false)", "not locked", "0"], off
    if os.geteuid() == 0 and shutil.which("capsh"):  # the same process without the privilege, under a limit
        limited = _run_lock(True, limit_kib=64, drop_caps=True)
        assert limited[0].startswith("Memory not locked: the memory-lock limit is 64 KiB"), limited
        assert limited[1:] == ["not locked", "0"], limited
