"""OSC control of a running host, over UDP (``livehost run --osc-port N``).

Bound to 127.0.0.1 unless ``--osc-host`` (or ``osc_host`` in
``livehost.toml``) says otherwise: anyone who can reach the port can change
what plays. The address space:

==================================  ================================================
``/livehost/tempo f``               tempo in BPM (20-999), at once
``/livehost/runtime s|i``           switch to a runtime by id or ``runtime_settings`` index
``/livehost/swap_on s``             ``block``, ``beat`` or ``bar``, for the next program
``/livehost/state/<field> f``       write a state field at the next block or tick
``/livehost/state/<field> i f``     write element *i* of an array field
``/livehost/stats``                 reply ``/livehost/stats s``: the status as JSON
``/livehost/state``                 reply ``/livehost/state s``: the playing program and its state, JSON
==================================  ================================================

Tempo, runtime and ``swap_on`` hold through later saves until a save changes
that key in ``livehost.toml`` (see :meth:`host.Host.set_live`). A bundle whose
time tag is in the future is applied at that time by livehost's own
scheduler thread (never by sleeping in the receiving thread), at most
:data:`MAX_AHEAD_S` ahead. A message that is malformed, unknown or out of
range is logged (once per address and reason) and ignored.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import socket
import threading
import time
from typing import Any

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

log = logging.getLogger("livehost.osc")

PREFIX = "/livehost/"
MAX_AHEAD_S = 60.0  # a time tag further ahead is refused (a clock set wrong, not a plan)
MAX_SCHEDULED = 4096  # bundles waiting for their time
MAX_LOGGED = 256  # distinct (address, reason) pairs logged; later ones are only counted
RECV_BYTES = 65536


class Rejected(ValueError):
    """A message livehost does not take: why, in words for the log."""


class OscServer:
    """Receive OSC on ``host:port`` and apply it to *target* (a :class:`host.Host`).

    ``port=0`` takes a free port (see :attr:`port`). Raises OSError when the
    address cannot be bound.
    """

    def __init__(self, target, port: int, host: str = "127.0.0.1") -> None:
        self.target = target
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()[:2]
        self.port = self.address[1]
        self.received = self.applied = self.rejected = 0
        self._logged: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, OscMessage, Any]] = []  # (monotonic time, order, message, sender)
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._receive, name="livehost-osc", daemon=True),
                         threading.Thread(target=self._scheduled, name="livehost-osc-scheduled", daemon=True)]

    def start(self) -> "OscServer":
        for thread in self._threads:
            thread.start()
        log.info("OSC control on udp://%s:%d (addresses under %s)", *self.address, PREFIX)
        return self

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        self.sock.close()

    def __enter__(self) -> "OscServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- receiving ---

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(RECV_BYTES)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:  # closed under us
                return
            self.received += 1
            try:
                self.handle(data, sender)
            except Exception:  # one packet must never end control for the rest of the show
                log.exception("OSC packet from %s:%s could not be handled", *sender[:2])

    def handle(self, data: bytes, sender=None) -> None:
        """Apply one datagram: its messages now, or a bundle's at its time tag."""
        try:
            messages = OscPacket(data).messages
        except Exception as exc:  # python-osc raises more than its ParseError on hostile bytes
            self._reject("<packet>", f"not an OSC message or bundle ({type(exc).__name__})")
            return
        now_unix, now = time.time(), time.monotonic()
        for timed in messages:
            ahead = timed.time - now_unix
            if ahead <= 0.0005:
                self._apply(timed.message, sender)
            elif ahead > MAX_AHEAD_S:
                self._reject(_address(timed.message), f"time tag {ahead:.0f} s ahead (at most {MAX_AHEAD_S:g} s)")
            else:
                with self._cond:
                    if len(self._due) >= MAX_SCHEDULED:
                        self._reject(_address(timed.message), f"over {MAX_SCHEDULED} bundles wait for their time")
                        continue
                    heapq.heappush(self._due, (now + ahead, next(self._order), timed.message, sender))
                    self._cond.notify_all()

    def _scheduled(self) -> None:
        """Apply bundled messages when their time comes."""
        while True:
            with self._cond:
                while not self._stop.is_set() and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._due else self._due[0][0] - time.monotonic())
                if self._stop.is_set():
                    return
                _, _, message, sender = heapq.heappop(self._due)
            try:
                self._apply(message, sender)
            except Exception:
                log.exception("Scheduled OSC message %s could not be applied", _address(message))

    # --- the address space ---

    def _apply(self, message: OscMessage, sender) -> None:
        address = _address(message)
        try:
            args = list(message.params)
        except Exception as exc:
            self._reject(address, f"unreadable arguments ({type(exc).__name__})")
            return
        try:
            self._dispatch(address, args, sender)
        except Rejected as exc:
            self._reject(address, str(exc))
        except ValueError as exc:  # the host refused the value: say what it said
            self._reject(address, str(exc))
        else:
            self.applied += 1

    def _dispatch(self, address: str, args: list, sender) -> None:
        if not address.startswith(PREFIX):
            raise Rejected(f"unknown address (livehost's are under {PREFIX})")
        name = address[len(PREFIX):]
        if name == "tempo":
            (bpm,) = _args(args, (float,), "a tempo in BPM")
            self.target.set_live("tempo_bpm", bpm)
        elif name == "runtime":
            (which,) = _args(args, ((str, int),), "a runtime id or index")
            self.target.set_live("selected_runtime", which)
        elif name == "swap_on":
            (mode,) = _args(args, (str,), '"block", "beat" or "bar"')
            self.target.set_live("swap_on", mode)
        elif name.startswith("state/") and len(name) > len("state/"):
            number = (int, float, bool)  # True/False for a bool field
            if len(args) == 2:
                index, value = _args(args, (int, number), "an index and a number")
            else:
                index, (value,) = 0, _args(args, (number,), "a number, or an index and a number")
            self.target.write_state(name[len("state/"):], value, index)
        elif name == "stats":
            _args(args, (), "no arguments")
            self._reply(sender, PREFIX + "stats", json.dumps(self.target.status(), default=str))
        elif name == "state":
            _args(args, (), "no arguments")
            self._reply(sender, PREFIX + "state", json.dumps(self.target.state_values()))
        else:
            raise Rejected("unknown address")

    def _reply(self, sender, address: str, *values) -> None:
        if sender is None:
            return
        builder = OscMessageBuilder(address)
        for value in values:
            builder.add_arg(value)
        try:
            self.sock.sendto(builder.build().dgram, sender)
        except OSError as exc:
            self._reject(address, f"reply to {sender[0]}:{sender[1]} failed: {exc}")

    def _reject(self, address: str, why: str) -> None:
        self.rejected += 1
        key = (address[:80], why)
        if key in self._logged or len(self._logged) > MAX_LOGGED:
            return
        self._logged.add(key)
        if len(self._logged) > MAX_LOGGED:
            log.warning("OSC: over %d kinds of ignored messages: later ones are counted, not logged", MAX_LOGGED)
        else:
            log.warning("OSC %s ignored: %s", key[0], why)


def _address(message: OscMessage) -> str:
    try:
        return str(message.address)
    except Exception:
        return "<no address>"


def _args(args: list, kinds: tuple, what: str) -> list:
    """*args* if they match *kinds* (float takes an int too; a bool is no number); else Rejected."""
    if len(args) != len(kinds):
        raise Rejected(f"expected {what}, got {len(args)} argument(s)")
    out = []
    for value, kind in zip(args, kinds):
        accepted = kind if isinstance(kind, tuple) else (int, float) if kind is float else (kind,)
        if isinstance(value, bool) and bool not in accepted or not isinstance(value, accepted):
            raise Rejected(f"expected {what}, got {type(value).__name__} {value!r:.40}")
        if isinstance(value, float) and not math.isfinite(value):
            raise Rejected(f"expected {what}, got {value!r}")
        out.append(value)
    return out
