"""A 4-step sequencer: one note every sixteenth, each lasting half a step."""

from compiler_bridge.api import array, note_off, note_on


class State:
    notes = array([36, 38, 42, 38])
    velocity = 100
    step = 0


def midi(s, ctx, ev):
    ticks_per_step = ctx.ppqn // 4
    t = ctx.tick % ticks_per_step
    if t == 0:
        note_on(ev, s.notes[s.step], s.velocity)
    elif t == ticks_per_step // 2:
        note_off(ev, s.notes[s.step])
        s.step = (s.step + 1) % 4
