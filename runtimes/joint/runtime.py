"""The ``jack`` runtime: livehost's JACK client plays the audio and the MIDI kernel of one program.

It is the ``midi`` runtime on its native JACK path (clock and transport out,
``connect_to``/``connect_from``, ``cc_map``, clock following, Link, swaps on
the beat, a lost server got back: the same code), whose engine is a
:class:`.engine.JointEngine`: the process callback also renders the audio
kernel into audio ports, split at every tick and every MIDI input event,
and hands input to the patch's ``midi_in()`` at its frame.
"""

from __future__ import annotations

from typing import Any

from compiler_bridge.errors import RuntimeInitError
from compiler_bridge.program import Program

from ..midi.jack import JackPath
from ..midi.runtime import MidiRuntime
from .engine import JointEngine


class JackRuntime(MidiRuntime):
    """Registry id ``jack``: audio and MIDI from one JACK callback (see the module docstring).

    Settings (see :data:`compiler_bridge.settings.JACK`): the ``midi``
    runtime's (but ``backend``), ``channels_in``, ``channels_out``,
    ``crossfade_ms``, ``connect_audio`` and ``max_events_in``.
    """

    id = "jack"
    engine_class = JointEngine

    def _require(self, program: Program) -> None:
        if not (program.has("audio") or program.has("midi")):
            raise RuntimeInitError("jack: the patch defines neither audio(s, ctx, inp, out) nor midi(s, ctx, ev)")

    def _open_path(self):
        return JackPath(self.settings)

    def _update_settings(self, settings: dict[str, Any]) -> None:
        super()._update_settings(settings)
        if self.engine is not None:
            self.engine.audio.set_crossfade_ms(float(settings["crossfade_ms"]))
