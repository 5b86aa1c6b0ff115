"""Following an outside MIDI clock (the JACK path, ``clock_source = "midi"``): each clock
byte's tick plays at that byte's very frame, the ticks between at the leader's tempo.

Following an outside clock: the tempo is the least-squares slope of the last
CLOCK_WINDOW clock bytes' frames (four beats); a byte further than CLOCK_RESET of a
period from where the slope puts it starts the window again (a tempo change, a
lost byte), so a new tempo is estimated from its own bytes only: with +-0.5 ms of
jitter, one beat of them gives it within about 0.05 BPM (one standard deviation at
140 BPM), two beats within about 0.02. None for LOST_CLOCKS periods: the clock is
lost, the ticks go on at its last tempo until it comes back.
Bytes closer together than a tempo of MAX_CLOCK_BPM (the config's bound) are a burst:
held up upstream (a late client, a busy USB or network link) and delivered at once.
They count as ticks but say nothing of the tempo, and a tempo is published only from
a window whose intervals agree (three bytes or more) and that lies within the bounds.
"""

from __future__ import annotations

import numpy as np
from numba import carray

from compiler_bridge.abi import as_voidptr, frames_per_tick

from .inputs import input_event, message_in
from .notes import release_notes, write
from .slots import CLOCK_WINDOW, EXT_ARMED, EXT_RUNNING, EXT_STOPPED, jack_midi_get_event_count, jit
from .tick import frame_of_tick, tick_step

CLOCK_RESET = 0.1
LOST_CLOCKS = 3.0
MIN_CLOCK_BPM, MAX_CLOCK_BPM = 20.0, 999.0


@jit
def _clock_estimate(sl, frame):
    """Add a clock byte at *frame* to the window and estimate frames per clock byte from it."""
    window = carray(as_voidptr(sl.clk_window), CLOCK_WINDOW, np.float64)
    tolerance = CLOCK_RESET if sl.clk_n >= 4 else 2.5 * CLOCK_RESET  # a period from few bytes is rougher
    shortest = frames_per_tick(sl.sample_rate, MAX_CLOCK_BPM, 24)  # (a clock byte is a tick at 24 ppqn)
    longest = frames_per_tick(sl.sample_rate, MIN_CLOCK_BPM, 24)
    interval = frame - sl.clk_last
    if (sl.clk_n >= 1 and interval < shortest  # a burst
            or sl.clk_n == 1 and interval > sl.sample_rate  # a pause: slower than 2.5 BPM is no clock
            or sl.clk_n >= 2 and abs(interval - sl.clk_slope) > tolerance * sl.clk_slope):
        sl.clk_n = 0  # a new tempo, a lost byte, a burst or a pause: this byte starts the window; the tempo holds
        sl.clock_resets += 1
    window[sl.clk_head % CLOCK_WINDOW] = frame
    sl.clk_head += 1
    sl.clk_n = min(sl.clk_n + 1, CLOCK_WINDOW)
    sl.clk_last = frame
    sl.clocks_in += 1
    n = sl.clk_n
    if n < 2:
        return
    first = window[(sl.clk_head - n) % CLOCK_WINDOW]
    mean_x = (n - 1) / 2.0
    sxy = sxx = 0.0
    for i in range(n):
        dx = i - mean_x
        sxy += dx * (window[(sl.clk_head - n + i) % CLOCK_WINDOW] - first)
        sxx += dx * dx
    sl.clk_slope = sxy / sxx  # (two bytes at least a burst's interval apart: above zero)
    if n >= 3 and shortest <= sl.clk_slope <= longest:
        sl.clk_period = sl.clk_slope
        sl.tempo_bpm = sl.sample_rate * 60.0 / (sl.clk_period * 24.0)  # (frames_per_tick solved for the tempo)


