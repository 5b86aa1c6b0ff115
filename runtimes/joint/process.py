"""The ``jack`` runtime's process callback: the tick engine and the audio engine in one JACK cycle.

Every cycle :data:`process` walks the cycle's frames once, in order. The
audio kernel renders up to the next point where something happens, and
that thing happens at its frame:

* a tick due (the tick engine's :func:`~runtimes.ticks.tick.tick_step`:
  clock, transport, the swap on its beat or bar, the ``midi`` kernel);
* a MIDI input event: mapped to state fields as on the ``midi`` runtime
  (``cc_map``, ``note_field``), then handed to the patch's
  ``midi_in(s, ctx, status, data1, data2)``, so a NoteOn starts a voice on
  the very sample it arrived.

Both kernels run on one program record (one state), take one frame count
(the tick engine's: JACK's frame time unwrapped) and one beat (the tick
schedule's). The tick engine's hand-over takes the swaps; the audio engine
follows the record it took with a crossfade (:func:`~runtimes.audio.callback.play_taken`),
and the tick engine follows the audio watchdog's fallback. Nothing here
allocates, locks or takes the GIL.

Input is bounded: at most ``max_in`` events per cycle reach ``midi_in()``;
past that, only NoteOffs do (a burst must not leave a key held), and the
rest are counted in ``in_overflow``; a data byte with no status
(running status a sender should not put in a JACK buffer), SysEx and
anything longer than three bytes are counted and skipped.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import carray, types

from compiler_bridge.abi import CTX_DTYPE, as_voidptr, fill_context

from ..audio import callback as audio
from ..audio import keys
from ..realtime import handover
from ..ticks import slots as ticks
from ..ticks.cycle import TICKS_FOLLOWED, TICKS_PLAY, begin_cycle, cycle_start, next_due
from ..ticks.inputs import input_event, message_in
from ..ticks.notes import release_notes
from ..ticks.slots import (jack_last_frame_time, jack_midi_clear_buffer, jack_midi_get_event_count,
                           jack_port_get_buffer, jit)
from ..ticks.tick import swap_at_once, tick_step

MAX_PORTS = 64  # audio ports each way
MAX_CYCLE_FRAMES = 8192  # JACK's largest period; a longer cycle is played silent (and counted)
MAX_IN_DEFAULT = 256  # events per cycle handed to midi_in()

JOINT_DTYPE = np.dtype(
    [
        ("ticks", "i8"),  # address of the tick engine's slots (runtimes.ticks.slots.SLOTS_DTYPE)
        ("audio", "i8"),  # address of the audio engine's slots (runtimes.audio.callback.SLOTS_DTYPE)
        ("audio_in", "i8", (MAX_PORTS,)), ("audio_out", "i8", (MAX_PORTS,)),  # JACK port handles
        ("in_buf", "i8"), ("out_buf", "i8"),  # interleaved float32, MAX_CYCLE_FRAMES x channels
        ("msg", "i8"),  # int32[3]: the message midi_in() reads
        ("max_in", "i8"),  # events per cycle handed to midi_in()
        ("synced", "i8"),  # the record both engines play (the audio side follows the tick side's swaps)
        # counters (the callback's)
        ("in_events", "i8"),  # MIDI input events read
        ("in_handled", "i8"),  # ... handed to midi_in()
        ("in_overflow", "i8"),  # ... over max_in in their cycle: skipped
        ("in_bad", "i8"),  # ... with no status byte, SysEx, longer than 3 bytes: skipped
        ("handler_errors", "i8"),  # midi_in() raised: the program is silenced until the next save
        ("long_cycles", "i8"),  # cycles over MAX_CYCLE_FRAMES, played silent
    ],
    align=True,
)


@jit
def _beat_at_frame(tsl, frame):
    """The transport's beat at *frame* on the tick schedule (where the next tick sits while none plays)."""
    if tsl.run_state != ticks.RUNNING or (tsl.follow != 0 and tsl.ext != ticks.EXT_RUNNING):
        return tsl.beat_origin + tsl.next_tick / tsl.ppqn
    return tsl.beat_origin + (tsl.anchor_tick + (frame - tsl.anchor_frame) / tsl.frames_per_tick) / tsl.ppqn


