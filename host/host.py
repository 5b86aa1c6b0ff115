"""The host: watches a project's compiled config and keeps one runtime playing.

The watcher only fills a latest-wins request slot; one lifecycle thread takes
the request and, under one lock, either hot-swaps the program into the
running runtime (same id, only live settings changed: no destroy, state kept)
or destroys the old runtime and creates the new one (state carried). A
request that arrives while another initialises is not dropped: the newest
one is applied right after.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from compiler_bridge.compile import COMPILED_NAME, ERROR_NAME, livehost_dir
from compiler_bridge.config import swap_every_beats
from compiler_bridge.errors import CompiledConfigError, HostError
from compiler_bridge.program import Program, read_compiled
from compiler_bridge.watch import DebouncedWatcher
from runtimes.base import Runtime
from runtimes.clock import Clock, SystemClock, Transport
from runtimes.registry import Registry, RegistryEntry, default_registry

from .faults import FAULT_POLL_S, Reports
from .live import LiveOverrides
from .persistence import Kept

log = logging.getLogger("livehost.host")

# a runtime switch on a beat or bar: the old runtime is closed this long before it (closing it and
# opening the new one took 50-120 ms in bench/edit_to_sound), the new one starts on it
SWITCH_LEAD_S = 0.3
# What a runtime raises when its device or program fails: livehost's own errors, or the OS's.
_RUNTIME_FAILURES = (HostError, OSError)


class Host:
    """Run a project's compiled program in the runtime its config selects.

    Parameters
    ----------
    project_dir : path
        The project folder (``livehost.toml``, ``patch.py``, ``.livehost/``).
    registry : Registry, optional
        Runtime entries; the built-in ones by default.
    runtime : str, optional
        Force this runtime id instead of ``selected_runtime`` (``--runtime``).
    restore_state : bool
        Live runs restore ``.livehost/state.npz`` on start and write it on a
        clean exit; renders and tests start from the patch's defaults.
    watch : bool
        Watch ``.livehost/`` for new compiled configs (debounced).
    quarantine : sequence of str
        Source hashes not to play (they crashed or hung the engine): the
        program before such a one plays instead.
    """

    def __init__(self, project_dir: Path, *, registry: Registry | None = None, runtime: str | None = None,
                 clock: Clock | None = None, restore_state: bool = False, watch: bool = True,
                 debounce_s: float = 0.05, quarantine: tuple[str, ...] = ()) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.registry = registry or default_registry()
        self.runtime_override = runtime
        self.clock = clock or SystemClock()
        self.transport = Transport(120.0, self.clock)
        self.restore_state = restore_state
        self.runtime: Runtime | None = None
        self.settings: dict[str, Any] | None = None
        self.last_error: dict | None = None
        self.quarantine = set(quarantine)
        self.last_compile: dict | None = None  # what the last compile said: seconds, build, whether it was reused
        self.unclean_start = False  # a live run found that the last one did not end cleanly
        self._compiled: dict | None = None  # what plays now
        self._from_file: dict | None = None  # the last compile's result, before live overrides
        self._overrides = LiveOverrides()
        self._kept = Kept(self.project_dir, restore_state)
        self._out_of_range: set[str] = set()  # fields a write out of range was logged for
        self._link = None  # a host.link.LinkSync while the config says link = true
        self._reports = Reports()
        self._lock = threading.Lock()  # held while runtimes are destroyed and created
        self._slot_cond = threading.Condition()
        self._pending: dict | None = None
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._lifecycle, name="livehost-host", daemon=True)
        self._monitor = threading.Thread(target=self._watch_faults, name="livehost-host-faults", daemon=True)
        self._watcher = (DebouncedWatcher(livehost_dir(self.project_dir), (COMPILED_NAME, ERROR_NAME),
                                          self._on_files, debounce_s=debounce_s, name="livehost-host-watch")
                         if watch else None)

    # --- lifecycle ---

    def start(self) -> "Host":
        self.unclean_start = self._kept.begin()
        self._thread.start()
        self._monitor.start()
        if self._watcher:
            self._watcher.start()
        if (livehost_dir(self.project_dir) / ERROR_NAME).exists():
            self._read_error()
        if (livehost_dir(self.project_dir) / COMPILED_NAME).exists():  # else nothing compiled yet
            self._request_compiled()
        return self

    def close(self) -> None:
        """Stop watching, save state (live runs), destroy the runtime."""
        with self._slot_cond:
            if self._closing:
                return
            self._closing = True
            self._slot_cond.notify_all()
        if self._watcher:
            self._watcher.stop()
        if self._thread.is_alive():
            self._thread.join()
        if self._monitor.is_alive():
            self._monitor.join()
        with self._lock:
            self._destroy(save=True)
            self._sync_link({})
        self._kept.end()

    def __enter__(self) -> "Host":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- requests ---

    def request(self, compiled: dict) -> None:
        """Ask for *compiled* to play; a newer request replaces an unhandled one.

        ``livehost run`` hands each compile's result here as it comes (the
        watched ``compiled.json`` then finds it playing); a compile in another
        process reaches the host through the file. A quarantined program is
        replaced by the one before it (or not played).
        """
        if compiled["source_hash"] in self.quarantine:
            compiled = self._instead_of_quarantined(compiled["source_hash"])
            if compiled is None:
                return
        with self._slot_cond:
            self._from_file = compiled
            self._pending = self._overridden(compiled)
            self._slot_cond.notify_all()

    # --- live control (OSC): what an edit of livehost.toml would do, in memory ---

    def set_live(self, key: str, value: Any) -> None:
        """Set ``tempo_bpm``, ``selected_runtime`` (an index, or a runtime id) or ``swap_on`` now.

        It holds, through later saves, until a save changes that key in
        ``livehost.toml``: then the file's word is the last. Raises ValueError
        for a value that is not one of the key's.
        """
        with self._slot_cond:
            compiled = self._from_file
            if compiled is None:
                raise ValueError("nothing is compiled yet")
            value = self._overrides.set(compiled["config"], key, value)
            if key == "selected_runtime":  # a switch: through the lifecycle, like a save
                self._pending = self._overridden(compiled)
                self._slot_cond.notify_all()
                return
        if key == "tempo_bpm" and self._link is not None:  # the session's tempo: every peer takes it
            self._link.set_tempo(value)
        elif key == "tempo_bpm":  # at once, without a swap; later programs get it in their config
            with self._lock:
                if self.runtime is not None:
                    self.runtime.set_tempo(value)  # (the transport is the runtime's too)
                else:
                    self.transport.set_tempo(value)
        # swap_on: the next program's config carries it

    def write_state(self, name: str, value: float, index: int = 0) -> None:
        """Write a state field of the playing program at the next block or tick.

        Raises ValueError naming what is wrong (no such field, index, nothing plays, queue full).
        """
        with self._lock:
            runtime = self.runtime
            if runtime is None or runtime.program is None:
                raise ValueError("nothing plays")
            names = runtime.program.layout.names()
            if name not in names:
                raise ValueError(f"no state field {name!r} (fields: {', '.join(names) or 'none'})")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: {value!r} is not a number") from None
            if not np.isfinite(value):
                raise ValueError(f"{name}: {value!r} is not a finite number")
            value = self._in_range(runtime.program.layout.field(name), value)
            try:
                pushed = runtime.write_state(name, value, index)
            except (IndexError, *_RUNTIME_FAILURES) as exc:
                raise ValueError(str(exc)) from None
            if not pushed:
                raise ValueError(f"{name}: the engine's write queue is full")

    def _in_range(self, field, value: float) -> float:
        """*value* clamped to *field*'s range; the first value out of it is logged, once per field."""
        held = field.clamp(value)
        if held != value and field.name not in self._out_of_range:
            self._out_of_range.add(field.name)
            log.warning("%s = %r is outside its range %g to %g: playing %g (later ones are clamped quietly)",
                        field.name, value, field.range[0], field.range[1], held)
        return held

    def _overridden(self, compiled: dict) -> dict:
        return self._overrides.apply(compiled)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no request is pending or being applied."""
        with self._slot_cond:
            return self._slot_cond.wait_for(lambda: self._pending is None and not self._busy, timeout_s)

    def _on_files(self, changed: set[str]) -> None:
        if ERROR_NAME in changed:
            self._read_error()
        if COMPILED_NAME in changed:
            self._request_compiled()

    def _request_compiled(self) -> None:
        try:
            compiled = read_compiled(livehost_dir(self.project_dir) / COMPILED_NAME)
        except CompiledConfigError as exc:  # the last good program keeps playing
            log.error("Ignoring unreadable compiled config %s", exc)
            return
        self.request(compiled)

    def _instead_of_quarantined(self, digest: str) -> dict | None:
        """The program that played before *digest*, unless it is quarantined too."""
        previous = self._kept.previous()
        if previous is None or previous["source_hash"] in self.quarantine:
            log.error("Program %s is quarantined (its kernel hung or crashed the engine) and no program before it "
                      "can play: waiting for the next save", digest)
            return None
        log.error("Program %s is quarantined (its kernel hung or crashed the engine): playing %s, the one before it",
                  digest, previous["source_hash"])
        return previous

    def _read_error(self) -> None:
        try:
            self.last_error = json.loads((livehost_dir(self.project_dir) / ERROR_NAME).read_text())
        except (OSError, ValueError):  # removed: the last compile succeeded
            self.last_error = None
            return
        playing = self.runtime.id if self.runtime else "nothing"
        log.error("Compile failed: %s (still playing: %s)", self.last_error.get("text"), playing)

    def note_compile(self, compiled: dict, seconds: float) -> None:
        """Note a compile's result for the status (``livehost run`` calls it)."""
        self.last_compile = {"seconds": round(seconds, 3), "program": compiled["source_hash"],
                             "reused_build": bool(compiled.get("reused_build"))}

    def _watch_faults(self) -> None:
        """Log what the engine's watchdog does as it happens, one line each, and
        fault counters as they start to grow (rate-limited)."""
        while True:
            with self._slot_cond:
                if self._slot_cond.wait_for(lambda: self._closing, FAULT_POLL_S):
                    return
            self._reports.poll(self.runtime)

    def _lifecycle(self) -> None:
        while True:
            with self._slot_cond:
                self._slot_cond.wait_for(lambda: self._pending is not None or self._closing)
                if self._closing:
                    return
                compiled, self._pending = self._pending, None
                self._busy = True
            try:
                with self._lock:
                    self._apply(compiled)
            except Exception:  # the host must stay up whatever a request does
                log.exception("Request failed")
            finally:
                with self._slot_cond:
                    self._busy = False
                    self._slot_cond.notify_all()

    # --- selection, swap, destroy/create (always under self._lock) ---

    def _apply(self, compiled: dict) -> None:
        playing = self._compiled
        if (playing is not None and self.runtime is not None and self.runtime.program is not None
                and self.runtime.program.source_hash == compiled["source_hash"] == playing["source_hash"]
                and compiled["config"] == playing["config"]):
            log.info("Program %s already plays", compiled["source_hash"])  # e.g. the first compile of a restart
            return
        selected = self._select(compiled)
        if selected is None:
            return
        entry, settings = selected
        try:
            program = Program.from_compiled(compiled, playing=self.runtime.program if self.runtime else None)
        except CompiledConfigError as exc:
            log.error("Failed to load program %s: %s", compiled.get("source_hash"), exc)
            return
        old_tempo_bpm = self.transport.tempo_bpm
        tempo = settings.get("tempo_bpm") or compiled["config"]["tempo_bpm"]
        self._sync_link(compiled["config"], tempo)
        if self._link is None:
            self.transport.set_tempo(tempo)
        if (self.runtime is not None and self.runtime.id == entry.id
                and not entry.schema.needs_new_runtime(self.settings, settings)):
            self._swap(settings, program, old_tempo_bpm)
        else:
            self._recreate(entry, settings, program, old_tempo_bpm)
        if self.runtime is not None and self.runtime.program is program:
            self._played(compiled)

    def _sync_link(self, config: dict, tempo_bpm: float | None = None) -> None:
        """Join or leave an Ableton Link session as *config* says; a tempo the file changed leads it."""
        if not config.get("link"):
            if self._link is not None:
                self._link.close()
                self._link = None
                log.info("Ableton Link off")
            return
        from .link import LinkSync, LinkUnavailable

        if self._link is None:
            try:
                self._link = LinkSync(self._follow_link, tempo_bpm, config.get("quantum", 4.0))
            except LinkUnavailable as exc:
                log.error("%s; playing on livehost's own clock", exc)
            return
        self._link.quantum = float(config.get("quantum", 4.0))
        playing = (self._compiled or {}).get("config", {})
        if tempo_bpm is not None and playing.get("tempo_bpm") is not None and tempo_bpm != playing["tempo_bpm"]:
            self._link.set_tempo(tempo_bpm)  # a save changed the tempo: the session takes it

    def _follow_link(self, tempo_bpm: float, beat: float, time_us: float, mono_ns: int, quantum: float) -> None:
        """The session's timeline, from the Link thread: the playing runtime follows it."""
        runtime = self.runtime
        if runtime is not None:
            runtime.follow_link(tempo_bpm, beat, time_us, mono_ns, quantum)
        else:
            self.transport.align(tempo_bpm, beat, mono_ns)

    def _played(self, compiled: dict) -> None:
        """*compiled* plays now: the one before it is where a quarantine goes back to."""
        if self._compiled is not None and self._compiled["source_hash"] != compiled["source_hash"]:
            self._kept.keep_previous(self._compiled)
        self._compiled = compiled

    def _select(self, compiled: dict) -> tuple[RegistryEntry, dict[str, Any]] | None:
        """Return the registry entry to run and its resolved settings; None keeps what plays.

        An unknown id falls back to the default at start-up; while a runtime
        plays, it is a bad save.
        """
        requested, settings = self._requested(compiled)
        log.info("Requesting runtime: %s", requested)
        entry = self.registry.get(requested)
        if entry is None:
            if self.runtime is not None:
                log.error("Unknown runtime %s: a bad save; %s keeps playing", requested, self.runtime.id)
                return None
            log.warning("Unknown runtime %s, falling back to default: %s", requested, self.registry.default_id)
            entry, settings = self.registry.get(self.registry.default_id), {}
        log.info("Loaded runtime from registry: %s", entry.id)
        return entry, entry.schema.resolve(settings)

    def _requested(self, compiled: dict) -> tuple[str, dict[str, Any]]:
        """Return the requested runtime id and its settings as the config gives them."""
        config = compiled["config"]
        entries = config["runtime_settings"]
        if self.runtime_override:
            for entry in entries:
                if entry.get("runtime") == self.runtime_override:
                    return self.runtime_override, entry
            return self.runtime_override, {}
        index = config["selected_runtime"]
        if 0 <= index < len(entries):
            return entries[index]["runtime"], entries[index]
        return f"<runtime_settings[{index}]>", {}

    def _swap(self, settings: dict[str, Any], program: Program, old_tempo_bpm: float) -> None:
        """Same runtime, only live settings changed: load *program*, state kept.

        New tempo and live settings apply to this swap, and are undone if it is refused.
        """
        changed = settings != self.settings
        if changed:
            self.runtime.update_settings(settings)
        try:
            self.runtime.load(program)
        except Exception as exc:
            if changed:
                self.runtime.update_settings(self.settings)
            self.transport.set_tempo(old_tempo_bpm)
            if not isinstance(exc, _RUNTIME_FAILURES):
                raise  # a bug of ours: the lifecycle thread logs it
            # e.g. the save removed the kernel this runtime plays
            log.error("Could not swap program %s into runtime %s: %s; the old program keeps playing",
                      program.source_hash, self.runtime.id, exc)
            return
        self.settings = settings
        every = swap_every_beats(program.config)
        if every > 0 and self.runtime.playing_program() is not program:
            self._reports.awaited = program
            log.info("Swapped program %s into runtime: %s (it takes over on the next %s)", program.source_hash,
                     self.runtime.id, "beat" if every == 1 else "bar")
        else:
            log.info("Swapped program %s into runtime: %s", program.source_hash, self.runtime.id)

    def _recreate(self, entry: RegistryEntry, settings: dict[str, Any], program: Program,
                  old_tempo_bpm: float) -> None:
        """Destroy the playing runtime (state carried) and create *entry*'s; restore the old one if that fails."""
        if self.runtime is None:
            self._create(entry, settings, program, self._kept.initial_state(program))
            return
        at_beat = None
        every = swap_every_beats(program.config)
        if every > 0:  # swap_on = "beat" or "bar": the new runtime comes in on the transport's next one
            at_beat = self._until_switch(every)
            if at_beat is None or self.runtime is None:  # closing meanwhile
                return
        old = self.runtime
        # To another runtime: the old one goes silent, and lets go of its device only once the
        # new one plays (the audio runtime's stream takes about 25 ms to close). The same runtime
        # again may want that very device: closed first.
        fade_out = getattr(old, "fade_out", None)  # (not part of the Runtime protocol: BaseRuntime's)
        early = old.id != entry.id and fade_out is not None and fade_out()
        if early:
            log.info("Destroying runtime: %s", old.id)
            self.runtime = None
        else:
            self._destroy(save=False)
        old_program, old_state = old.snapshot()  # after close: the state of the last block or tick played
        previous = (self.registry.get(old.id), self.settings, old_program, old_state)
        state = program.layout.carry(old_program.layout, old_state)
        created = self._create(entry, settings, program, state, at_beat)
        if early:
            old.close()
        if created:
            return
        prev_entry, prev_settings, prev_program, prev_state = previous
        log.warning("Restoring runtime: %s", prev_entry.id)
        self.transport.set_tempo(old_tempo_bpm)
        self._create(prev_entry, prev_settings, prev_program, prev_state)

    def _until_switch(self, every: float) -> float | None:
        """Wait, letting go of the lock meanwhile, until SWITCH_LEAD_S before the transport's next
        multiple of *every* beats that is at least that far away; return that beat (None: closing).

        The old runtime plays until then; what is left of the lead covers
        closing it and opening the new one, whose first block or tick is
        placed on that beat.
        """
        now_ns = self.clock.now_ns()
        lead_beats = SWITCH_LEAD_S * self.transport.tempo_bpm / 60.0
        beat = math.ceil((self.transport.beat_at(now_ns) + lead_beats) / every) * every
        wait_s = (self.transport.time_at(beat) - now_ns) / 1e9 - SWITCH_LEAD_S
        log.info("Switching runtimes on beat %g (in %.2f s)", beat, wait_s + SWITCH_LEAD_S)
        self._lock.release()
        try:
            with self._slot_cond:
                closing = self._slot_cond.wait_for(lambda: self._closing, max(wait_s, 0.0))
        finally:
            self._lock.acquire()
        return None if closing else beat

    def _create(self, entry: RegistryEntry, settings: dict[str, Any], program: Program, state: np.ndarray,
                at_beat: float | None = None) -> bool:
        runtime = None
        try:
            runtime = entry.factory(settings, transport=self.transport, clock=self.clock)
            runtime.start_at_beat = at_beat
            if self._link is not None:  # on the session's timeline from its first block or tick
                runtime.follow_link(*self._link.timeline()[:4], self._link.quantum)
            if self.unclean_start:  # notes the last run left on in external gear are ended first
                runtime.panic_on_start = True
            runtime.start(program, state)
        except _RUNTIME_FAILURES as exc:
            log.error("Failed to initialize runtime: %s: %s", entry.id, exc)
        except Exception as exc:  # unexpected: logged with its traceback; the caller still restores the old runtime
            log.exception("Failed to initialize runtime: %s: %s", entry.id, exc)
        else:
            self.runtime, self.settings = runtime, settings
            if self._link is not None:  # what the session did while it started
                self._link.publish_now()
            self.unclean_start = False  # ended once is enough
            log.info("Successfully initialized runtime: %s", entry.id)
            return True
        if runtime is not None:
            runtime.close()
        return False

    def _destroy(self, *, save: bool) -> None:
        if self.runtime is None:
            return
        log.info("Destroying runtime: %s", self.runtime.id)
        runtime, self.runtime = self.runtime, None
        runtime.close()
        if save:
            self._kept.save_state(runtime)  # closed: nothing changes the state any more

    def save_state(self) -> None:
        """Snapshot the playing state now (a live run does so every few seconds, so a crash loses little)."""
        if not self.restore_state or not self._lock.acquire(timeout=0.1):  # busy swapping: next time
            return
        try:
            if self.runtime is not None:
                self._kept.save_state(self.runtime)
        finally:
            self._lock.release()

    def liveness(self) -> tuple[int, bool, bool] | None:
        """The runtime's :meth:`~runtimes.base.BaseRuntime.liveness`; None when nothing runs."""
        runtime = self.runtime
        return runtime.liveness() if runtime is not None else None

    def playing(self) -> str | None:
        """The source hash of the program the runtime plays, if any."""
        runtime = self.runtime
        program = runtime.program if runtime is not None else None
        return program.source_hash if program is not None else None

    # --- reporting ---

    def state_values(self) -> dict[str, Any]:
        """The playing program's source hash and its state's fields as numbers (arrays as lists)."""
        runtime = self.runtime
        if runtime is None or runtime.program is None:
            return {"program": None, "fields": {}}
        program, state = runtime.snapshot()
        return {"program": program.source_hash, "fields": {n: state[n][0].tolist() for n in program.layout.names()}}

    def status(self) -> dict[str, Any]:
        """Runtime id, its stats, tempo and position, what it waits for (None while it
        plays), and the last compile's result or error."""
        runtime = self.runtime
        stats = runtime.stats() if runtime else {}
        config = (self._compiled or {}).get("config", {})
        beats_per_bar = int(config.get("beats_per_bar", 4))
        beat = self.transport.beat_at(self.clock.now_ns())
        bar, in_bar = divmod(max(beat, 0.0), beats_per_bar)
        return {"runtime": runtime.id if runtime else None,
                "stats": stats,
                "tempo_bpm": round(self.transport.tempo_bpm, 2),
                "position": f"{int(bar) + 1}:{int(in_bar) + 1}",  # bar:beat, from 1:1
                "recovery": stats.get("recovery"),  # e.g. "waiting for JACK (3 s)" after a lost server
                "program": runtime.program.source_hash if runtime and runtime.program else None,
                "quarantined": sorted(self.quarantine),
                "last_compile": self.last_compile,
                "last_error": self.last_error,
                "link_peers": self._link.peers if self._link is not None else None}