@jit
def _follow_ticks(sl, out_buffer, start, until):
    """Play the ticks between clock bytes (``ppqn`` over 24) due before frame *until*: at most
    up to the next clock byte's tick, unless the clock is lost."""
    while sl.ext == EXT_RUNNING:
        if sl.clk_lost == 0 and sl.next_tick >= (sl.clk_index + 1) * sl.clock_div:
            break  # the next tick comes with the next clock byte
        ideal = frame_of_tick(sl, sl.next_tick)
        due = np.int64(np.floor(ideal + 0.5))
        if due >= until:
            break
        late = max(start - due, 0)
        tick_step(sl, out_buffer, due + late - start, due, late, ideal)


@jit
def _clock_in(sl, out_buffer, offset, frame):
    """A clock byte at *frame*: its tick plays at that very frame (the clock out goes with it)."""
    _clock_estimate(sl, frame)
    if sl.ext == EXT_STOPPED:
        return
    if sl.ext == EXT_ARMED:
        sl.ext = EXT_RUNNING
    else:
        sl.clk_index += 1
    if sl.clk_lost != 0:  # back: go on from the tick the free run reached, at this byte
        sl.clk_lost = 0
        sl.clk_index = max(sl.clk_index, (sl.next_tick + sl.clock_div - 1) // sl.clock_div)
    tick = sl.clk_index * sl.clock_div
    while sl.next_tick < tick:  # the byte came before the ticks predicted ahead of it: they play now
        tick_step(sl, out_buffer, offset, frame, 0, frame)
    sl.next_tick = tick
    sl.anchor_frame, sl.anchor_tick = frame, tick
    if sl.clk_period > 0.0:
        sl.frames_per_tick = sl.clk_period / sl.clock_div
    tick_step(sl, out_buffer, offset, frame, 0, frame)


@jit
def _transport_in(sl, out_buffer, offset, status, data1, data2):
    """Start, Continue, Stop and Song Position from the leader; passed on with ``send_transport``."""
    if status == 0xFA:  # Start: the next clock byte is tick 0
        sl.clk_index, sl.ext = 0, EXT_ARMED
    elif status == 0xFB:  # Continue: the next clock byte plays where the song stood
        sl.ext = EXT_ARMED
    elif status == 0xFC:  # Stop: the notes end, the position stays (the next byte's)
        if sl.ext == EXT_RUNNING:
            sl.clk_index += 1
        sl.ext = EXT_STOPPED
        release_notes(sl, out_buffer, offset)
    else:  # Song Position Pointer, in sixteenths (6 clock bytes each)
        sl.clk_index = ((data2 & 127) << 7 | (data1 & 127)) * 6
        if sl.ext == EXT_RUNNING:
            sl.ext = EXT_ARMED
    if sl.ext == EXT_ARMED:
        sl.next_tick = sl.clk_index * sl.clock_div
    sl.events_in += 1
    if sl.send_transport != 0:
        write(sl, out_buffer, offset, status, data1, data2)


@jit
def follow_cycle(sl, out_buffer, in_buffer, start, nframes):
    """A cycle led by the incoming clock: each input event in frame order, the ticks between."""
    count = jack_midi_get_event_count(sl.fn_event_count, in_buffer) if in_buffer != 0 else 0
    for index in range(count):
        offset, size, address = input_event(sl, in_buffer, index)
        if offset < 0 or size < 1:
            continue
        data = carray(as_voidptr(address), size, np.uint8)
        status = np.int64(data[0])
        _follow_ticks(sl, out_buffer, start, start + offset)
        if status == 0xF8:
            _clock_in(sl, out_buffer, offset, start + offset)
        elif status == 0xFA or status == 0xFB or status == 0xFC or status == 0xF2 and size >= 3:
            _transport_in(sl, out_buffer, offset, status, np.int64(data[1]) if size >= 3 else 0,
                          np.int64(data[2]) if size >= 3 else 0)
        else:
            message_in(sl, data, size)
    end = start + nframes
    if (sl.ext == EXT_RUNNING and sl.clk_lost == 0 and sl.clk_period > 0.0
            and end - sl.clk_last > LOST_CLOCKS * sl.clk_period):
        sl.clk_lost = 1  # free run at the last tempo, from the tick that would have come next
        sl.clock_losses += 1
        sl.anchor_tick = sl.next_tick
        sl.anchor_frame = float(end)
    _follow_ticks(sl, out_buffer, start, end)
