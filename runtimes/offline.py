"""Render a program to a file as fast as the CPU allows, deterministically.

Audio kernels render to WAV (float32, no PEAK chunk: libsndfile would stamp
it with the time and break byte-identical output); MIDI kernels render to a
Standard MIDI File. Renders start from the patch's defaults, never from a
saved state snapshot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from compiler_bridge.errors import RuntimeInitError
from compiler_bridge.program import Program

from .audio.engine import NativeEngine
from .base import BaseRuntime, offer
from .midi.ticked import NOMINAL_SAMPLE_RATE
from .ticks.engine import TickEngine
from .ticks.slots import WANT_RUN, WANT_STOP

log = logging.getLogger("livehost.runtimes")

_SFC_SET_ADD_PEAK_CHUNK = 0x1050


def render_audio(program: Program, path: Path, seconds: float, *, sample_rate: int = 48000,
                 block_frames: int = 256, channels_out: int = 2, tempo_bpm: float | None = None) -> int:
    """Render the audio kernel to a float32 WAV; return the frames written.

    The live audio engine renders it (same context, sanitiser and clip),
    on a clock that advances by the frames rendered.
    """
    import soundfile as sf

    tempo = tempo_bpm or program.tempo_bpm
    total = round(seconds * sample_rate)
    engine = NativeEngine(float(sample_rate), 0, channels_out, block_frames, crossfade_ms=0.0)
    engine.set_transport(tempo, 0.0, 0)
    engine.request_swap(offer(program))
    out = np.zeros((block_frames, channels_out), np.float32)
    with sf.SoundFile(path, "w", sample_rate, channels_out, subtype="FLOAT", format="WAV") as f:
        sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
        done = 0
        while done < total:
            n = min(block_frames, total - done)
            engine.render(out[:n], done * 1_000_000_000 // sample_rate)
            f.write(out[:n])
            done += n
    return total


def render_midi(program: Program, path: Path, seconds: float, *, ppqn: int = 24, channel: int = 1,
                tempo_bpm: float | None = None) -> int:
    """Render the MIDI kernel to a type-0 Standard MIDI File; return ticks run.

    The tick engine of the live runtimes runs it, tick by tick, with no
    clock bytes. The file's resolution is the kernel's *ppqn*; every
    sounding note gets its NoteOff at the end.
    """
    import mido

    tempo = tempo_bpm or program.tempo_bpm
    ticks = round(seconds * tempo / 60.0 * ppqn)
    settings = {"ppqn": ppqn, "channel": channel, "send_clock": False, "send_transport": False}
    engine = TickEngine(settings, NOMINAL_SAMPLE_RATE, tempo)
    engine.first(offer(program))
    engine.want(WANT_RUN)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo), time=0)])
    last = 0
    for n in range(ticks + 1):
        if n == ticks:
            engine.want(WANT_STOP)  # the last step ends every sounding note
        for data in engine.step():
            track.append(mido.Message.from_bytes(list(data), time=n - last))
            last = n
    track.append(mido.MetaMessage("end_of_track", time=ticks - last))
    mid = mido.MidiFile(type=0, ticks_per_beat=ppqn)
    mid.tracks.append(track)
    mid.save(path)
    return ticks


def render(program: Program, path: Path, seconds: float, settings: dict[str, Any] | None = None,
           tempo_bpm: float | None = None) -> Path:
    """Render to *path*: ``.mid``/``.midi`` runs the MIDI kernel, anything else audio."""
    s = {"sample_rate": 48000, "block_frames": 256, "channels_out": 2, "ppqn": 24, "channel": 1, **(settings or {})}
    path = Path(path)
    if path.suffix.lower() in (".mid", ".midi"):
        if not program.has("midi"):
            raise RuntimeInitError(f"{path.name}: patch.py has no midi(s, ctx, ev) kernel to render")
        render_midi(program, path, seconds, ppqn=s["ppqn"], channel=s["channel"], tempo_bpm=tempo_bpm)
    else:
        if not program.has("audio"):
            raise RuntimeInitError(f"{path.name}: patch.py has no audio(s, ctx, inp, out) kernel to render")
        render_audio(program, path, seconds, sample_rate=s["sample_rate"], block_frames=s["block_frames"],
                     channels_out=s["channels_out"], tempo_bpm=tempo_bpm)
    return path


class OfflineRuntime(BaseRuntime):
    """Registry id ``offline``: renders once when started (and on each swap).

    ``output`` defaults to ``render.wav`` (or ``render.mid`` for a patch with
    only a MIDI kernel) in the project folder; a patch with both kernels (a
    ``jack`` project) renders both, the MIDI file beside the WAV.
    """

    id = "offline"

    def __init__(self, settings: dict[str, Any], **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.renders = 0
        self.last_output: Path | None = None

    def _outputs(self, program: Program) -> list[Path]:
        """Where to render: ``output`` (default ``render.wav``, or ``render.mid`` for a patch with only
        a MIDI kernel); a patch with both kernels gets both files, the MIDI one beside the WAV."""
        path = program.project_dir / (self.settings.get("output") or
                                      ("render.wav" if program.has("audio") else "render.mid"))
        if program.has("audio") and program.has("midi") and path.suffix.lower() not in (".mid", ".midi"):
            return [path, path.with_suffix(".mid")]
        return [path]

    def _render(self, program: Program) -> None:
        for path in self._outputs(program):
            self.last_output = render(program, path, self.settings["seconds"], self.settings,
                                      self.transport.tempo_bpm)
            log.info("Rendered %.3f s to %s", self.settings["seconds"], path)
        self.renders += 1

    def _open(self, program: Program, state: np.ndarray) -> None:
        self._render(program)

    def _load(self, program: Program) -> None:
        self._render(program)

    def _snapshot(self) -> np.ndarray:
        return self.program.new_state()

    def _stats(self) -> dict[str, Any]:
        return {"renders": self.renders, "output": str(self.last_output)}
