"""One-line live status and log set-up (plain or JSON lines for headless rigs)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_SHOWN = (("load", "load {:.1%}"), ("xruns", "xruns {}"), ("blocks", "blocks {}"), ("ticks", "ticks {}"),
          ("late_ticks", "late {}"), ("jitter_p99_us", "jitter p99 {:.0f} us"), ("notes_on", "notes {}"),
          ("swaps", "swaps {}"), ("renders", "renders {}"))


def status_line(status: dict[str, Any]) -> str:
    """Format :meth:`host.Host.status` as one short line."""
    stats = status.get("stats") or {}
    parts = [status.get("runtime") or "no runtime"]
    if status.get("recovery"):
        parts.append(status["recovery"])
    parts += [fmt.format(stats[key]) for key, fmt in _SHOWN if key in stats]
    error = status.get("last_error")
    parts.append(f"compile ERROR {error['text']}" if error else f"compile ok {status.get('program') or '-'}")
    return " | ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"time": record.created, "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def setup_logging(*, verbose: bool = False, json_format: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                                                               "%H:%M:%S"))
    root = logging.getLogger("livehost")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
