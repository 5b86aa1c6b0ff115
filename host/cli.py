"""The ``livehost`` command: new, compile, render, run, devices.

livehost's errors (:class:`HostError`) and the OS's print one clear line
(``file:line: message``), never a traceback, unless ``--verbose``; anything
else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from compiler_bridge.config import CONFIG_NAME, PATCH_NAME
from compiler_bridge.errors import HostError, SourceError

# The real-time engines, built into numba's cache by the compile worker, so
# the first start does not wait for them.
ENGINE_MODULES = ("runtimes.audio.engine", "runtimes.ticks.engine")

log = logging.getLogger("livehost.host")

# Quiet time after a save before it is compiled: an editor's write-in-place
# (truncate, then write) lands as one save; a rename is one event anyway.
SOURCE_DEBOUNCE_S = 0.02
SLOW_COMPILE_S = 2.0  # a compile still running after this is said to be
STATUS_EVERY_S = 10.0  # a status log line this often when there is no terminal to show it in

SCAFFOLD_CONFIG = """\
name = "{name}"
tempo_bpm = 120.0
# Which [[runtime_settings]] entry plays: 0 = audio, 1 = midi, 2 = offline.
selected_runtime = 0

[[runtime_settings]]
runtime = "audio"
crossfade_ms = 10.0

[[runtime_settings]]
runtime = "midi"
channel = 1

