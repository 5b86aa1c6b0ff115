"""The one record every native function of the tick engine works on.

Everything the native code touches is reached through a record of
:data:`SLOTS_DTYPE` holding integer addresses (libjack entry points, buffers,
the program records of :mod:`runtimes.realtime.handover`) and counters, so the
compiled code holds no Python object and loads from numba's cache. Each field
has one writer: Python before the engine runs, or for its requests
(``run_want``, ``jump_seq`` ...); the native side for its answers and counters.

Timing is in frames. Tick *n* is due at ``anchor_frame + (n - anchor_tick) *
frames_per_tick`` rounded to a frame: computed from an anchor, never
accumulated, so it cannot drift.
"""

from __future__ import annotations

import numba
import numpy as np

from compiler_bridge.abi import native_function

from ..realtime import handover

# run_state values (the native side's); run_want values (Python's)
IDLE, STARTING, RUNNING, STOPPING, STOPPED = 0, 1, 2, 3, 4
WANT_IDLE, WANT_RUN, WANT_STOP = 0, 1, 2

HIST_FRAMES = 4096  # lateness histogram buckets, one per frame (the last holds the rest)
QUEUE_CAPACITY = 4096  # messages per tick on the ticked path
CONTROL_ROWS = 130  # rows 0-127: CC number -> field; row 128: note field; row 129: velocity field
ROW_NOTE, ROW_VELOCITY = 128, 129
CLOCK_WINDOW = 96  # clock bytes in the tempo estimate (see .follow)
EXT_STOPPED, EXT_ARMED, EXT_RUNNING = 0, 1, 2

# One MIDI message of up to three bytes: the outbox (send()) and the input ring (rtmidi input).
MESSAGE_DTYPE = np.dtype([("status", "u1"), ("data1", "u1"), ("data2", "u1"), ("size", "u1")])

