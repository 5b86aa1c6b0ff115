"""One project, two outputs: a plucked arpeggio as audio, or the same notes as MIDI."""

import math

from compiler_bridge.api import array, note_off, note_on


class State:
    notes = array([57, 60, 64, 67])
    step = 0
    phase = 0.0
    env = 0.0
    frames_left = 0


def audio(s, ctx, inp, out):
    step_frames = int(ctx.sample_rate * 60.0 / ctx.tempo_bpm / 4)
    for i in range(out.shape[0]):
        if s.frames_left <= 0:
            s.frames_left = step_frames
            s.step = (s.step + 1) % 4
            s.env = 0.3
        freq = 440.0 * 2.0 ** ((s.notes[s.step] - 69) / 12.0)
        v = s.env * math.sin(s.phase)
        for c in range(out.shape[1]):
            out[i, c] = v
        s.phase = (s.phase + 2.0 * math.pi * freq / ctx.sample_rate) % (2.0 * math.pi)
        s.env *= 0.9997
        s.frames_left -= 1


def midi(s, ctx, ev):
    t = ctx.tick % (ctx.ppqn // 4)
    if t == 0:
        s.step = (s.step + 1) % 4
        note_on(ev, s.notes[s.step], 90)
    elif t == ctx.ppqn // 8:
        note_off(ev, s.notes[s.step])
