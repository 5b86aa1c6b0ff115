"""``livehost inspect``: what a project holds, without reading ``.livehost/compiled.json`` by hand.

Its kernels, state fields (type, default, and the live value when a running
host answers over OSC), the selected runtime and its merged settings, the
build, the last compile's kind and time, and the files it came from. A
project never compiled is compiled first.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from compiler_bridge.compile import COMPILED_NAME, ERROR_NAME, compile_project, livehost_dir
from compiler_bridge.program import read_compiled

STATE_ADDRESS = "/livehost/state"
ASK_S = 0.5  # how long a running host has to answer


def inspect(project: Path, osc_port: int | None = None, osc_host: str = "127.0.0.1") -> dict[str, Any]:
    """What :func:`show` prints, as a JSON-ready dict."""
    project = project.resolve()
    folder = livehost_dir(project)
    if not (folder / COMPILED_NAME).exists():
        compile_project(project)
    compiled = read_compiled(folder / COMPILED_NAME)
    config = compiled["config"]
    index = config["selected_runtime"]
    entries = config["runtime_settings"]
    port = osc_port if osc_port is not None else config.get("osc_port")
    live = ask_state(port, osc_host) if port else None
    error = None
    if (folder / ERROR_NAME).exists():  # the last save did not compile: this is what plays
        error = json.loads((folder / ERROR_NAME).read_text()).get("text")
    return {
        "project": str(project),
        "files": {"config": str(project / "livehost.toml"), "patch": str(project / "patch.py"),
                  "compiled": str(folder / COMPILED_NAME), "build": str(folder / compiled["build_dir"])},
        "kernels": compiled["kernels"],
        "state": [{"name": f["name"], "type": f["dtype"], "shape": f["shape"], "default": f["default"],
                   **({"range": f["range"]} if f.get("range") else {}),
                   **({"live": live["fields"].get(f["name"])} if live else {})}
                  for f in compiled["state"] if not f["name"].startswith("_")],
        "runtime": {"selected": index, "id": entries[index]["runtime"] if 0 <= index < len(entries) else None,
                    "settings": entries[index] if 0 <= index < len(entries) else {}},
        "tempo_bpm": config["tempo_bpm"],
        "program": compiled["source_hash"], "build": compiled["build"],
        "last_compile": {"kind": "defaults/settings" if compiled.get("reused_build") else "built",
                         "seconds": compiled.get("compile_seconds"), "at": compiled.get("compiled_at"),
                         "error": error},
        "live": {"port": port, "program": live["program"]} if live else None,
    }


def ask_state(port: int, host: str = "127.0.0.1") -> dict | None:
    """The playing program and its state's values from a host on *port* (OSC), or None when none answers."""
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(ASK_S)
        sock.sendto(OscMessageBuilder(STATE_ADDRESS).build().dgram, (host, port))
        deadline = time.monotonic() + ASK_S
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except (TimeoutError, OSError):
                return None
            try:
                message = OscMessage(data)
            except Exception:  # not a reply of ours
                continue
            if message.address == STATE_ADDRESS and message.params:
                return json.loads(message.params[0])
    return None


def show(info: dict[str, Any]) -> str:
    """*info* as lines for a person."""
    lines = [f"project   {info['project']}",
             f"program   {info['program']} (build {info['build']}), kernels: {', '.join(info['kernels'])}"]
    last = info["last_compile"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["at"])) if last["at"] else "?"
    lines.append(f"compiled  {when}, {last['kind']}" + (f", {last['seconds']:.2f} s" if last["seconds"] else ""))
    if last["error"]:
        lines.append(f"last save did not compile: {last['error']}")
    runtime = info["runtime"]
    settings = ", ".join(f"{k} = {v!r}" for k, v in runtime["settings"].items() if k != "runtime")
    lines.append(f"runtime   [{runtime['selected']}] {runtime['id']}: {settings}")
    lines.append(f"tempo     {info['tempo_bpm']:g} BPM")
    live = info["live"]
    lines.append("state" + (f" (live, from the host on port {live['port']}: {live['program']})" if live else ""))
    for f in info["state"]:
        shape = f"[{', '.join(map(str, f['shape']))}]" if f["shape"] else ""
        ranged = f"   {f['range'][0]:g} to {f['range'][1]:g} ({f['range'][2]})" if "range" in f else ""
        value = f"   now {f['live']!r}" if "live" in f else ""
        lines.append(f"  {f['name']:<16} {f['type']}{shape:<6} default {f['default']!r}{ranged}{value}")
    lines += [f"{name:<9} {path}" for name, path in info["files"].items()]
    return "\n".join(lines)
