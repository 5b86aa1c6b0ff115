"""Tremolo (one cycle per beat) and a soft clip on input 1, to both outputs."""

import math


class State:
    depth = 0.5        # 0 = no tremolo, 1 = full
    drive = 2.0        # soft-clip drive


def audio(s, ctx, inp, out):
    beat_frames = ctx.sample_rate * 60.0 / ctx.tempo_bpm
    for i in range(out.shape[0]):
        phase = 2.0 * math.pi * (ctx.frame_time + i) / beat_frames
        gain = 1.0 - s.depth * (0.5 - 0.5 * math.cos(phase))
        x = inp[i, 0] if inp.shape[1] > 0 else 0.0
        v = gain * math.tanh(s.drive * x) / math.tanh(s.drive)
        for c in range(out.shape[1]):
            out[i, c] = v
