"""``livehost render … --plot OUT.png``: a picture of a render.

Audio: the waveform of each channel and a spectrogram of the first. MIDI: a
piano roll (one bar per note, its velocity as its shade) over the tempo's
beat grid, with a tick line every clock tick (24 per beat). Needs matplotlib
(the ``plot`` extra); without it, one line says what to install.
"""

from __future__ import annotations

from pathlib import Path

from compiler_bridge.errors import HostError


class PlotUnavailable(HostError):
    """matplotlib is not installed."""


def plot_render(rendered: Path, out: Path) -> Path:
    """Draw *rendered* (a WAV or a Standard MIDI File) into the PNG *out*; return *out*."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install -e '.[plot]'") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig = _midi(plt, rendered) if rendered.suffix.lower() == ".mid" else _audio(plt, rendered)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _audio(plt, path: Path):
    import numpy as np
    import soundfile as sf

    x, rate = sf.read(path, dtype="float32", always_2d=True)
    channels = x.shape[1]
    fig, axes = plt.subplots(channels + 1, 1, figsize=(10, 2.2 * (channels + 1)), sharex=True)
    step = max(len(x) // 20000, 1)  # enough points for the picture's width
    for c in range(channels):
        axes[c].plot(np.arange(0, len(x), step) / rate, x[::step, c], linewidth=0.5)
        axes[c].set_ylim(-1.05, 1.05)
        axes[c].set_ylabel(f"ch {c + 1}")
    spec = axes[-1]
    spec.specgram(x[:, 0], Fs=rate, NFFT=1024, noverlap=512, cmap="magma")
    spec.set_ylabel("Hz")
    spec.set_xlabel("seconds")
    axes[0].set_title(f"{path.name}: {len(x) / rate:.2f} s at {rate} Hz")
    fig.tight_layout()
    return fig


def _midi(plt, path: Path):
    import mido

    song = mido.MidiFile(path)
    ppqn = song.ticks_per_beat
    notes, sounding, tick = [], {}, 0
    for message in mido.merge_tracks(song.tracks):
        tick += message.time
        if message.type == "note_on" and message.velocity > 0:
            sounding[(message.channel, message.note)] = (tick, message.velocity)
        elif message.type in ("note_off", "note_on") and (message.channel, message.note) in sounding:
            start, velocity = sounding.pop((message.channel, message.note))
            notes.append((start / ppqn, (tick - start) / ppqn, message.note, velocity))
    beats = tick / ppqn
    fig, ax = plt.subplots(figsize=(10, 4))
    for b in range(int(beats * 24) + 1):  # the clock: 24 ticks a beat, a beat line darker
        ax.axvline(b / 24, color="0.75" if b % 24 == 0 else "0.93", linewidth=0.8 if b % 24 == 0 else 0.4, zorder=0)
    for start, length, note, velocity in notes:
        ax.barh(note, max(length, 1 / 24), left=start, height=0.8, color=plt.cm.viridis(velocity / 127), zorder=2)
    ax.set_xlim(0, max(beats, 1.0))
    ax.set_xlabel("beats (clock ticks: 24 a beat)")
    ax.set_ylabel("note")
    ax.set_title(f"{path.name}: {len(notes)} notes over {beats:g} beats")
    fig.tight_layout()
    return fig
