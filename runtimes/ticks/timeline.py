"""Placing ticks on a timeline (the JACK path): an Ableton Link session's, or the host's
transport for a start on a beat.

Python publishes the timeline (``link_tempo``, ``link_beat``, ``link_time_us`` on
JACK's clock) under ``link_seq``, odd while it writes; the cycle reads it
between two reads of that number and keeps the last anchor while it changes.
"""

from __future__ import annotations

import numpy as np

from compiler_bridge.abi import acquire_fence

from .slots import jack_frames_to_time, jit
from .tick import start_at


@jit
def _heard_us(sl, start):
    """When the cycle that begins at frame *start* is heard, on JACK's clock (microseconds): the
    cycle's time from ``jack_frames_to_time``, plus the output latency."""
    jack_frame = (sl.last_cycle + start - sl.cycle_start) & 0xFFFFFFFF  # (the engine's count may differ from JACK's)
    return float(jack_frames_to_time(sl.fn_frames_to_time, sl.client, jack_frame)) + sl.link_latency_us


@jit
def _frame_of_beat(sl, start, t_start, beat, tempo, beat0, time0):
    """The frame (unrounded) where a timeline (*beat0* at *time0* on JACK's clock, at *tempo*)
    reaches *beat*, from the cycle that begins at frame *start*, heard at *t_start*."""
    return start + (time0 + (beat - beat0) * 60e6 / tempo - t_start) * sl.sample_rate / 1e6


@jit
def link_anchor(sl, start, starting):
    """Anchor the tick schedule at this cycle on the published Link timeline; False
    when there is none yet. *starting*: the first tick is the session's next
    quantum boundary (a quantized launch, in phase with the other peers).

    JACK's clock and Link's are both CLOCK_MONOTONIC_RAW on Linux: the cycle's
    time comes from ``jack_frames_to_time``, plus the output latency.
    """
    seq = sl.link_seq
    acquire_fence()  # the fields were stored before link_seq
    if seq == 0 or seq & 1:
        return seq != 0 and not starting  # being written: the last anchor holds
    tempo, beat0, time0 = sl.link_tempo, sl.link_beat, sl.link_time_us
    acquire_fence()
    if sl.link_seq != seq:
        return not starting
    us_per_beat = 60e6 / tempo
    t_start = _heard_us(sl, start)
    if starting:
        beat_start = beat0 + (t_start - time0) / us_per_beat
        sl.next_tick = np.int64(np.ceil(beat_start / sl.link_quantum) * sl.link_quantum * sl.ppqn)
    sl.anchor_tick = sl.next_tick
    sl.anchor_frame = _frame_of_beat(sl, start, t_start, sl.next_tick / sl.ppqn, tempo, beat0, time0)
    sl.frames_per_tick = sl.sample_rate * us_per_beat / (1e6 * sl.ppqn)
    sl.tempo_bpm = tempo
    return True


@jit
def start_on_beat(sl, start):
    """Tick 0 is due at the frame where the transport reaches ``start_beat`` (the kernels'
    ``ctx.beat`` goes on from it), or at *start* when that frame has passed."""
    sl.start_on = 0
    seq = sl.link_seq
    acquire_fence()  # the fields were stored before link_seq
    tempo, beat0, time0 = sl.link_tempo, sl.link_beat, sl.link_time_us
    if seq == 0 or seq & 1 or tempo <= 0.0:
        start_at(sl, start)
        return
    frame = _frame_of_beat(sl, start, _heard_us(sl, start), sl.start_beat, tempo, beat0, time0)
    start_at(sl, max(frame, float(start)))
    if frame >= start:
        sl.beat_origin = sl.start_beat
