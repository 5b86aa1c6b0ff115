"""The tick engine: every MIDI kernel runs here, with no Python in the loop.

One native per-tick step (:func:`.tick.tick_step`) serves every way a MIDI
kernel plays: the JACK process callback :data:`.cycle.process` (the ``midi``
runtime on a JACK server: clock bytes and kernel events written at exact frame
offsets), and :data:`.cycle.step`, called once per tick by a clock thread or a
render loop (the ``midi`` runtime over python-rtmidi, the ``logic`` runtime,
offline MIDI renders), which appends the tick's messages to a queue instead.
So swaps, Start/Stop/Song Position, clock bytes, the sounding-note table and
the notes-off on close are the same code everywhere.

The rooms: :mod:`.slots` (the record every native function works on),
:mod:`.notes` (messages out and the sounding-note table), :mod:`.inputs`
(MIDI input mapped to state fields), :mod:`.tick` (one tick: hand-over, Start,
clock, kernel), :mod:`.follow` (following an outside MIDI clock),
:mod:`.timeline` (a Link timeline, a start on a beat), :mod:`.cycle` (the JACK
cycle and the ticked step) and :mod:`.engine` (the Python side that owns it all).
"""
