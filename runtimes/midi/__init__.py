"""The ``midi`` runtime and the tick engine every MIDI kernel runs on.

:mod:`.runtime` (the Python lifecycle), :mod:`.engine` (the native tick
engine: the JACK process callback and the per-tick step), :mod:`.jack` (the
libjack binding and livehost's JACK client), :mod:`.ports` (mido/rtmidi
ports), :mod:`.ticked` (the engine on a clock thread: rtmidi and ``logic``).
"""

from .runtime import MidiRuntime

__all__ = ["MidiRuntime"]
