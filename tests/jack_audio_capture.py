"""A JACK capture client for the audio tests, run as its own process.

Its process callback is Python: inside the test process it would wait for the
test's GIL (the very stall the tests provoke), so it lives here. It records
what other clients play, counts the JACK server's xruns and its own late
process cycles (wall clock from one cycle to the next over two periods), and
can play a test sine into other clients' inputs.

Protocol: one command per line on stdin, one JSON object per line on stdout.

* started as ``python jack_audio_capture.py --channels N [--sine-hz F]``;
  prints ``{"client", "sample_rate", "block_frames", "inputs", "output"}``
* ``connect SRC DST``     -> ``{"ok": true}``
* ``ports REGEX``         -> ``{"ports": [names]}``
* ``follow REGEX``        -> from now on, output ports whose whole name matches
  REGEX (its first group a number *N*) are connected to input *N* mod
  channels + 1 as soon as they are registered (a client that reopens its
  ports is heard again at once); ``{"ok": true}``
* ``start``               -> clears counters, starts recording; ``{"ok": true}``
* ``stop PATH``           -> stops, saves the samples (frames x N float32 .npy)
  to PATH; ``{"frames", "cycles", "xruns", "late_cycles", "max_gap_ms", "first_cycle_time",
  "first_cycle_frame", "xrun_at", "jumps"}`` (``jumps``: ``[take frame, JACK frame]`` where the
  take starts and wherever JACK's frame time did not go on from the cycle before, a cycle the
  capture missed; ``xrun_at``: the take's frame count when each xrun notice
  arrived or each late cycle began) (``time.time()`` when the first recorded cycle began:
  frame *k* of the take was played about *k* / rate seconds later; and that
  cycle's JACK frame time, the clock of the MIDI capture's frames)
* ``quit``                -> closes the client and exits
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import sys
import threading
import time

import jack
import numpy as np


class Capture:
    """Records *channels* inputs into a preallocated buffer of *seconds*."""

    def __init__(self, channels: int, seconds: float, sine_hz: float) -> None:
        self.client = jack.Client(f"lh-capture-{os.getpid()}", no_start_server=True)
        self.sample_rate = self.client.samplerate
        self.block_frames = self.client.blocksize
        self.inputs = [self.client.inports.register(f"in_{i + 1}") for i in range(channels)]
        self.output = self.client.outports.register("sine")
        self.buffer = np.zeros((int(seconds * self.sample_rate), channels), np.float32)
        self.sine_step = 2 * np.pi * sine_hz / self.sample_rate
        self.sine_frame = 0
        self.recording = False
        self.reset()
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.follow_pattern: str | None = None
        self._registered: queue.SimpleQueue = queue.SimpleQueue()
        self.client.set_port_registration_callback(self._port_registered, only_available=False)
        self.client.activate()
        threading.Thread(target=self._follow, daemon=True).start()

    def _port_registered(self, port, register: bool) -> None:
        if register and port is not None:
            self._registered.put(port.name)  # connected from another thread: not allowed in a notification

    def _follow(self) -> None:
        while True:
            name = self._registered.get()
            pattern = self.follow_pattern
            match = pattern is not None and re.fullmatch(pattern, name)
            if match:
                try:  # PortAudio numbers the ports of each new stream on from the last: modulo the inputs
                    self.client.connect(name, self.inputs[int(match.group(1)) % len(self.inputs)])
                except jack.JackError:  # gone again already
                    pass

    def reset(self) -> None:
        self.frames = self.cycles = self.xruns = self.late_cycles = 0
        self.xrun_at: list[int] = []
        self.max_gap_s = 0.0
        self.last_cycle_s = None
        self.first_cycle_time = self.first_cycle_frame = None
        self.jumps: list[list[int]] = []
        self.next_frame = None  # JACK's frame time the next cycle should have

    def _process(self, frames: int) -> None:
        now = time.monotonic()
        if self.recording and self.first_cycle_time is None:
            # the cycle's start on the wall clock: its frame time back to now
            self.first_cycle_time = time.time() - self.client.frames_since_cycle_start / self.sample_rate
            self.first_cycle_frame = self.client.last_frame_time
        n = frames
        self.output.get_array()[:] = 0.5 * np.sin(self.sine_step * (self.sine_frame + np.arange(n)))
        self.sine_frame += n
        if not self.recording:
            return
        if self.last_cycle_s is not None:
            gap = now - self.last_cycle_s
            self.max_gap_s = max(self.max_gap_s, gap)
            if gap > 2 * n / self.sample_rate:
                self.late_cycles += 1
                self.xrun_at.append(self.frames)
        self.last_cycle_s = now
        frame_time = self.client.last_frame_time
        if frame_time != self.next_frame:
            self.jumps.append([self.frames, frame_time])
        self.next_frame = (frame_time + n) & 0xFFFFFFFF
        self.cycles += 1
        room = min(n, self.buffer.shape[0] - self.frames)
        for c, port in enumerate(self.inputs):
            self.buffer[self.frames:self.frames + room, c] = port.get_array()[:room]
        self.frames += room

    def _xrun(self, delay_us: float) -> None:
        if self.recording:
            self.xruns += 1
            self.xrun_at.append(self.frames)

    def report(self) -> dict:
        return {"frames": self.frames, "cycles": self.cycles, "xruns": self.xruns,
                "late_cycles": self.late_cycles, "max_gap_ms": round(self.max_gap_s * 1e3, 3),
                "first_cycle_time": self.first_cycle_time, "first_cycle_frame": self.first_cycle_frame,
                "xrun_at": sorted(self.xrun_at), "jumps": self.jumps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sine-hz", type=float, default=1000.0)
    args = parser.parse_args()
    cap = Capture(args.channels, args.seconds, args.sine_hz)

    def say(obj: dict) -> None:
        print(json.dumps(obj), flush=True)

    say({"client": cap.client.name, "sample_rate": cap.sample_rate, "block_frames": cap.block_frames,
         "inputs": [p.name for p in cap.inputs], "output": cap.output.name})
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "connect":
            cap.client.connect(rest[0], rest[1])
            say({"ok": True})
        elif cmd == "follow":
            cap.follow_pattern = rest[0]
            for port in cap.client.get_ports(is_output=True):  # those already there
                cap._registered.put(port.name)
            say({"ok": True})
        elif cmd == "ports":
            say({"ports": [p.name for p in cap.client.get_ports(rest[0])]})
        elif cmd == "start":
            cap.recording = False
            cap.reset()
            cap.recording = True
            say({"ok": True})
        elif cmd == "stop":
            cap.recording = False
            np.save(rest[0], cap.buffer[:cap.frames])
            say(cap.report())
        elif cmd == "quit":
            break
    cap.client.deactivate()
    cap.client.close()


if __name__ == "__main__":
    main()