SLOTS_DTYPE = np.dtype(
    [
        # libjack entry points and handles (0 on the ticked path)
        ("fn_get_buffer", "i8"), ("fn_clear_buffer", "i8"), ("fn_event_write", "i8"),
        ("fn_last_frame_time", "i8"), ("fn_event_count", "i8"), ("fn_event_get", "i8"),
        ("fn_frames_to_time", "i8"), ("client", "i8"), ("out_port", "i8"), ("in_port", "i8"),
        # buffers owned by the Python side (addresses)
        ("ctx", "i8"), ("events", "i8"), ("notes", "i8"), ("hist", "i8"), ("scratch", "i8"), ("queue", "i8"),
        # rings (header, records, capacity): state writes, send() messages, rtmidi input
        ("controls", "i8", (3,)), ("outbox", "i8", (3,)), ("inbox", "i8", (3,)),
        # the program hand-over (runtimes.realtime.handover)
        *handover.SLOT_FIELDS, ("swaps", "i8"),
        # Python's requests: run_want; a jump (Song Position) to jump_to when jump_seq moves; notes
        # released when release_seq moves (the channel changed); each answered by the native side
        ("run_want", "i8"), ("jump_seq", "i8"), ("jump_to", "i8"), ("jump_ack", "i8"),
        ("release_seq", "i8"), ("release_ack", "i8"),
        # schedule, in frames (the native side's)
        ("run_state", "i8"), ("next_tick", "i8"), ("anchor_tick", "i8"), ("anchor_frame", "f8"),
        ("frames_per_tick", "f8"), ("tempo_bpm", "f8"), ("sample_rate", "f8"),
        ("pending_bpm", "f8"), ("tempo_seq", "i8"), ("tempo_applied", "i8"),  # Python: pending_bpm, tempo_seq
        ("ppqn", "i8"), ("clock_div", "i8"), ("send_clock", "i8"), ("send_transport", "i8"),
        ("channel", "i8"), ("last_note_in", "i8"),
        # the cycle's first frame on the engine's own count (JACK's frame time unwrapped, and carried
        # across a jump of it), JACK's frame time of that cycle, its length (0: no cycle yet), jumps
        ("cycle_start", "i8"), ("last_cycle", "i8"), ("cycle_frames", "i8"), ("clock_jumps", "i8"),
        ("cycle_us", "f8"),  # that cycle's time on JACK's clock (jack_frames_to_time; JACK path)
        ("beat_origin", "f8"),  # the transport's beat at tick 0
        ("panic", "i8"),  # 1: All Notes Off on every channel before Start (a previous run may have left notes on)
        # counters read by stats()
        ("ticks", "i8"), ("late_ticks", "i8"), ("max_late_frames", "i8"), ("drift_frames", "f8"),
        ("events_out", "i8"), ("events_in", "i8"), ("notes_on", "i8"), ("channels_used", "i8"),
        ("kernel_errors", "i8"), ("dropped", "i8"), ("cycles", "i8"), ("queued", "i8"),
        ("writes_applied", "i8"), ("writes_dropped", "i8"),
        # liveness, read by the host's heartbeat: calls of process() or step() begun and returned, and 1
        # while a kernel runs (a call begun and not returned, with this set, is a kernel that hangs)
        ("entered", "i8"), ("returned", "i8"), ("in_kernel", "i8"),
        # following an outside MIDI clock (JACK path, ``clock_source = "midi"``)
        ("follow", "i8"),  # 1: incoming clock bytes drive the ticks
        ("clk_window", "i8"),  # address of a float64 CLOCK_WINDOW array: the latest clock bytes' frames
        ("clk_n", "i8"), ("clk_head", "i8"),  # frames in the window, next slot
        ("clk_period", "f8"), ("clk_last", "f8"),  # frames per clock byte (least squares), last clock's frame
        ("clk_slope", "f8"),  # frames per clock byte of the window so far (clk_period once published)
        ("clk_index", "i8"),  # the clock byte that plays next (armed) or played last (running), from Start
        ("ext", "i8"),  # EXT_STOPPED, EXT_ARMED (Start/Continue seen: the next clock plays) or EXT_RUNNING
        ("clk_lost", "i8"),  # 1: no clock byte for LOST_CLOCKS periods: the last tempo holds
        ("clocks_in", "i8"), ("clock_losses", "i8"), ("clock_resets", "i8"),
        # an Ableton Link session's timeline (JACK path): beat = link_beat + (t - link_time_us) * tempo / 60e6,
        # published by Python under link_seq (odd while it writes); tick n sits at beat n / ppqn
        ("link", "i8"), ("link_seq", "i8"),
        ("link_tempo", "f8"), ("link_beat", "f8"), ("link_time_us", "f8"),
        ("link_quantum", "f8"), ("link_latency_us", "f8"),
        ("link_on", "i8"),  # 1 once a tick was placed on the timeline (before: the first goes to a quantum boundary)
        # a start on a beat (JACK path, no Link): tick 0 at the frame where the host's transport, published
        # in the link_* fields on JACK's clock, reaches start_beat (Python sets both before the start)
        ("start_on", "i8"), ("start_beat", "f8"),
    ],
    align=True,
)

# error_model="numpy": nothing in the process thread raises (a Python exception there
# would take the GIL to be reported and leave the slots half written).
jit = numba.njit(cache=True, nogil=True, error_model="numpy")

# --- calls into libjack by integer address (cacheable: no ctypes objects) -----

jack_port_get_buffer = native_function("ptr", "ptr", "i32")  # (port, nframes) -> buffer
jack_midi_clear_buffer = native_function("void", "ptr")  # (buffer)
jack_midi_event_write = native_function("i32", "ptr", "i32", "ptr", "i64")  # (buffer, time, data, size)
jack_last_frame_time = native_function("u32", "ptr")  # (client) -> frames
jack_midi_get_event_count = native_function("u32", "ptr")  # (buffer) -> count
jack_midi_event_get = native_function("i32", "ptr", "ptr", "i32")  # (jack_midi_event_t *, buffer, index)
jack_frames_to_time = native_function("i64", "ptr", "u32")  # (client, frames) -> microseconds