[[runtime_settings]]
runtime = "offline"
seconds = 8.0
"""

SCAFFOLD_PATCH = '''\
"""{name}: edit, save, hear it. State keeps its values across saves."""

import math

from compiler_bridge.api import array, note_off, note_on


class State:
    freq_hz = 220.0          # change the default and save: the running value follows
    gain = 0.2
    phase = 0.0
    notes = array([57, 60, 64, 67])
    step = 0


def audio(s, ctx, inp, out):
    """Once per block: out is (frames, channels) float32."""
    step = 2.0 * math.pi * s.freq_hz / ctx.sample_rate
    for i in range(out.shape[0]):
        v = s.gain * math.sin(s.phase)
        for c in range(out.shape[1]):
            out[i, c] = v
        s.phase = (s.phase + step) % (2.0 * math.pi)


def midi(s, ctx, ev):
    """Once per tick (ctx.ppqn per quarter note): emit notes with the helpers."""
    t = ctx.tick % (ctx.ppqn // 2)
    if t == 0:
        note_on(ev, s.notes[s.step], 100)
    elif t == ctx.ppqn // 4:
        note_off(ev, s.notes[s.step])
        s.step = (s.step + 1) % 4
'''


class CliError(HostError):
    """A problem to print as one line with exit status 1."""


# --- commands ------------------------------------------------------------------


def cmd_new(args) -> int:
    path = Path(args.path)
    if (path / CONFIG_NAME).exists() or (path / PATCH_NAME).exists():
        raise CliError(f"{path}: already a project (has {CONFIG_NAME} or {PATCH_NAME})")
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(SCAFFOLD_CONFIG.format(name=path.resolve().name))
    (path / PATCH_NAME).write_text(SCAFFOLD_PATCH.format(name=path.resolve().name))
    (path / ".gitignore").write_text(".livehost/\n")
    print(f"created {path}: livehost run {path}")
    return 0


def _compile_once(project: Path) -> dict:
    from compiler_bridge.compile import compile_project

    compiled = compile_project(project)
    for warning in compiled["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return compiled


def cmd_compile(args) -> int:
    project = _project(args.project)
    if not args.watch:
        return _report(lambda: _compile_once(project))
    from compiler_bridge.watch import DebouncedWatcher

    # Watch before the first compile, so that a save in between is not missed.
    with DebouncedWatcher(project, (CONFIG_NAME, PATCH_NAME), lambda _: _report(lambda: _compile_once(project))):
        _report(lambda: _compile_once(project))
        _wait_for_stop(None)
    return 0


def _report(compile_fn) -> int:
    t0 = time.perf_counter()
    try:
        compiled = compile_fn()
    except SourceError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"compiled {compiled['source_hash']} ({', '.join(compiled['kernels'])}) in {time.perf_counter() - t0:.2f} s")
    return 0


def cmd_inspect(args) -> int:
    from .inspect import inspect, show

    info = inspect(_project(args.project), args.osc_port)
    print(json.dumps(info, indent=1) if args.json else show(info))
    return 0


def cmd_render(args) -> int:
    from compiler_bridge.program import Program
    from runtimes.offline import render

    project = _project(args.project)
    compiled = _compile_once(project)
    settings = next((e for e in compiled["config"]["runtime_settings"] if e.get("runtime") == "offline"), {})
    seconds = args.seconds if args.seconds is not None else settings.get("seconds", 10.0)
    out = render(Program.from_compiled(compiled), Path(args.output), seconds, settings)
    print(f"rendered {seconds:g} s to {out}")
    if args.plot:
        from .plot import plot_render

        print(f"plotted to {plot_render(Path(out), Path(args.plot))}")
    return 0


def _use_jack_server(args, project: Path) -> None:
    """``--jack-server``, else ``jack_server`` in livehost.toml, names the JACK server both runtimes
    join (and wait for): libjack reads JACK_DEFAULT_SERVER, so it is set before any client opens
    (and passed on to a supervised child)."""
    name = args.jack_server if args.jack_server is not None else _config_value(project, "jack_server", None)
    if name:
        os.environ["JACK_DEFAULT_SERVER"] = name
        log.info("JACK server: %s", name)


def _config_value(project: Path, key: str, default):
    """A top-level setting of livehost.toml read as livehost run starts; *default* when the
    file cannot be read (the compile says what is wrong with it)."""
    from compiler_bridge.config import load_config
    from compiler_bridge.errors import ConfigError

    try:
        return getattr(load_config(project), key)
    except ConfigError:
        return default


def cmd_run(args) -> int:
    if args.supervised is None:
        _use_jack_server(args, _project(args.project))
    if args.headless and args.supervised is None:
        from .supervisor import supervise

        return supervise(_child_args(args), args.duration)
    from compiler_bridge.watch import DebouncedWatcher
    from compiler_bridge.worker import CompileWorker

    from .host import Host
    from .memory import lock_memory
    from .status import status_line

    project = _project(args.project)
    lock_memory(_config_value(project, "lock_memory", True))
    sys.unraisablehook = _kernel_raised_hook(sys.unraisablehook)
    stop = threading.Event()  # SIGTERM from here on ends the run cleanly, also during start-up
    old_handler = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.supervised is not None:  # Ctrl-C reaches the whole process group: the supervisor passes it on
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    beats = _Beats(args.supervised)
    worker = CompileWorker(warm=ENGINE_MODULES)  # starts with the first compile
    playing = []  # the host, once it runs
    latest = []  # the last good compile's result

    def recompile(_changed=None) -> None:
        slow = threading.Timer(SLOW_COMPILE_S, lambda: log.info("Still compiling (over %g s)...", SLOW_COMPILE_S))
        slow.daemon = True
        slow.start()
        try:
            result = worker.compile(project)
        finally:
            slow.cancel()
        if result.ok:  # a failure is logged by the host, which reads .livehost/error.json
            latest[:] = [result]
            if playing:
                playing[0].note_compile(result.compiled, result.seconds)
                playing[0].request(result.compiled)  # at once, not through the watched file
            log.info("Compiled %s in %.2f s%s", result.compiled["source_hash"], result.seconds,
                     " (defaults, numbers or settings only: its build served)" if result.compiled["reused_build"] else "")
            for warning in result.compiled["warnings"]:
                log.warning("%s", warning)

    first = threading.Thread(target=recompile, name="livehost-first-compile")
    try:
        # Watch before the first compile, so that a save during start-up is not missed; the host
        # plays the last good build, if any, at once (a restart resumes quickly) while it runs.
        with DebouncedWatcher(project, (CONFIG_NAME, PATCH_NAME), recompile, name="livehost-sources",
                              debounce_s=SOURCE_DEBOUNCE_S):
            first.start()
            # in a thread of its own: SIGTERM and Ctrl-C stay as quick while numba builds the engines
            threading.Thread(target=_prepare_engines, args=(stop,), name="livehost-engines", daemon=True).start()
            if not (project / ".livehost" / "compiled.json").exists():
                while first.is_alive() and not stop.wait(0.05):  # nothing to play before it
                    pass
            with Host(project, runtime=args.runtime, restore_state=True,
                      quarantine=tuple(args.quarantine)) as host:
                beats.host = host
                playing.append(host)
                if latest:  # compiled before the host ran
                    host.note_compile(latest[0].compiled, latest[0].seconds)
                shown = _Status(host, rich=not args.headless and sys.stderr.isatty(), every_s=args.status_every)
                with _osc(args, project, host):
                    _wait_for_stop(_time_left(args), tick=shown, stop=stop)
                shown.close()
                beats.host = None
                playing.clear()
                final = host.status()
    finally:
        worker.close()
        if first.is_alive():
            first.join()
        beats.stop()
        signal.signal(signal.SIGTERM, old_handler)
    log.info("Stopped: %s", status_line(final))
    return 0


def _kernel_raised_hook(default):
    """What a kernel raised while playing, as one log line, not a traceback.

    numba reports an exception raised in a C callback (an index out of range in
    a kernel, or a raise) through ``sys.unraisablehook``, from the audio or
    MIDI thread. The engine mutes that program until the next save, and the
    host logs its kernel error count; this says what was raised, once per kind.
    """
    seen: set[str] = set()

    def hook(unraisable) -> None:
        if "numba" not in repr(unraisable.object) or unraisable.exc_value is None:
            return default(unraisable)
        what = f"{type(unraisable.exc_value).__name__}: {unraisable.exc_value}"
        if what not in seen and len(seen) < 32:
            seen.add(what)
            log.warning("A kernel raised %s while playing: that program is silent until the next save", what)

    return hook


def _osc(args, project: Path, host):
    """The OSC server ``--osc-port`` or ``osc_port`` asks for, as a context; a port that
    cannot be bound is logged and the music plays on without it."""
    from compiler_bridge.config import load_config
    from compiler_bridge.errors import ConfigError

    port, bind = args.osc_port, args.osc_host
    if port is None or bind is None:
        try:
            config = load_config(project)
        except ConfigError:  # the compile says what is wrong with it
            config = None
        if config is not None:
            port = config.osc_port if port is None else port
            bind = bind or config.osc_host
    if port is None:
        return contextlib.nullcontext()
    from .osc import OscServer

    bind = bind or "127.0.0.1"
    try:
        return OscServer(host, port, bind)
    except OSError as exc:
        log.error("OSC control is off: cannot listen on udp://%s:%s: %s", bind, port, exc)
        return contextlib.nullcontext()


def _prepare_engines(stop: threading.Event) -> None:
    """Import the real-time engines (numba loads them from its cache, or builds
    them once, about 15 s on a first start), saying so when it takes a while."""
    import importlib

    t0 = time.monotonic()
    told = threading.Timer(1.0, lambda: log.info("Preparing the real-time engines (numba builds them once, on a "
                                                 "first start; later starts load them in well under a second)..."))
    told.daemon = True
    told.start()
    try:
        for module in ENGINE_MODULES:
            if stop.is_set():
                return
            importlib.import_module(module)
    finally:
        told.cancel()
    if time.monotonic() - t0 > 1.0:
        log.info("Engines ready in %.1f s", time.monotonic() - t0)


def _columns(stream) -> int:
    """The terminal's width where *stream* goes (it may be another than stdout's)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size().columns


