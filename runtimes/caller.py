"""Call a kernel entry from Python through ctypes: the logic and offline
runtimes' engine, sharing the compiled kernels with the live runtimes.
"""

from __future__ import annotations

import ctypes

import numpy as np

from compiler_bridge import abi
from compiler_bridge.program import Program

_ENTRY = ctypes.CFUNCTYPE(ctypes.c_int32, *(ctypes.c_void_p,) * 5)


class KernelCall:
    """One kernel of one program with its state, context and buffers.

    *channel* is the default MIDI channel 0-15; *frames* and *channels_out*
    size the audio buffers (0 for a MIDI kernel).
    """

    def __init__(self, program: Program, kernel: str, state: np.ndarray, *, sample_rate: float = 48000.0,
                 frames: int = 0, channels_in: int = 0, channels_out: int = 0, ppqn: int = 24,
                 channel: int = 0) -> None:
        self.kernel = kernel
        self.ctx = abi.new_context(sample_rate=sample_rate, block_frames=frames, channels_in=channels_in,
                                   channels_out=channels_out, ppqn=ppqn, channel=channel)
        self.events = abi.new_events(channel)
        self.inp = np.zeros((max(frames, 1), max(channels_in, 1)), np.float32)
        self.out = np.zeros((max(frames, 1), max(channels_out, 1)), np.float32)
        self.failed = False  # the kernel raised: it is not called again until a swap
        self.kernel_errors = 0
        self.swaps = 0
        self._bind(program, state)

    def _bind(self, program: Program, state: np.ndarray) -> None:
        self.program = program
        self.state = state
        self._fn = _ENTRY(program.kernels[self.kernel])

    def swap(self, program: Program) -> None:
        """Switch to *program*, carrying the state by the layout rules."""
        self._bind(program, program.layout.carry(self.program.layout, self.state))
        self.failed = False
        self.swaps += 1

    def tick(self, n: int, *, beat: float, tempo_bpm: float) -> list[tuple[int, int, int]]:
        """Run a MIDI kernel for tick *n* with the context the JACK path gives it:
        ``block_frames`` is the frames per tick, ``frame_time`` the tick's frame."""
        frames_per_tick = float(self.ctx["sample_rate"][0]) * 60.0 / (tempo_bpm * int(self.ctx["ppqn"][0]))
        return self(tick=n, beat=beat, tempo_bpm=tempo_bpm, frames=round(frames_per_tick),
                    frame_time=round(n * frames_per_tick))

    def __call__(self, *, tick: int = 0, frame_time: int = 0, beat: float = 0.0, tempo_bpm: float = 120.0,
                 frames: int | None = None) -> list[tuple[int, int, int]]:
        """Run the kernel once; return the raw events it emitted (none once it raised)."""
        if self.failed:
            self.out[:] = 0.0
            return []
        ctx = self.ctx
        ctx["tick"], ctx["frame_time"], ctx["beat"], ctx["tempo_bpm"] = tick, frame_time, beat, tempo_bpm
        if frames is not None:
            ctx["block_frames"] = frames
        self.events[0, abi.EVENT_HEADER_COUNT] = 0
        ok = self._fn(self.state.ctypes.data, ctx.ctypes.data, self.inp.ctypes.data, self.out.ctypes.data,
                      self.events.ctypes.data)
        if not ok:
            self.failed = True
            self.kernel_errors += 1
            return []
        n = int(self.events[0, abi.EVENT_HEADER_COUNT])
        return [(int(a), int(b), int(c)) for a, b, c in self.events[1 : n + 1]]
