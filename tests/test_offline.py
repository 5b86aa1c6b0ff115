"""Offline renders: exact samples, exact MIDI events, byte-identical files."""

import subprocess
import sys

import mido
import numpy as np
import pytest
import soundfile as sf

from compiler_bridge.compile import compile_project
from compiler_bridge.program import Program
from helpers import expected_sequencer_events, stuck_notes
from runtimes.offline import render


def test_sine_render_is_the_analytic_sine(project, tmp_path):
    program = Program.from_compiled(compile_project(project("sine")))
    out = render(program, tmp_path / "a.wav", 1.0)
    data, rate = sf.read(out, dtype="float32")
    assert rate == 48000 and data.shape == (48000, 2)
    n = np.arange(48000)
    expected = (0.2 * np.sin(2 * np.pi * 440.0 * n / 48000)).astype(np.float32)
    np.testing.assert_allclose(data[:, 0], expected, rtol=0, atol=np.finfo(np.float32).eps)
    np.testing.assert_array_equal(data[:, 0], data[:, 1])


def test_renders_are_byte_identical(project, tmp_path):
    program = Program.from_compiled(compile_project(project("sine")))
    a = render(program, tmp_path / "a.wav", 0.5).read_bytes()
    b = render(program, tmp_path / "b.wav", 0.5).read_bytes()
    assert a == b and b"PEAK" not in a


def test_partial_last_block_is_rendered(project, tmp_path):
    program = Program.from_compiled(compile_project(project("sine")))
    data, _ = sf.read(render(program, tmp_path / "a.wav", 0.01, {"block_frames": 64}), dtype="float32")
    assert data.shape == (480, 2)


def midi_events(path):
    mid = mido.MidiFile(path)
    t = 0
    out = []
    for msg in mid.tracks[0]:
        t += msg.time
        if not msg.is_meta:
            out.append((t, msg))
    return mid, out


def test_sequencer_midi_render_has_exact_events(project, tmp_path):
    program = Program.from_compiled(compile_project(project("sequencer")))
    path = render(program, tmp_path / "s.mid", 2.0, {"channel": 10})  # 4 beats at 120 BPM = 96 ticks
    mid, events = midi_events(path)
    assert mid.ticks_per_beat == 24
    assert mid.tracks[0][0] == mido.MetaMessage("set_tempo", tempo=500000, time=0)
    notes = [(t, m.type, m.note) for t, m in events if m.type in ("note_on", "note_off")]
    assert notes == expected_sequencer_events(96)
    assert all(m.channel == 9 for _, m in events)
    assert all(m.velocity == 100 for _, m in events if m.type == "note_on")


def test_midi_render_never_leaves_a_note_on(project, tmp_path):
    program = Program.from_compiled(compile_project(project("sequencer")))
    _, events = midi_events(render(program, tmp_path / "s.mid", 0.5 + 2 / 48))  # 26 ticks: the note from tick 24 is still on
    assert stuck_notes(m.bytes() for _, m in events) == set()
    assert events[-1][1] == mido.Message("control_change", channel=0, control=123, value=0)
    assert events[-2][1].type == "note_off" and events[-2][0] == 26


def test_cli_render_writes_both_kinds(project, tmp_path):
    switch = project("switch")
    for name in ("out.wav", "out.mid"):
        done = subprocess.run([sys.executable, "-m", "host.cli", "render", str(switch), "-o", str(tmp_path / name),
                               "--seconds", "1"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"rendered 1 s to {tmp_path / name}" in done.stdout
    assert sf.info(str(tmp_path / "out.wav")).frames == 48000
    assert len(mido.MidiFile(tmp_path / "out.mid").tracks[0]) > 10


@pytest.mark.parametrize("name", ["sine", "sequencer", "switch", "fm", "input_effect", "keys"])
def test_every_example_compiles_and_renders(project, tmp_path, name):
    compiled = compile_project(project(name))
    program = Program.from_compiled(compiled)
    assert compiled["warnings"] == []
    for kernel, suffix in (("audio", ".wav"), ("midi", ".mid")):
        if program.has(kernel):
            out = render(program, tmp_path / f"{name}{suffix}", 1.0)
            if kernel == "audio":
                data, rate = sf.read(out, dtype="float32")
                assert rate == 48000 and data.shape == (48000, 2)
                # offline, an effect hears silence and nobody plays the keys
                assert (np.abs(data).max() > 0.0) == (name not in ("input_effect", "keys"))
            else:
                track = mido.MidiFile(out).tracks[0]
                assert sum(m.time for m in track) == round(program.tempo_bpm / 60 * 24)  # one second of ticks
                assert any(m.type == "note_on" for m in track) == (name != "keys") and stuck_notes(m.bytes() for m in track
                                                                               if not m.is_meta) == set()


def test_an_offline_render_of_a_project_with_both_kernels_writes_both_files(project):
    from compiler_bridge.settings import SCHEMAS
    from runtimes.offline import OfflineRuntime

    program = Program.from_compiled(compile_project(project("switch")))
    rt = OfflineRuntime(SCHEMAS["offline"].resolve({"seconds": 1.0}))
    rt.start(program, program.new_state())
    rt.close()
    data, rate = sf.read(program.project_dir / "render.wav", dtype="float32")
    assert data.shape == (48000, 2) and np.abs(data).max() > 0.0
    track = mido.MidiFile(program.project_dir / "render.mid").tracks[0]
    assert any(m.type == "note_on" for m in track) and not stuck_notes(m.bytes() for m in track if not m.is_meta)


def test_midi_kernels_see_frames_per_tick_and_the_tick_frame(tmp_path):
    from runtimes.base import offer
    from runtimes.ticks.engine import TickEngine
    from runtimes.ticks.slots import WANT_RUN

    proj = tmp_path / "ctx"
    proj.mkdir()
    (proj / "livehost.toml").write_text('[[runtime_settings]]\nruntime = "logic"\n')
    (proj / "patch.py").write_text("class State:\n    frames = 0\n    frame = 0\n\n\n"
                                   "def midi(s, ctx, ev):\n    s.frames = ctx.block_frames\n    s.frame = ctx.frame_time\n")
    program = Program.from_compiled(compile_project(proj))
    settings = {"ppqn": 24, "channel": 1, "send_clock": False, "send_transport": False}
    engine = TickEngine(settings, 48000.0, 120.0)  # 48000 * 60 / (120 * 24) = 1000 frames per tick
    engine.first(offer(program))
    engine.want(WANT_RUN)
    for _ in range(6):  # ticks 0..5
        engine.step()
    state = engine.state()
    assert int(state["frames"][0]) == 1000 and int(state["frame"][0]) == 5000
