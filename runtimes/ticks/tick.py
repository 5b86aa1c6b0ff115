"""One tick: the hand-over, Start, the clock byte, what Python sent, MIDI input, the kernel.

Per tick: a Song Position jump, then state writes queued for the playing
program (:mod:`runtimes.realtime.controls`), then a requested program
(:mod:`runtimes.realtime.handover`: state carried, notes of the old program
ended; on the beat or bar it asked for), then writes that waited for the new
layout, Start, the clock byte, messages from ``send()``, MIDI input (mapped
to state fields), and the kernel.

A tempo change re-anchors at the last tick played, so the next tick is one
new period after it (no phase jump, no lost or doubled tick).
"""

from __future__ import annotations

import numpy as np
from numba import carray

from compiler_bridge.abi import (CTX_DTYPE, EVENT_CAPACITY, KERNEL_MIDI, EVENT_HEADER_CHANNEL, EVENT_HEADER_COUNT,
                                 acquire_fence, as_voidptr, call_kernel, fill_context, frames_per_tick)

from ..realtime import controls, handover
from .inputs import drain_inbox
from .notes import drain_outbox, release_notes, send, silence, write
from .slots import (HIST_FRAMES, IDLE, RUNNING, STARTING, STOPPED, STOPPING, WANT_IDLE, WANT_RUN, WANT_STOP,
                    jit)


@jit
def drain_controls(sl, stop_tag):
    """Apply queued state writes to the playing state; stop at writes for *stop_tag*."""
    if sl.playing == 0:
        return
    prog = handover.program(sl.playing)
    header = carray(as_voidptr(sl.controls[0]), controls.ring.HEADER_SIZE, np.int64)
    records = carray(as_voidptr(sl.controls[1]), sl.controls[2], controls.WRITE_DTYPE)
    applied, dropped = controls.drain(header, records, carray(as_voidptr(prog.state), prog.state_bytes, np.uint8),
                                      prog.tag, stop_tag)
    sl.writes_applied += applied
    sl.writes_dropped += dropped


@jit
def swap_at_once(sl, out_buffer, offset):
    """Take a requested program now, whatever beat or bar it asked for: no tick plays (the
    clock has not started, or waits for its leader), so none would ever take it."""
    _swap_if_posted(sl, out_buffer, offset, True)


@jit
def _swap_if_posted(sl, out_buffer, offset, at_once):
    """Take a requested program (on the beat or bar it asked for), state carried.

    Writes queued for the old state are applied first (then carried), writes
    for the new layout after. Notes the old kernel left sounding end here:
    the new kernel may never send their NoteOff (a save that changed the
    notes would leave them stuck).
    """
    posted = handover.posted(sl)
    if posted == 0:
        drain_controls(sl, 0)
        return
    new = handover.program(posted)
    drain_controls(sl, new.tag)
    every = np.int64(np.floor(new.every_beats * sl.ppqn + 0.5))
    if sl.playing != 0 and every > 1 and not at_once:  # a swap on the beat or bar: the first tick at or after it
        at = sl.beat_origin * sl.ppqn + sl.next_tick  # the transport's position in ticks
        if np.floor(at / every) == np.floor((at - 1.0) / every):
            return
    handover.take(sl, posted)
    release_notes(sl, out_buffer, offset)
    sl.swaps += 1
    drain_controls(sl, 0)


@jit
def _run_kernel(sl, out_buffer, offset, tick, due_frame):
    """Call the playing program's midi kernel once and write what it emitted."""
    if sl.playing == 0:
        return
    prog = handover.program(sl.playing)
    kernel = prog.kernels[KERNEL_MIDI]
    if kernel == 0 or prog.failed != 0:
        return
    ctx = carray(as_voidptr(sl.ctx), 1, CTX_DTYPE)
    fill_context(ctx, np.int64(sl.frames_per_tick + 0.5), tick, due_frame, sl.beat_origin + tick / sl.ppqn,
                 sl.tempo_bpm)
    ctx[0].channel = sl.channel
    ev = carray(as_voidptr(sl.events), (EVENT_CAPACITY + 1, 3), np.int32)
    ev[0, EVENT_HEADER_COUNT] = 0
    ev[0, EVENT_HEADER_CHANNEL] = sl.channel
    sl.in_kernel = 1
    ok = call_kernel(kernel, as_voidptr(prog.state), as_voidptr(sl.ctx), as_voidptr(0), as_voidptr(0),
                     as_voidptr(sl.events))
    sl.in_kernel = 0
    if ok == 0:
        sl.kernel_errors += 1
        prog.failed = 1
        silence(sl, out_buffer, offset)
        return
    for i in range(1, ev[0, EVENT_HEADER_COUNT] + 1):
        send(sl, out_buffer, offset, ev[i, 0], ev[i, 1], ev[i, 2])


