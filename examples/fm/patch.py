"""Two-operator FM: a modulator at ratio x the carrier, its depth swept once a bar."""

import math

TWO_PI = 2.0 * math.pi


class State:
    carrier_hz = 110.0
    ratio = 2.0
    index = 3.0        # peak modulation depth (radians)
    gain = 0.25
    carrier_phase = 0.0
    modulator_phase = 0.0


def audio(s, ctx, inp, out):
    bar_s = 4 * 60.0 / ctx.tempo_bpm
    for i in range(out.shape[0]):
        t = (ctx.frame_time + i) / ctx.sample_rate
        depth = s.index * (0.5 + 0.5 * math.cos(TWO_PI * t / bar_s))
        v = s.gain * math.sin(s.carrier_phase + depth * math.sin(s.modulator_phase))
        for c in range(out.shape[1]):
            out[i, c] = v
        s.carrier_phase = (s.carrier_phase + TWO_PI * s.carrier_hz / ctx.sample_rate) % TWO_PI
        s.modulator_phase = (s.modulator_phase + TWO_PI * s.carrier_hz * s.ratio / ctx.sample_rate) % TWO_PI
