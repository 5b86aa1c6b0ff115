"""The ``jack`` runtime: the audio kernel and the MIDI kernel in one JACK process callback.

:mod:`.process` (the native callback), :mod:`.engine` (its Python side),
:mod:`.runtime` (the runtime: the ``midi`` runtime's JACK path with audio ports).
"""

from .runtime import JackRuntime

__all__ = ["JackRuntime"]
