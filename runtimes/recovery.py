"""Waiting for a lost audio server or device, with backoff, for the live runtimes.

A runtime whose server or device goes away (or is not there at start-up)
keeps its program and state and retries; :class:`Recovery` keeps the
schedule and the status, and logs one line when the device goes and one when
it is back: the attempts in between are quiet.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from compiler_bridge.errors import DeviceError, RuntimeInitError

log = logging.getLogger("livehost.runtimes")

FIRST_RETRY_S = 0.05
MAX_RETRY_S = 0.5  # a server that is back is found within this (resume within 2 s of its return)


class Recovery:
    """Playing, or waiting for a device with backoff. The runtime calls it under its lock."""

    def __init__(self, runtime_id: str) -> None:
        self.runtime_id = runtime_id
        self.waiting_for: str | None = None  # e.g. "JACK"; None while playing
        self.reason = ""
        self.recoveries = 0
        self._since = 0.0
        self._delay_s = FIRST_RETRY_S
        self._next = 0.0

    @property
    def waiting(self) -> bool:
        return self.waiting_for is not None

    def lose(self, waiting_for: str, why: str) -> None:
        """The device went (or is missing): log it once, retry from now on."""
        self.waiting_for, self.reason = waiting_for, why
        self._since = time.monotonic()
        self._delay_s = FIRST_RETRY_S
        self._next = self._since + self._delay_s
        log.warning("%s: %s; keeping the program and its state, waiting for %s",
                    self.runtime_id, why, waiting_for)

    def due(self) -> bool:
        return self.waiting and time.monotonic() >= self._next

    def look(self, lock: threading.RLock, closed: Callable[[], bool], notice_loss: Callable[[], None],
             reconnect: Callable[[], None], then: Callable[[], None] = lambda: None) -> None:
        """One look from a runtime's watch thread, holding the runtime's *lock* only if it is
        free now (a load or close is under way: look again next time), never once *closed()*:
        *notice_loss()*, then, when an attempt is due, *reconnect()* (a DeviceError or
        RuntimeInitError from it is a failed attempt), then *then()*."""
        if not lock.acquire(blocking=False):
            return
        try:
            if closed():
                return
            notice_loss()
            if self.due():
                try:
                    reconnect()
                except (DeviceError, RuntimeInitError) as exc:
                    self.failed(str(exc).split(";")[0])  # (without a device list)
                else:
                    self.resumed()
            then()
        finally:
            lock.release()

    def failed(self, why: str) -> None:
        """An attempt did not get the device back: try again later, a little later each time."""
        self.reason = why
        self._delay_s = min(2 * self._delay_s, MAX_RETRY_S)
        self._next = time.monotonic() + self._delay_s
        log.debug("%s: still waiting for %s: %s", self.runtime_id, self.waiting_for, why)

    def resumed(self) -> None:
        log.info("%s: %s is back after %.1f s; playing again", self.runtime_id, self.waiting_for,
                 time.monotonic() - self._since)
        self.waiting_for = None
        self.recoveries += 1

    def stats(self) -> dict[str, Any]:
        """``recovery``: None while playing, else what it waits for and for how long."""
        text = None
        if self.waiting:
            text = f"waiting for {self.waiting_for} ({time.monotonic() - self._since:.0f} s)"
        return {"recovery": text, "recoveries": self.recoveries}
