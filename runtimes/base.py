"""The Runtime protocol and the base class that owns lifecycle and locking.

Like mido's ``BasePort``: the public ``start()``/``load()``/``close()`` own the
lock, the closed-check and idempotency once, here; a runtime supplies only
``_open``/``_load``/``_close``/``_stats`` (and ``_snapshot``).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Protocol

import numpy as np

from compiler_bridge.abi import KERNEL_NAMES
from compiler_bridge.config import swap_every_beats
from compiler_bridge.errors import RuntimeInitError
from compiler_bridge.program import Program

from .clock import Clock, SystemClock, Transport
from .realtime.handover import Offer


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.001) -> bool:
    """Poll *predicate* every *poll_s* seconds; return whether it held within *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def require_kernel(program: Program, kernel: str) -> None:
    """Refuse a program without the kernel a runtime plays (the old one keeps playing)."""
    if not program.has(kernel):
        signature = "audio(s, ctx, inp, out)" if kernel == "audio" else "midi(s, ctx, ev)"
        raise RuntimeInitError(f"{kernel}: the patch defines no {signature} kernel")


def offer(program: Program, state: np.ndarray | None = None, *, at_once: bool = False) -> Offer:
    """What an engine is handed to play *program*'s kernels from *state* (the defaults when None),
    taking over on the beat or bar its ``swap_on`` asks for (or *at_once*: an engine that goes on
    where another stopped)."""
    return Offer(program, tuple(program.kernels.get(k, 0) for k in KERNEL_NAMES),
                 program.new_state() if state is None else state, program.layout,
                 0.0 if at_once else swap_every_beats(program.config))


class Runtime(Protocol):
    id: str
    program: Program | None

    def start(self, program: Program, state: np.ndarray) -> None: ...
    def load(self, program: Program) -> None: ...
    def update_settings(self, settings: dict[str, Any]) -> None: ...
    def snapshot(self) -> tuple[Program, np.ndarray]: ...
    def playing_program(self) -> Program | None: ...
    def stats(self) -> dict[str, Any]: ...
    def liveness(self) -> tuple[int, bool, bool] | None:
        """For a heartbeat: the engine's calls that returned (a count that grows while its callback
        or clock thread runs, whatever it plays, and stands still while nothing calls it: a runtime
        waiting for its device), whether a call is under way (begun, not returned: standing still
        with one under way is a hang), and whether a kernel runs in it. None when there is no
        engine. Reads counters only: never waits for the engine."""
        return None

    def new_faults(self) -> list[str]: ...
    def close(self) -> None: ...


