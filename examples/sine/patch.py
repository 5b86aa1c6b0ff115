"""A sine at freq_hz. Edit 440.0, save, hear it change."""

import math


class State:
    freq_hz = 440.0
    gain = 0.2
    phase = 0.0


def audio(s, ctx, inp, out):
    step = 2.0 * math.pi * s.freq_hz / ctx.sample_rate
    for i in range(out.shape[0]):
        v = s.gain * math.sin(s.phase)
        for c in range(out.shape[1]):
            out[i, c] = v
        s.phase += step
        if s.phase >= 2.0 * math.pi:
            s.phase -= 2.0 * math.pi
