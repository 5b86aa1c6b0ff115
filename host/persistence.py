"""What a live run keeps in ``.livehost/`` between runs: the state, the program before, a marker.

* ``state.npz``: the playing state, saved every few seconds and on a clean
  exit, restored at the next live start (renders and tests never read it);
* ``previous.json``: the compiled config that played before the one playing
  now, where a quarantined program goes back to;
* ``running``: there while a live run plays; found at start, the last run did
  not end cleanly (its notes may still sound in outside gear).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from compiler_bridge.compile import livehost_dir
from compiler_bridge.errors import CompiledConfigError
from compiler_bridge.files import write_json_atomic
from compiler_bridge.program import Program, on_disk, read_compiled
from compiler_bridge.state import load_snapshot, save_snapshot

log = logging.getLogger("livehost.host")

SNAPSHOT_NAME = "state.npz"
PREVIOUS_NAME = "previous.json"
RUNNING_NAME = "running"


class Kept:
    """A project's ``.livehost/`` files of a run; *restore_state*: a live run (state saved and restored)."""

    def __init__(self, project_dir: Path, restore_state: bool) -> None:
        self.folder = livehost_dir(project_dir)
        self.restore_state = restore_state

    def begin(self) -> bool:
        """A live run starts: whether the last one did not end cleanly."""
        if not self.restore_state:
            return False
        marker = self.folder / RUNNING_NAME
        unclean = marker.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return unclean

    def end(self) -> None:
        """A live run ended cleanly."""
        if self.restore_state:
            (self.folder / RUNNING_NAME).unlink(missing_ok=True)

    def initial_state(self, program: Program) -> np.ndarray:
        """The state saved last (a live run), else the program's defaults."""
        path = self.folder / SNAPSHOT_NAME
        if self.restore_state:
            try:
                state = load_snapshot(path, program.layout)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("Ignoring state snapshot %s: %s", path, exc)
                state = None
            if state is not None:
                log.info("Restored state from %s", path)
                return state
        return program.new_state()

    def save_state(self, runtime) -> None:
        """Save what *runtime* plays and its state (a live run); never raises."""
        if not self.restore_state:
            return
        try:
            program, state = runtime.snapshot()
            save_snapshot(self.folder / SNAPSHOT_NAME, program.layout, state)
        except Exception as exc:
            log.warning("Could not save state snapshot: %s", exc)

    def keep_previous(self, compiled: dict) -> None:
        """*compiled* played until now: a quarantine goes back to it."""
        try:
            write_json_atomic(self.folder / PREVIOUS_NAME, on_disk(compiled))
        except OSError as exc:
            log.warning("Could not keep the previous program: %s", exc)

    def previous(self) -> dict | None:
        try:
            return read_compiled(self.folder / PREVIOUS_NAME)
        except CompiledConfigError:
            return None