@jit
def _sync(j, tsl, s, out_midi, offset):
    """Both engines on one record: the audio side fades to what the tick side took (when a voice
    is free), the tick side follows the audio watchdog's fallback (its notes ended)."""
    if tsl.playing != j.synced:
        if s.closing == 0 and audio.play_taken(s, tsl.playing):  # (a close fades everything out)
            j.synced = tsl.playing
    elif s.playing != j.synced and s.playing != 0:
        tsl.playing = s.playing
        release_notes(tsl, out_midi, offset)
        j.synced = s.playing


@jit
def _render(j, tsl, s, start, begin, end):
    """Render the audio of frames [*begin*, *end*) of the cycle starting at frame *start*."""
    width_in, width_out = s.channels_in, s.channels_out
    pos = begin
    while pos < end:
        n = min(end - pos, s.max_frames)
        fill_context(carray(as_voidptr(s.ctx), 1, CTX_DTYPE), n, s.blocks, start + pos,
                     _beat_at_frame(tsl, start + pos), tsl.tempo_bpm)
        block_in = j.in_buf + pos * width_in * 4 if width_in > 0 else s.silence_in
        audio.render_voices(s, j.audio, block_in, j.out_buf + pos * width_out * 4, n)
        pos += n


@jit
def _handle(j, tsl, s, data, size, frame, nframes, mapped):
    """One input event at *frame*: mapped to state fields (unless *mapped* already: an outside
    clock's cycle reads its input itself), then handed to midi_in()."""
    j.in_events += 1
    status = np.int64(data[0]) if size >= 1 else np.int64(0)
    if size < 1 or size > 3 or status < 0x80 or status == 0xF0 or status == 0xF7:
        j.in_bad += 1
        return
    if not mapped:
        message_in(tsl, data, size)
    if tsl.playing == 0 or status >= 0xF8:  # (clock and transport bytes are the clock's)
        return
    fill_context(carray(as_voidptr(s.ctx), 1, CTX_DTYPE), nframes, s.blocks, frame, _beat_at_frame(tsl, frame),
                 tsl.tempo_bpm)
    ran = keys.call_midi_in(handover.program(tsl.playing), tsl, j.msg, s.ctx, s.events, status,
                            data[1] if size >= 2 else 0, data[2] if size >= 3 else 0)
    j.in_handled += np.int64(ran >= 0)
    if ran == 0:
        j.handler_errors += 1
        s.kernel_errors += 1


@jit
def _releases(data, size):
    """Whether a message is a NoteOff (or a NoteOn of velocity 0): over the per-cycle bound these
    still reach midi_in(), so that a burst never leaves a key held."""
    kind = np.int64(data[0]) & 0xF0 if size >= 1 else 0
    return size == 3 and (kind == 0x80 or (kind == 0x90 and data[2] == 0))