class BaseRuntime:
    """Lifecycle shared by every runtime.

    *settings* are the resolved ``[[runtime_settings]]`` entry (defaults
    merged). *transport* is the host's one tempo/beat source; *clock* gives
    time (a virtual clock in tests).
    """

    id = "base"
    panic_on_start = False  # set before start(): end notes a previous run may have left on (MIDI out)
    # set before start(): the first block or tick lands on this transport beat (at once when it has
    # passed); the audio engine and the JACK MIDI path place it at the exact frame
    start_at_beat: float | None = None

    def __init__(self, settings: dict[str, Any], *, transport: Transport | None = None,
                 clock: Clock | None = None) -> None:
        self.settings = dict(settings)
        self.clock = clock or SystemClock()
        self.transport = transport or Transport(120.0, self.clock)
        self.program: Program | None = None
        self.started = False
        self.closed = False
        self._lock = threading.RLock()

    # --- public API (owns locking and idempotency) ---

    def start(self, program: Program, state: np.ndarray) -> None:
        """Open the device and start playing *program* from *state*."""
        with self._lock:
            if self.closed:
                raise RuntimeInitError(f"{self.id}: runtime is closed")
            if self.started:
                raise RuntimeInitError(f"{self.id}: runtime already started")
            self.program = program
            self._open(program, state)
            self.started = True

    def load(self, program: Program) -> None:
        """Swap to *program* at the next block or tick boundary, state carried."""
        with self._lock:
            if self.closed or not self.started:
                raise RuntimeInitError(f"{self.id}: load() on a runtime that is not running")
            self._load(program)
            self.program = program

    def update_settings(self, settings: dict[str, Any]) -> None:
        """Apply changed live keys (the registry's ``live_keys``)."""
        with self._lock:
            self.settings = dict(settings)
            self._update_settings(settings)

    def fade_out(self) -> bool:
        """Go silent for good, the state final, keeping what is slow to let go until
        :meth:`close` (a switch starts the next runtime meanwhile). True when it did;
        the default does nothing: :meth:`close` does it all."""
        return False

    def snapshot(self) -> tuple[Program, np.ndarray]:
        """Return the playing program and a copy of its current state."""
        with self._lock:
            if self.program is None:
                raise RuntimeInitError(f"{self.id}: nothing is playing")
            return self.program, self._snapshot()

    def stats(self) -> dict[str, Any]:
        return {"runtime": self.id, **self._stats()}

    def new_faults(self) -> list[str]:
        """What the engine's watchdog did since the last call, one line each.

        A watchdog that replaced the program also makes :attr:`program` the
        one that plays now, so the next swap carries the right state.
        """
        with self._lock:
            lines, playing = self._new_faults()
            if playing is not None:
                self.program = playing
            return lines

    def set_tempo(self, tempo_bpm: float) -> None:
        """Change the transport's tempo now (the beat goes on from where it is)."""
        with self._lock:
            self.transport.set_tempo(tempo_bpm)
            self._tempo_changed()

    def follow_link(self, tempo_bpm: float, beat: float, time_us: float, mono_ns: int, quantum: float) -> None:
        """An Ableton Link session's timeline: *beat* at *time_us* on Link's clock (*mono_ns* on
        ``time.monotonic_ns``'s). The transport, and with it the engine's beat, follows it."""
        with self._lock:
            if self.closed:
                return
            self.transport.align(tempo_bpm, beat, mono_ns)
            self._link_changed(tempo_bpm, beat, time_us, quantum)

    def write_state(self, name: str, value: float, index: int = 0) -> bool:
        """Write *value* to the playing state's field *name* (element *index*) at the
        next block or tick boundary; False when the engine's queue is full.

        While a swap waits for its beat or bar, the write goes to the program
        that plays (the swap carries it), not to the one waiting: it is heard
        at once. Raises KeyError (no such field), IndexError, or
        RuntimeInitError (nothing plays, or this runtime takes no live writes).
        """
        with self._lock:
            ring = self._controls() if self.started and not self.closed else None
            if ring is None or self.program is None:
                raise RuntimeInitError(f"{self.id}: takes no state writes now")
            playing = self._playing_program()
            if playing is None or name not in playing.layout.names():
                playing = self.program
            pushed = ring.push(*playing.layout.target(name, index), float(value))
            if pushed and playing is not self.program and self._playing_program() is not playing:
                # the swap was taken as this was pushed: the write may have found the old state gone
                pushed = ring.push(*self.program.layout.target(name, index), float(value))
            return pushed

    def close(self) -> None:
        """Silence and free everything; closing twice is fine."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.started:
                self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- what a runtime supplies ---

    def _open(self, program: Program, state: np.ndarray) -> None:
        raise NotImplementedError

    def _load(self, program: Program) -> None:
        raise NotImplementedError

    def _update_settings(self, settings: dict[str, Any]) -> None:
        pass

    def _snapshot(self) -> np.ndarray:
        raise NotImplementedError

    def _stats(self) -> dict[str, Any]:
        return {}

    def _new_faults(self) -> tuple[list[str], Program | None]:
        return [], None

    def _close(self) -> None:
        pass

    def _tempo_changed(self) -> None:
        pass

    def _link_changed(self, tempo_bpm: float, beat: float, time_us: float, quantum: float) -> None:
        """A Link timeline came (the transport follows it already)."""
        self._tempo_changed()

    def _controls(self):
        """The engine's :class:`~runtimes.realtime.controls.ControlRing`, if it has one."""
        return None

    def playing_program(self) -> Program | None:
        """The program the engine plays now: :attr:`program` (the newest asked for) unless a
        swap waits for its beat or bar, or a watchdog went back to the one before. Takes no lock."""
        return self._playing_program()

    def _playing_program(self) -> Program | None:
        return self.program


def carried_to(program: Program, playing: Program, state: np.ndarray) -> np.ndarray:
    """*state* of *playing* as a state of *program* (itself when they are one: a swap taken)."""
    return state if playing is program else program.layout.carry(playing.layout, state)