class _Status:
    """Twice a second: the status line in place on a terminal (*rich*); otherwise a
    log line every *every_s* (with its figures as a ``status`` object in JSON logs)."""

    def __init__(self, host, rich: bool, every_s: float = STATUS_EVERY_S) -> None:
        self.host, self.rich, self.every_s = host, rich, every_s
        self.shown = False
        self.next_log = time.monotonic() + every_s

    def __call__(self) -> None:
        from .status import draw_status, log_stream, status_line

        if self.rich:
            width = _columns(log_stream()) - 1  # (a line that fills the last column wraps on some terminals)
            draw_status(status_line(self.host.status(), rich=True, width=width))
            self.shown = True
        elif time.monotonic() >= self.next_log:
            self.next_log = max(self.next_log + self.every_s, time.monotonic())
            status = self.host.status()
            log.info("Status: %s", status_line(status), extra={"status": status})

    def close(self) -> None:
        from .status import draw_status

        if self.shown:
            draw_status(None)


def _child_args(args) -> list[str]:
    """The command line of the supervised ``livehost run`` child."""
    child = ["--log-format", args.log_format, *(["--verbose"] if args.verbose else []), "run", args.project,
             "--headless"]
    if args.runtime:
        child += ["--runtime", args.runtime]
    child += ["--status-every", str(args.status_every)]
    if args.osc_port is not None:
        child += ["--osc-port", str(args.osc_port)]
    if args.osc_host:
        child += ["--osc-host", args.osc_host]
    return child