@jit
def joint_cycle(j, tsl, s, out_midi, in_midi, cycle_u32, nframes):
    """Play one cycle: audio up to each tick and each input event, that at its frame."""
    start = cycle_start(tsl, cycle_u32, nframes)
    audio.take_close(s)
    mode = begin_cycle(tsl, out_midi, in_midi, start, nframes)
    if mode != TICKS_PLAY:
        swap_at_once(tsl, out_midi, 0)  # no tick takes a swap in this cycle
    _sync(j, tsl, s, out_midi, 0)
    count = jack_midi_get_event_count(tsl.fn_event_count, in_midi) if in_midi != 0 else 0
    index, pos, read = np.int64(0), np.int64(0), np.int64(0)
    while True:
        tick_at, due, late, ideal = np.int64(-1), np.int64(0), np.int64(0), 0.0
        if mode == TICKS_PLAY:
            tick_at, due, late, ideal = next_due(tsl, start, start + nframes)
        event_at, size, address = np.int64(-1), np.int64(0), np.int64(0)
        if index < count:
            event_at, size, address = input_event(tsl, in_midi, index)
            if event_at < 0 or event_at >= nframes:  # unreadable: skipped
                j.in_events += 1
                j.in_bad += 1
                index += 1
                continue
        if event_at >= 0 and (tick_at < 0 or event_at <= tick_at):
            _render(j, tsl, s, start, pos, event_at)
            pos = event_at
            read += 1
            if read > j.max_in and not _releases(carray(as_voidptr(address), max(size, 1), np.uint8), size):
                j.in_events += 1
                j.in_overflow += 1
            else:
                _handle(j, tsl, s, carray(as_voidptr(address), max(size, 1), np.uint8), size, start + pos, nframes,
                        mode == TICKS_FOLLOWED)
                _sync(j, tsl, s, out_midi, pos)
            index += 1
        elif tick_at >= 0:
            _render(j, tsl, s, start, pos, tick_at)
            pos = tick_at
            tick_step(tsl, out_midi, tick_at, due, late, ideal)
            _sync(j, tsl, s, out_midi, pos)
        else:
            break
    _render(j, tsl, s, start, pos, nframes)
    _sync(j, tsl, s, out_midi, nframes - 1)


@jit
def _copy_in(j, tsl, s, nframes):
    """The input ports' buffers, interleaved, where the audio kernel reads them."""
    width = s.channels_in
    buf = carray(as_voidptr(j.in_buf), MAX_CYCLE_FRAMES * max(width, 1), np.float32)
    for c in range(width):
        port = carray(as_voidptr(jack_port_get_buffer(tsl.fn_get_buffer, j.audio_in[c], nframes)), nframes,
                      np.float32)
        for i in range(nframes):
            buf[i * width + c] = port[i]


@jit
def _copy_out(j, tsl, s, nframes, silent):
    """The interleaved mix into the output ports' buffers (silence for a cycle too long to play)."""
    width = s.channels_out
    buf = carray(as_voidptr(j.out_buf), MAX_CYCLE_FRAMES * width, np.float32)
    for c in range(width):
        port = carray(as_voidptr(jack_port_get_buffer(tsl.fn_get_buffer, j.audio_out[c], nframes)), nframes,
                      np.float32)
        if silent:
            port[:] = 0.0
            continue
        for i in range(nframes):
            port[i] = buf[i * width + c]


@numba.cfunc(types.int32(types.uint32, types.voidptr), cache=True, nogil=True, error_model="numpy")
def process(nframes, arg):
    """JACK process callback; *arg* is the address of a :data:`JOINT_DTYPE` record."""
    j = carray(arg, 1, JOINT_DTYPE)[0]
    tsl = carray(as_voidptr(j.ticks), 1, ticks.SLOTS_DTYPE)[0]
    s = carray(as_voidptr(j.audio), 1, audio.SLOTS_DTYPE)[0]
    tsl.entered += 1
    s.entered += 1
    started_ns = audio.now_ns(s, j.audio)
    frames = np.int64(nframes)
    out_midi = jack_port_get_buffer(tsl.fn_get_buffer, tsl.out_port, nframes)
    jack_midi_clear_buffer(tsl.fn_clear_buffer, out_midi)
    in_midi = np.int64(0)
    if tsl.in_port != 0:
        in_midi = jack_port_get_buffer(tsl.fn_get_buffer, tsl.in_port, nframes)
    long_cycle = frames > MAX_CYCLE_FRAMES
    if long_cycle:
        j.long_cycles += 1
    else:
        _copy_in(j, tsl, s, frames)
        joint_cycle(j, tsl, s, out_midi, in_midi, jack_last_frame_time(tsl.fn_last_frame_time, tsl.client), frames)
    _copy_out(j, tsl, s, frames, long_cycle)
    audio.record_timing(s, started_ns, audio.now_ns(s, j.audio), frames, 0)
    tsl.returned += 1
    return 0
