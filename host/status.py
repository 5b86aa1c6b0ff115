"""One-line live status and log set-up (plain or JSON lines for headless rigs)."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from typing import Any

_SHOWN = (("load", "load {:.1%}"), ("xruns", "xruns {}"), ("blocks", "blocks {}"), ("ticks", "ticks {}"),
          ("late_ticks", "late {}"), ("jitter_p99_us", "jitter p99 {:.0f} us"), ("notes_on", "notes {}"),
          ("nan_blocks", "nan {}"), ("clipped_samples", "clipped {}"), ("swaps", "swaps {}"),
          ("renders", "renders {}"), ("in_overflow", "in over {}"), ("in_bad", "in bad {}"))
_BAR = " ▁▂▃▄▅▆▇█"
_RED, _YELLOW, _GREEN, _DIM, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[32m", "\x1b[2m", "\x1b[0m"


# What stays as the line narrows: the highest first (the compile's result or error, the runtime and
# what it waits for, the meters, tempo and bar:beat); counters go first.
_KEEP_COMPILE, _KEEP_RUNTIME, _KEEP_METERS, _KEEP_POSITION, _KEEP_CLOCK, _KEEP_COUNTER = 6, 5, 4, 3, 2, 1
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def status_line(status: dict[str, Any], rich: bool = False, width: int | None = None) -> str:
    """Format :meth:`host.Host.status` as one line: plain, or with colours and meter bars (*rich*).

    With *width* (columns), parts are left out by priority until the line fits,
    counters first, and what is still too long is cut with an ellipsis: a line
    that wraps cannot be redrawn in place.
    """
    stats = status.get("stats") or {}
    parts = [(_KEEP_RUNTIME, status.get("runtime") or "no runtime")]
    if status.get("recovery"):  # what it waits for first: it matters most
        parts.append((_KEEP_RUNTIME, _paint(status["recovery"], _YELLOW, rich)))
    if status.get("tempo_bpm") is not None:
        parts.append((_KEEP_POSITION, f"{status['tempo_bpm']:g} BPM {status.get('position', '')}".rstrip()))
    if status.get("link_peers") is not None:
        peers = status["link_peers"]
        parts.append((_KEEP_CLOCK, f"link {peers} peer{'s' if peers != 1 else ''}"))
    clock_in = stats.get("clock_in")
    if clock_in:
        text = "clock in " + ("LOST (tempo held)" if clock_in["lost"] else "playing" if clock_in["playing"] else
                              "stopped")
        parts.append((_KEEP_CLOCK, _paint(text, _YELLOW, rich) if clock_in["lost"] else text))
    if "peak_dbfs" in stats:
        parts.append((_KEEP_METERS, _meters(stats["peak_dbfs"], stats["rms_dbfs"], rich)))
    for key, fmt in _SHOWN:
        if key in stats:
            text = fmt.format(stats[key])
            bad = key in ("xruns", "late_ticks", "nan_blocks", "clipped_samples", "in_overflow", "in_bad") and stats[key]
            parts.append((_KEEP_COUNTER, _paint(text, _YELLOW, rich) if bad else text))
    parts.append((_KEEP_COMPILE, _compile_part(status, rich)))
    return _fit([text for _, text in parts], [keep for keep, _ in parts], width)


def visible_width(text: str) -> int:
    """Columns *text* takes on a terminal (colour codes take none)."""
    return len(_ANSI.sub("", text))


def _fit(texts: list[str], keeps: list[int], width: int | None) -> str:
    """Join *texts*; without room for all, leave out one at a time, the least kept first (the
    rightmost of those), then cut what is left."""
    texts, keeps = list(texts), list(keeps)
    line = " | ".join(texts)
    while width is not None and visible_width(line) > width and len(texts) > 1:
        least = min(keeps)
        drop = max(i for i, k in enumerate(keeps) if k == least)
        del texts[drop], keeps[drop]
        line = " | ".join(texts)
    return line if width is None else _cut(line, width)


def _cut(line: str, width: int) -> str:
    """*line* cut to *width* columns, ending in an ellipsis (colour codes kept, then reset)."""
    if visible_width(line) <= width:
        return line
    out, shown = [], 0
    for piece in re.split(r"(\x1b\[[0-9;]*m)", line):
        if _ANSI.fullmatch(piece):
            out.append(piece)
            continue
        room = width - 1 - shown
        out.append(piece[:max(room, 0)])
        shown += min(len(piece), max(room, 0))
    return "".join(out) + "…" + (_RESET if "\x1b[" in line else "")


def _meters(peaks: list[float], rms: list[float], rich: bool) -> str:
    """Per channel: peak/RMS dBFS; *rich* adds a bar (-60 to 0 dBFS) coloured by the peak."""
    out = []
    for c, (p, r) in enumerate(zip(peaks, rms), 1):
        text = f"{c}:{p:.0f}/{r:.0f}"
        if rich:
            level = min(max((r + 60.0) / 60.0, 0.0), 1.0)
            colour = _RED if p >= -0.1 else _YELLOW if p > -6.0 else _GREEN
            text = f"{colour}{_BAR[round(level * (len(_BAR) - 1))]}{_RESET}{text}"
        out.append(text)
    return "dBFS " + " ".join(out)


def _compile_part(status: dict[str, Any], rich: bool) -> str:
    error = status.get("last_error")
    if error:
        return _paint(f"compile ERROR {error['text']}", _RED, rich)
    compiled = status.get("last_compile")
    if compiled:
        how = "defaults/settings" if compiled["reused_build"] else "built"
        return f"compile ok {compiled['seconds']:.2f} s ({how}) {status.get('program') or '-'}"
    return f"compile ok {status.get('program') or '-'}"


def _paint(text: str, colour: str, rich: bool) -> str:
    return f"{colour}{text}{_RESET}" if rich else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"time": record.created, "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        if isinstance(getattr(record, "status", None), dict):  # a status line: its figures as they are
            data["status"] = record.status
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


_SCREEN_LOCK = threading.Lock()  # the status line and log lines take turns on the terminal
_ON_SCREEN: list[str] = []  # the status line on the terminal now, if any


def draw_status(line: str | None) -> None:
    """Draw *line* in place of the status line on the terminal; None ends it (a new line)."""
    stream = log_stream()
    with _SCREEN_LOCK:
        if line is None:
            if _ON_SCREEN:
                stream.write("\n")
            _ON_SCREEN.clear()
        else:
            stream.write("\x1b[2K\r" + line)
            _ON_SCREEN[:] = [line]
        stream.flush()


class _TerminalHandler(logging.StreamHandler):
    """Log lines on a terminal that shows a status line: the status line is erased, the log line
    written on its own line, and the status line drawn again below it."""

    def emit(self, record: logging.LogRecord) -> None:
        with _SCREEN_LOCK:
            if _ON_SCREEN:
                self.stream.write("\x1b[2K\r")
            super().emit(record)
            if _ON_SCREEN:
                self.stream.write(_ON_SCREEN[0])
                self.flush()


def setup_logging(*, verbose: bool = False, json_format: bool = False) -> None:
    handler = _TerminalHandler(log_stream())
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                                                               "%H:%M:%S"))
    root = logging.getLogger("livehost")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


_STDERR: list = []  # the stream log_stream() opened, once


def log_stream():
    """Where log lines and the status line go: stderr as it was when this was first called.

    A stream of its own (a duplicate of file descriptor 2), because PortAudio's
    initialisation -- at sounddevice's import, and whenever the audio runtime
    looks for new devices -- points descriptor 2 at /dev/null while it runs, to
    hide what ALSA and JACK print; a line another thread logged meanwhile (the
    OSC server's port, a fault) would be lost. Plain ``sys.stderr`` when it has
    no descriptor (captured).
    """
    if not _STDERR:
        try:
            fd = os.dup(sys.stderr.fileno())
        except (AttributeError, OSError, ValueError):
            return sys.stderr
        _STDERR.append(open(fd, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                            errors="backslashreplace"))
    return _STDERR[0]