class _Beats:
    """Under a supervisor: a heartbeat while the engine's calls keep returning (or it waits
    for its device), a word when one hangs, and a state snapshot every few seconds, each
    from a thread of its own (a snapshot never holds up a heartbeat)."""

    SNAPSHOT_EVERY_S = 3.0

    def __init__(self, fd: int | None) -> None:
        self.host = None
        self._stop = threading.Event()
        self._threads = []
        if fd is not None:
            from .supervisor import HANG_S, HEARTBEAT_S, Heartbeat

            self._heartbeat, self._period_s, self._hang_s = Heartbeat(fd), HEARTBEAT_S, HANG_S
            self._threads = [threading.Thread(target=self._run, name="livehost-heartbeat", daemon=True),
                             threading.Thread(target=self._snapshots, name="livehost-snapshots", daemon=True)]
            for thread in self._threads:
                thread.start()

    def _run(self) -> None:
        last, since = None, time.monotonic()
        while not self._stop.wait(self._period_s):
            host = self.host
            live = host.liveness() if host is not None else None
            playing = host.playing() if host is not None else None
            now = time.monotonic()
            if live is not None:
                returned, under_way, in_kernel = live
                if returned != last:
                    last, since = returned, now
                elif under_way and now - since >= self._hang_s:
                    self._heartbeat.hung(playing, in_kernel)  # the supervisor ends this process
                    return
            self._heartbeat.beat(playing)

    def _snapshots(self) -> None:
        while not self._stop.wait(self.SNAPSHOT_EVERY_S):
            host = self.host
            if host is not None and host.liveness() is not None:
                host.save_state()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        if self._threads:
            self._heartbeat.close()


def cmd_devices(args) -> int:
    import sounddevice as sd

    print("Audio devices:")
    print(sd.query_devices())
    import rtmidi

    for api in rtmidi.get_compiled_api():
        name = rtmidi.get_api_display_name(api)
        try:
            out, inp = rtmidi.MidiOut(api), rtmidi.MidiIn(api)
        except rtmidi.SystemError as exc:
            print(f"MIDI ({name}): unavailable: {exc}")
            continue
        print(f"MIDI ({name}) outputs: {out.get_ports() or 'none'}; inputs: {inp.get_ports() or 'none'}")
        out.delete()
        inp.delete()
    return 0


# --- helpers -------------------------------------------------------------------


def _project(path: str) -> Path:
    project = Path(path)
    if not (project / CONFIG_NAME).is_file():
        raise CliError(f"{project}: not a livehost project (no {CONFIG_NAME}; create one with: livehost new {path})")
    return project