@jit
def tick_step(sl, out_buffer, offset, due_frame, late_frames, ideal_frame):
    """Play tick ``sl.next_tick``: Start, clock, the kernel's events; count it.

    *offset* is the frame offset in the JACK buffer (ignored without one),
    *late_frames* how far after its due frame it is written (frames).
    """
    if sl.jump_seq != sl.jump_ack:
        _jump(sl, out_buffer, offset, ideal_frame)
    tick = sl.next_tick
    if sl.release_seq != sl.release_ack:
        sl.release_ack = sl.release_seq
        release_notes(sl, out_buffer, offset)
    _swap_if_posted(sl, out_buffer, offset, False)
    if sl.ticks == 0 and sl.panic != 0:
        for ch in range(16):
            write(sl, out_buffer, offset, 0xB0 | ch, 123, 0)
    if sl.ticks == 0 and sl.send_transport != 0 and sl.follow == 0:  # (a follower passes on the leader's)
        write(sl, out_buffer, offset, 0xFA, 0, 0)
    if sl.send_clock != 0 and tick % sl.clock_div == 0:
        write(sl, out_buffer, offset, 0xF8, 0, 0)
    drain_outbox(sl, out_buffer, offset)
    drain_inbox(sl)
    _run_kernel(sl, out_buffer, offset, tick, due_frame)
    hist = carray(as_voidptr(sl.hist), HIST_FRAMES, np.int64)
    hist[min(late_frames, HIST_FRAMES - 1)] += 1
    if late_frames > 0:
        sl.late_ticks += 1
        sl.max_late_frames = max(sl.max_late_frames, late_frames)
    sl.drift_frames = due_frame + late_frames - ideal_frame
    sl.next_tick = tick + 1
    sl.ticks += 1


@jit
def _jump(sl, out_buffer, offset, ideal_frame):
    """Continue from ``sl.jump_to`` at this tick's time: Stop, Song Position, Continue.

    The time grid is kept (re-anchored at this tick), only the tick count moves.
    """
    seq = sl.jump_seq
    acquire_fence()  # jump_to was stored before jump_seq
    tick = sl.jump_to
    sl.jump_ack = seq
    sl.anchor_frame = ideal_frame
    sl.anchor_tick = tick
    sl.next_tick = tick
    if sl.send_transport != 0 and sl.ticks > 0:
        sixteenths = tick // (6 * sl.clock_div)
        write(sl, out_buffer, offset, 0xFC, 0, 0)
        write(sl, out_buffer, offset, 0xF2, sixteenths & 127, (sixteenths >> 7) & 127)
        write(sl, out_buffer, offset, 0xFB, 0, 0)


@jit
def finish_step(sl, out_buffer):
    """End every sounding note, send Stop; nothing plays after this."""
    drain_outbox(sl, out_buffer, 0)  # what was sent before close still goes out (and its notes end)
    silence(sl, out_buffer, 0)
    if sl.send_transport != 0:
        write(sl, out_buffer, 0, 0xFC, 0, 0)
    sl.run_state = STOPPED


@jit
def follow_want(sl):
    """Move ``run_state`` towards what Python asked for in ``run_want``; return the state.

    Only the native side writes ``run_state``, so a stop is never lost
    between a read and a write of the other side.
    """
    want, state = sl.run_want, sl.run_state
    if want == WANT_STOP:
        if state == STARTING or state == RUNNING:
            sl.run_state = STOPPING
        elif state == IDLE:
            sl.run_state = STOPPED  # (nothing played: nothing to end)
    elif want == WANT_RUN:
        if state == IDLE:
            sl.run_state = STARTING
    elif want == WANT_IDLE and (state == STARTING or state == RUNNING):
        sl.run_state = IDLE
    return sl.run_state


@jit
def frame_of_tick(sl, tick):
    """The frame, unrounded, where *tick* is due on the schedule's anchor and period."""
    return sl.anchor_frame + (tick - sl.anchor_tick) * sl.frames_per_tick


@jit
def retempo(sl):
    """Apply a pending tempo: the next tick comes one new period after the last."""
    seq = sl.tempo_seq
    acquire_fence()  # pending_bpm was stored before tempo_seq
    if seq == sl.tempo_applied:
        return
    bpm = sl.pending_bpm
    new_fpt = frames_per_tick(sl.sample_rate, bpm, sl.ppqn)
    if sl.next_tick > 0:
        last = frame_of_tick(sl, sl.next_tick - 1)  # (frames_per_tick is still the old one)
        sl.anchor_frame = last + new_fpt
        sl.anchor_tick = sl.next_tick
    sl.frames_per_tick = new_fpt
    sl.tempo_bpm = bpm
    sl.tempo_applied = seq


@jit
def start_at(sl, start_frame):
    """Tick 0 is due at *start_frame*."""
    sl.anchor_frame = start_frame
    sl.anchor_tick = 0
    sl.next_tick = 0
    sl.run_state = RUNNING
