"""The JACK process callback and the ticked step: when each tick plays.

:data:`process` runs every JACK cycle: it plays every tick due in the cycle at
its exact frame offset, reads MIDI input in frame order between them, and
follows an outside clock or a Link timeline when asked. :data:`step` plays one
tick for a clock thread or a render loop. Both count their calls for the
host's heartbeat.

A JACK frame time that goes back, or forward by more than JUMP_S past the cycle expected, is the
server's frame clock set anew, not time that passed: PipeWire moves a client to another driver when
the graph changes (seen: 22,528 frames back when an audio client joined or left). The ticks'
schedule goes on by the time that passed on JACK's clock (which runs on across drivers), or, when
that is not known, as if the cycle had followed the last. A smaller step forward is missed cycles
(an xrun): their ticks are played late, at once.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import carray, types

from .follow import follow_cycle
from .inputs import read_input
from .slots import (EXT_STOPPED, RUNNING, SLOTS_DTYPE, STARTING, STOPPING, jack_frames_to_time, jack_last_frame_time,
                    jack_midi_clear_buffer, jack_midi_get_event_count, jack_port_get_buffer, jit)
from .tick import finish_step, follow_want, frame_of_tick, retempo, start_at, tick_step
from .timeline import link_anchor, start_on_beat

JUMP_S = 0.5


@jit
def cycle_start(sl, cycle_u32, nframes):
    """This cycle's first frame on the engine's count: JACK's frame time *cycle_u32* unwrapped
    (jack_nframes_t wraps after about 24 h at 48 kHz), a jump of it carried over (see JUMP_S)."""
    step = (cycle_u32 - sl.last_cycle) & 0xFFFFFFFF  # frames since the last cycle began
    now_us = -1.0
    if sl.fn_frames_to_time != 0:
        now_us = float(jack_frames_to_time(sl.fn_frames_to_time, sl.client, cycle_u32))
    most = sl.cycle_frames + JUMP_S * sl.sample_rate
    if sl.cycle_frames == 0:  # the first cycle (on this server)
        sl.cycle_start = cycle_u32
    elif step >= 1 << 31 or step > most:
        sl.clock_jumps += 1
        step = sl.cycle_frames
        if now_us >= 0.0 and sl.cycle_us >= 0.0:
            passed = np.int64(np.floor((now_us - sl.cycle_us) * sl.sample_rate / 1e6 + 0.5))
            if 0 < passed <= most:
                step = passed
        sl.cycle_start += step
    else:
        sl.cycle_start += step
    sl.last_cycle, sl.cycle_frames, sl.cycle_us = cycle_u32, nframes, now_us
    return sl.cycle_start



TICKS_NONE, TICKS_PLAY, TICKS_FOLLOWED = 0, 1, 2  # what begin_cycle() leaves to its caller


@jit
def begin_cycle(sl, out_buffer, in_buffer, start, nframes):
    """Move the run state, start, anchor on a Link timeline, follow an outside clock: all a
    cycle does before its ticks. Returns TICKS_PLAY when the caller plays this cycle's ticks
    on the schedule, TICKS_FOLLOWED when an outside clock's were played here (and the input
    read), TICKS_NONE when no tick plays."""
    sl.cycles += 1
    state = follow_want(sl)
    if state == STOPPING:
        finish_step(sl, out_buffer)
        return TICKS_NONE
    if state != STARTING and state != RUNNING:
        return TICKS_NONE
    if sl.link != 0 and sl.follow == 0:
        if not link_anchor(sl, start, state == STARTING or sl.link_on == 0):
            return TICKS_NONE  # no timeline yet: the first tick waits for it
        sl.link_on = 1
        sl.run_state = state = RUNNING
    if state == STARTING:
        if sl.start_on != 0 and sl.link == 0 and sl.follow == 0:
            start_on_beat(sl, start)
        else:
            start_at(sl, start)
        if sl.follow != 0:  # nothing plays before the leader's Start (or Continue)
            sl.next_tick, sl.ext = 0, EXT_STOPPED
    if sl.follow != 0:
        follow_cycle(sl, out_buffer, in_buffer, start, nframes)
        return TICKS_FOLLOWED
    if sl.link == 0:
        retempo(sl)
    return TICKS_PLAY


@jit
def next_due(sl, start, end):
    """The next tick's frame offset in the cycle [*start*, *end*) (-1: none due in it), its due
    frame, how late it is written (frames) and its unrounded frame."""
    ideal = frame_of_tick(sl, sl.next_tick)
    due = np.int64(np.floor(ideal + 0.5))
    if due >= end:
        return np.int64(-1), due, np.int64(0), ideal
    late = max(start - due, 0)
    return due + late - start, due, late, ideal


@jit
def run_cycle(sl, out_buffer, in_buffer, cycle_u32, nframes):
    """Play every tick due in this cycle of *nframes* frames starting at JACK frame *cycle_u32*."""
    start = cycle_start(sl, cycle_u32, nframes)
    if begin_cycle(sl, out_buffer, in_buffer, start, nframes) != TICKS_PLAY:
        return
    count = jack_midi_get_event_count(sl.fn_event_count, in_buffer) if in_buffer != 0 else 0
    index = 0
    while True:
        offset, due, late, ideal = next_due(sl, start, start + nframes)
        if offset < 0:
            break
        index = read_input(sl, in_buffer, index, count, offset)
        tick_step(sl, out_buffer, offset, due, late, ideal)
    read_input(sl, in_buffer, index, count, nframes)


@numba.cfunc(types.int32(types.uint32, types.voidptr), cache=True, nogil=True, error_model="numpy")
def process(nframes, arg):
    """JACK process callback; *arg* is the address of a :data:`SLOTS_DTYPE` record."""
    sl = carray(arg, 1, SLOTS_DTYPE)[0]
    sl.entered += 1
    out_buffer = jack_port_get_buffer(sl.fn_get_buffer, sl.out_port, nframes)
    jack_midi_clear_buffer(sl.fn_clear_buffer, out_buffer)
    in_buffer = np.int64(0)
    if sl.in_port != 0:
        in_buffer = jack_port_get_buffer(sl.fn_get_buffer, sl.in_port, nframes)
    cycle = jack_last_frame_time(sl.fn_last_frame_time, sl.client)
    run_cycle(sl, out_buffer, in_buffer, cycle, np.int64(nframes))
    sl.returned += 1
    return 0


@jit
def _ticked_step(sl):
    sl.queued = 0
    state = follow_want(sl)
    if state == STOPPING:
        finish_step(sl, np.int64(0))
        return 0
    if state == STARTING:
        start_at(sl, 0.0)
    if sl.run_state != RUNNING:
        return 0
    retempo(sl)
    ideal = frame_of_tick(sl, sl.next_tick)
    tick_step(sl, np.int64(0), np.int64(0), np.int64(np.floor(ideal + 0.5)), np.int64(0), ideal)
    return 1


@numba.cfunc(types.int32(types.voidptr), cache=True, nogil=True, error_model="numpy")
def step(arg):
    """One tick on the ticked path: fills ``queue`` (``sl.queued`` rows); 0 once stopped.

    The tick's frame is on a nominal ``sample_rate`` timeline from tick 0, as
    on the JACK path, so a kernel sees the same context everywhere.
    """
    sl = carray(arg, 1, SLOTS_DTYPE)[0]
    sl.entered += 1
    played = _ticked_step(sl)
    sl.returned += 1
    return played