def _time_left(args) -> float | None:
    """How long to play: ``--duration`` from now, or for a supervised child what is left of its
    supervisor's run, whose clock started before this process did (a start-up that took the
    time up leaves none: the child ends itself, saving its state, before it is stopped)."""
    if args.ends_at is not None:
        return max(0.0, args.ends_at - time.monotonic())
    return args.duration


def _wait_for_stop(duration_s: float | None, tick=None, stop: threading.Event | None = None) -> None:
    """Return after *duration_s*, Ctrl-C, SIGTERM or *stop*; call *tick* twice a second."""
    stop = stop or threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop.is_set():
            timeout = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if timeout <= 0:
                break
            stop.wait(timeout)
            if tick:
                tick()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livehost", description="Live-code audio and MIDI with numba kernels.")
    parser.add_argument("--verbose", action="store_true", help="debug logs and full tracebacks")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("new", help="create a working project")
    p.add_argument("path")
    p.set_defaults(fn=cmd_new)
    p = sub.add_parser("compile", help="compile and test-run a project")
    p.add_argument("project")
    p.add_argument("--watch", action="store_true", help="recompile on every save")
    p.set_defaults(fn=cmd_compile)
    p = sub.add_parser("inspect", help="what a project holds: kernels, state fields, runtime, build, last compile")
    p.add_argument("project")
    p.add_argument("--json", action="store_true", help="as one JSON object")
    p.add_argument("--osc-port", type=int, metavar="PORT",
                   help="ask a running host there for live values (default: osc_port in livehost.toml)")
    p.set_defaults(fn=cmd_inspect)
    p = sub.add_parser("render", help="render to a WAV (audio kernel) or MIDI file (midi kernel)")
    p.add_argument("project")
    p.add_argument("-o", "--output", required=True, help="OUT.wav or OUT.mid")
    p.add_argument("--seconds", type=float, help="length in seconds (default: the offline entry's)")
    p.add_argument("--plot", metavar="OUT.png", help="also draw it: waveform and spectrogram, or a piano roll "
                                                     "(the plot extra: matplotlib)")
    p.set_defaults(fn=cmd_render)
    p = sub.add_parser("run", help="play a project live; recompile on save")
    p.add_argument("project")
    p.add_argument("--runtime", help="runtime id to use instead of selected_runtime")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--headless", action="store_true",
                   help="no status line, log lines only; runs under a supervisor that restarts a crashed or hung host")
    p.add_argument("--status-every", type=float, default=STATUS_EVERY_S, metavar="SECONDS",
                   help=f"without a terminal: log a status line this often (default {STATUS_EVERY_S:g})")
    p.add_argument("--osc-port", type=int, metavar="PORT",
                   help="listen for OSC control on this UDP port; 0: any free one, "
                        "logged (default: osc_port in livehost.toml; none)")
    p.add_argument("--osc-host", metavar="ADDRESS",
                   help="address OSC binds to (default: osc_host in livehost.toml, else 127.0.0.1)")
    p.add_argument("--jack-server", metavar="NAME",
                   help="the JACK server to join and wait for (default: jack_server in livehost.toml, "
                        "else JACK_DEFAULT_SERVER, else the default server)")
    p.add_argument("--supervised", type=int, help=argparse.SUPPRESS)  # the supervisor's heartbeat pipe
    p.add_argument("--ends-at", type=float, help=argparse.SUPPRESS)  # the supervisor's end (CLOCK_MONOTONIC s)
    p.add_argument("--quarantine", action="append", default=[], help=argparse.SUPPRESS)  # source hashes not to play
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("devices", help="list audio devices and MIDI ports")
    p.set_defaults(fn=cmd_devices)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .status import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose, json_format=args.log_format == "json")
    try:
        return args.fn(args)
    except (HostError, OSError) as exc:  # anything else is a bug: its traceback helps
        if args.verbose:
            raise
        print(f"livehost: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
