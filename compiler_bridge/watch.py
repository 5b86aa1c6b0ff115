"""Debounced file watching: watchdog emitters only enqueue, one thread calls back.

Editors save in many ways (write in place, write a temp file and rename it
over, delete and recreate), so events match a watched name on both the
source and the destination path.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("livehost.compiler_bridge")


class DebouncedWatcher(FileSystemEventHandler):
    """Call ``callback(names_changed)`` once things settle for *debounce_s*, or at
    once when a save is complete: a file closed after writing, or renamed over a name.

    Watches the files *names* in *folder* (not recursive).
    """

    def __init__(self, folder: Path, names: Iterable[str], callback: Callable[[set[str]], None], *,
                 debounce_s: float = 0.05, name: str = "livehost-watch") -> None:
        self.folder = Path(folder)
        self.names = set(names)
        self.callback = callback
        self.debounce_s = debounce_s
        self._cond = threading.Condition()
        self._changed: set[str] = set()
        self._due = 0.0
        self._stopping = False
        self.folder.mkdir(parents=True, exist_ok=True)
        self._observer = Observer()
        self._observer.name = f"{name}-observer"
        self._observer.schedule(self, str(self.folder), recursive=False)
        self._thread = threading.Thread(target=self._dispatch, name=name, daemon=True)

    def start(self) -> "DebouncedWatcher":
        self._observer.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._observer.stop()
        self._observer.join()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "")]
        hits = {Path(p).name for p in paths if p and Path(p).name in self.names}
        if not hits or event.event_type in ("opened", "closed_no_write"):
            return
        complete = event.event_type in ("closed", "moved")  # the writer is done: no need to wait
        with self._cond:
            self._changed |= hits
            self._due = time.monotonic() + (0.0 if complete else self.debounce_s)
            self._cond.notify_all()

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._changed or time.monotonic() < self._due):
                    self._cond.wait(None if not self._changed else max(self._due - time.monotonic(), 0.0))
                if self._stopping:
                    return
                changed, self._changed = self._changed, set()
            try:
                self.callback(changed)
            except Exception:  # the one dispatch thread must survive: later saves still count
                log.exception("Handling a change of %s failed", ", ".join(sorted(changed)))
