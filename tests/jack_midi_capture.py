"""A JACK MIDI client that records every event with its absolute frame time.

Run as a separate process (``python jack_midi_capture.py NAME [sink-clock]``) so that its
Python process callback never waits on the test's GIL. It has a MIDI input
``NAME:in`` (recorded) and output ``NAME:out`` (sends what it is told to).
Commands on stdin, one per line:

* ``send HEX...`` -- write these bytes at the start of the next cycle.
* ``connect SRC DST`` -- connect two ports.
* ``schedule JSON`` -- a list of ``[frame, [bytes...]]``: sent from ``NAME:out`` at
  those frames after a base a few cycles ahead; answers ``ok BASE``. Bytes the
  callback could only write after their frame (it missed a cycle) count as late.
* ``clock`` -- answers ``ok FRAME TIME``: JACK's frame time and ``time.time()``
  read together, to place recorded frames on the wall clock.
* ``raw`` -- answers ``ok FRAME USECS``: JACK's frame time and CLOCK_MONOTONIC_RAW
  (Link's clock on Linux) in microseconds, read together here: no server's clock
  between them (jackd's is RAW, PipeWire's CLOCK_MONOTONIC).
* ``stop`` -- leave the graph, print the recording as one JSON line and the
  xruns the server reported while it listened (with JACK's frame time when
  each notice arrived) as another, exit.

:class:`Capture` drives it from a test.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path


def _serve(name: str, sink_clock: bool) -> None:
    import jack

    client = jack.Client(name, no_start_server=True)
    inport = client.midi_inports.register("in")
    outport = client.midi_outports.register("out")
    recorded: list[tuple[int, list[int]]] = []
    xruns: list[int] = []  # JACK's frame time when each of the server's xrun notices arrived
    to_send: queue.SimpleQueue = queue.SimpleQueue()
    plan = {"events": [], "next": 0, "base": None, "late": 0, "full": 0}
    # On PipeWire a client with MIDI ports only is driven apart from the sink's driver, on a frame
    # clock of its own: with *sink_clock*, a silent audio output into the sink puts it on the sink's,
    # so that its frames and an audio capture's can be compared (on jackd there is one frame clock).
    on_pipewire = "pipewire" in os.environ.get("LD_LIBRARY_PATH", "")
    sync = client.outports.register("sync") if sink_clock and on_pipewire else None

    @client.set_xrun_callback
    def xrun(delay_us: float) -> None:
        xruns.append(client.frame_time)

    @client.set_process_callback
    def process(frames: int) -> None:
        start = client.last_frame_time
        for offset, data in inport.incoming_midi_events():
            recorded.append((start + offset, list(bytes(data))))
        outport.clear_buffer()
        if sync is not None:
            sync.get_array().fill(0.0)
        while not to_send.empty():
            outport.write_midi_event(0, to_send.get())
        events = plan["events"]
        if events and plan["base"] is None:
            plan["base"] = start + 4 * frames
        while plan["next"] < len(events) and plan["base"] + events[plan["next"]][0] < start + frames:
            offset = plan["base"] + events[plan["next"]][0] - start
            if offset < 0:
                plan["late"] += 1
            try:
                outport.write_midi_event(max(offset, 0), bytes(events[plan["next"]][1]))
            except jack.JackError:  # the port's buffer is full (a burst): counted, not sent
                plan["full"] += 1
            plan["next"] += 1

    import ctypes

    libjack = ctypes.CDLL("libjack.so.0")
    libjack.jack_frames_to_time.restype = ctypes.c_uint64
    libjack.jack_frames_to_time.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    handle = int(jack._ffi.cast("uintptr_t", client._ptr))

    def frames_to_time(frame: int) -> int:
        return libjack.jack_frames_to_time(handle, frame & 0xFFFFFFFF)

    with client:
        if sync is not None:
            client.connect(sync, client.get_ports(is_physical=True, is_input=True, is_audio=True)[0])
        print("ready", inport.name, outport.name, flush=True)
        for line in sys.stdin:
            cmd, *args = line.split()
            if cmd == "send":
                to_send.put(bytes(int(a, 16) for a in args))
            elif cmd == "connect":
                client.connect(*args)
            elif cmd == "schedule":
                plan["base"], plan["next"] = None, 0
                plan["events"] = json.loads(line.split(None, 1)[1])
                while plan["base"] is None:
                    time.sleep(0.001)
                print("ok", plan["base"], flush=True)
                continue
            elif cmd == "usecs":  # JACK's time of these frames (CLOCK_MONOTONIC_RAW on Linux, as Link's)
                print("ok", *(frames_to_time(int(a)) for a in args), flush=True)
                continue
            elif cmd == "clock":
                print("ok", client.frame_time, repr(time.time()), flush=True)
                continue
            elif cmd == "raw":  # a frame and CLOCK_MONOTONIC_RAW (Link's clock), read here, together
                before = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
                frame = client.frame_time
                after = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
                print("ok", frame, (before + after) // 2000, flush=True)
                continue
            elif cmd == "stop":
                break
            print("ok", flush=True)
        client.deactivate()
    print(json.dumps(recorded), flush=True)
    print(json.dumps({"xruns": xruns, "late": plan["late"], "full": plan["full"]}), flush=True)


class Capture:
    """A recording JACK MIDI client in a child process.

    Parameters
    ----------
    name : str
        JACK client name; its ports are ``NAME:in`` and ``NAME:out``.
    env : dict, optional
        The client's environment (``JACK_DEFAULT_SERVER`` for another server).
    sink_clock : bool
        On PipeWire, join the sink's driver (a silent audio output into it), so that the frames
        recorded here compare with an audio capture's (a MIDI-only client has a frame clock of its own).
    """

    def __init__(self, name: str = "capture", env: dict | None = None, sink_clock: bool = False) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), name,
                                      *(["sink-clock"] if sink_clock else [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        try:
            ready = self.proc.stdout.readline().split()
            if not ready or ready[0] != "ready":
                raise RuntimeError(f"capture client {name!r} did not start")
        except BaseException:  # Ctrl-C or SIGTERM while it starts must not leave it running
            self.proc.kill()
            self.proc.wait()
            raise
        self.inport, self.outport = ready[1], ready[2]
        self.events: list[tuple[int, list[int]]] | None = None
        self.xruns: int | None = None  # the server's xruns while it listened, known once stopped
        self.xrun_frames: list[int] | None = None  # the frame time at which each xrun's notice arrived
        self.late: int | None = None  # scheduled bytes written after their frame, known once stopped
        self.full: int | None = None  # scheduled messages the output buffer had no room for

    def _command(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def send(self, *data: int) -> None:
        """Send these MIDI bytes from ``NAME:out`` at the next cycle."""
        self._command("send " + " ".join(f"{b:02x}" for b in data))

    def connect(self, source: str, destination: str) -> None:
        self._command(f"connect {source} {destination}")

    def schedule(self, events: list[tuple[int, list[int]]]) -> int:
        """Send *events* (``(frame, bytes)``, frames in order) at ``BASE + frame``; return BASE."""
        self.proc.stdin.write("schedule " + json.dumps(events) + "\n")
        self.proc.stdin.flush()
        ok, base = self.proc.stdout.readline().split()
        assert ok == "ok"
        return int(base)

    def usecs(self, frames: list[int]) -> list[int]:
        """JACK's time, in microseconds, of each of these frames."""
        self.proc.stdin.write("usecs " + " ".join(str(f & 0xFFFFFFFF) for f in frames) + "\n")
        self.proc.stdin.flush()
        ok, *times = self.proc.stdout.readline().split()
        assert ok == "ok"
        return [int(t) for t in times]

    def raw_clock(self) -> tuple[int, int]:
        """``(JACK frame time, CLOCK_MONOTONIC_RAW in microseconds)`` read together in the capture process."""
        self.proc.stdin.write("raw\n")
        self.proc.stdin.flush()
        ok, frame, usecs = self.proc.stdout.readline().split()
        assert ok == "ok"
        return int(frame), int(usecs)

    def clock(self) -> tuple[int, float]:
        """``(JACK frame time, time.time())`` read together in the capture process."""
        self.proc.stdin.write("clock\n")
        self.proc.stdin.flush()
        ok, frame, wall = self.proc.stdout.readline().split()
        assert ok == "ok"
        return int(frame), float(wall)

    def stop(self) -> list[tuple[int, list[int]]]:
        """Leave the graph; return ``[(absolute frame, [bytes...]), ...]``."""
        if self.events is None:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.events = [(f, d) for f, d in json.loads(self.proc.stdout.readline())]
            report = json.loads(self.proc.stdout.readline())
            self.xrun_frames, self.late, self.full = report["xruns"], report["late"], report["full"]
            self.xruns = len(self.xrun_frames)
            self.proc.stdout.close()
            self.proc.wait(10)
        return self.events

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc) -> None:
        if self.events is None:
            try:
                self.stop()
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()


if __name__ == "__main__":
    _serve(sys.argv[1], sink_clock=sys.argv[2:] == ["sink-clock"])
