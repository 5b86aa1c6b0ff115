"""Locking livehost's memory in RAM, so a callback never waits for a page.

A page fault in a real-time callback waits on the process's memory-map lock,
which any thread that allocates or frees memory (a gc, a new thread's stack,
numpy) may hold at that moment. ``mlockall(MCL_CURRENT | MCL_FUTURE)`` makes
every page resident now and every page mapped later resident as it is
mapped: no first touch, no swap-out. It is done only where no limit
applies: a process with CAP_IPC_LOCK (root), or a memory-lock limit that is
unlimited (a user in a group given ``memlock unlimited`` in
``/etc/security/limits.d``, as JACK's real-time set-up does). With
``MCL_FUTURE`` under a finite limit, a later allocation past it would fail.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource

log = logging.getLogger("livehost.host")

MCL_CURRENT, MCL_FUTURE = 1, 2
CAP_IPC_LOCK = 14


def _may_lock_all() -> bool:
    """CAP_IPC_LOCK in the effective set, or no memory-lock limit (raised to the hard one when that has none)."""
    with open("/proc/self/status") as f:
        caps = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    if caps >> CAP_IPC_LOCK & 1:
        return True
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
        soft = hard
    return soft == resource.RLIM_INFINITY


def lock_memory(enabled: bool = True) -> bool:
    """Lock the process's memory where the limit allows; log one line saying so or why not.

    Returns whether it is locked. ``lock_memory = false`` in livehost.toml turns it off.
    """
    if not enabled:
        log.info("Memory not locked (lock_memory = false)")
        return False
    if not _may_lock_all():
        soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        log.warning("Memory not locked: the memory-lock limit is %d KiB (ulimit -l); a callback may then wait for "
                    "a page another thread is mapping. Give livehost's user 'memlock unlimited' (as the audio "
                    "group has with JACK's real-time set-up), or set lock_memory = false to silence this",
                    soft // 1024)
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        err = ctypes.get_errno()
        log.warning("Memory not locked: mlockall failed: %s", os.strerror(err))
        return False
    log.info("Memory locked in RAM (mlockall): no page fault in the callbacks")
    return True
