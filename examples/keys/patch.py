"""Keys: an 8-voice synth played from MIDI input, and an arpeggio of the held keys on MIDI out.

midi_in() runs at the very frame a message arrived, between two stretches of
audio(): a NoteOn starts its voice on its own sample. midi() runs once per
tick and plays the held keys, lowest to highest, an octave up, one every
sixteenth, to the MIDI output (the gear beside the laptop).
"""

import math

from compiler_bridge.api import array, note_off, note_on, param

TWO_PI = 2.0 * math.pi
VOICES = 8


class State:
    key = array([-1] * VOICES)  # the key each voice plays (-1: free)
    held = array([0] * VOICES)  # 1 while its key is down
    level = array([0.0] * VOICES)  # envelope, 0 to 1
    velocity = array([0.0] * VOICES)
    phase = array([0.0] * VOICES)
    started = array([0] * VOICES)  # the frame each voice started: the oldest is taken when all are busy
    attack_s = param(0.002, 0.0005, 1.0, "exp")
    release_s = param(0.12, 0.005, 4.0, "exp")
    gain = param(0.2, 0.0, 1.0)
    arp_every = 6  # ticks per arpeggio step (6 at 24 ppqn: sixteenths)
    arp_octave = 12
    arp_step = 0
    arp_note = -1  # the note the arpeggio sounds (-1: none)


def midi_in(s, ctx, status, data1, data2):
    kind = status & 0xF0
    if kind == 0x90 and data2 > 0:
        # the voice already on this key, else a free one, else the one that started first
        v, free, oldest = -1, -1, 0
        for u in range(VOICES):
            if s.key[u] == data1:
                v = u
            elif s.key[u] < 0 and free < 0:
                free = u
            if s.started[u] < s.started[oldest]:
                oldest = u
        if v < 0:
            v = free if free >= 0 else oldest
        s.key[v], s.held[v], s.velocity[v], s.started[v] = data1, 1, data2 / 127.0, ctx.frame_time
        s.level[v] = 0.0
        s.phase[v] = 0.0
    elif kind == 0x80 or kind == 0x90:
        for v in range(VOICES):
            if s.key[v] == data1:
                s.held[v] = 0


def audio(s, ctx, inp, out):
    up = 1.0 / (s.attack_s * ctx.sample_rate)
    down = 1.0 / (s.release_s * ctx.sample_rate)
    for i in range(out.shape[0]):
        mix = 0.0
        for v in range(VOICES):
            if s.key[v] < 0:
                continue
            if s.held[v] == 1:
                s.level[v] = min(s.level[v] + up, 1.0)
            else:
                s.level[v] = max(s.level[v] - down, 0.0)
                if s.level[v] == 0.0:
                    s.key[v] = -1
                    continue
            freq = 440.0 * 2.0 ** ((s.key[v] - 69) / 12.0)
            s.phase[v] = (s.phase[v] + TWO_PI * freq / ctx.sample_rate) % TWO_PI
            mix += s.level[v] * s.velocity[v] * (math.sin(s.phase[v]) + 0.3 * math.sin(2.0 * s.phase[v]))
        for c in range(out.shape[1]):
            out[i, c] = s.gain * mix


def midi(s, ctx, ev):
    if ctx.tick % s.arp_every != 0:
        return
    if s.arp_note >= 0:
        note_off(ev, s.arp_note)
        s.arp_note = -1
    # the next held key above the last one played, wrapping to the lowest
    best, lowest = 999, 999
    for v in range(VOICES):
        if s.key[v] >= 0 and s.held[v] == 1:
            lowest = min(lowest, s.key[v])
            if s.key[v] > s.arp_step:
                best = min(best, s.key[v])
    if lowest == 999:
        s.arp_step = 0
        return
    if best == 999:
        best = lowest
    s.arp_step = best
    s.arp_note = best + s.arp_octave
    note_on(ev, s.arp_note, 90)
