"""One project switched between audio and MIDI mid-performance, through the host.

examples/switch plays on the audio runtime, is switched to the MIDI runtime by
a save of ``selected_runtime``, then back: state is carried across both
switches, the audio goes silent while MIDI plays, and no note stays on.
"""

import time

import numpy as np
import pytest

from compiler_bridge.compile import compile_project
from helpers import CaptureProcess, our_ports, stuck_notes, wait_for
from host import Host
from jack_midi_capture import Capture

NOTE_ON, NOTE_OFF, STOP = 0x90, 0x80, 0xFC


def select(project, index: int) -> None:
    toml = project / "livehost.toml"
    lines = [f"selected_runtime = {index}" if line.startswith("selected_runtime") else line
             for line in toml.read_text().splitlines()]
    toml.write_text("\n".join(lines) + "\n")
    compile_project(project)


def record(cap: CaptureProcess, seconds: float) -> np.ndarray:
    cap.start()
    time.sleep(seconds)
    return cap.stop()[0]


@pytest.mark.jack
def test_switch_audio_to_midi_and_back_carries_state_and_leaves_nothing_on(project, tmp_path):
    switch = project("switch")
    toml = switch / "livehost.toml"
    toml.write_text(toml.read_text().replace('runtime = "midi"', 'runtime = "midi"\nconnect_to = "swcap:in"'))
    compile_project(switch)
    audio_cap = CaptureProcess(1, tmp_path)
    try:
        with Capture("swcap") as midi_cap, Host(switch, debounce_s=0.02) as host:
            wait_for(lambda: host.runtime is not None and host.runtime.id == "audio")
            for src, dst in zip(our_ports(audio_cap, "out"), audio_cap.info["inputs"]):
                audio_cap.connect(src, dst)
            playing = record(audio_cap, 0.5)
            # A live change of state on the audio thread, carried into MIDI below.
            host.runtime.controls.push(*host.runtime.program.layout.target("notes", 0), 50)
            wait_for(lambda: host.runtime.controls.pending() == 0)  # taken at a block boundary

            select(switch, 1)
            wait_for(lambda: host.runtime is not None and host.runtime.id == "midi")
            wait_for(lambda: host.runtime.stats()["events_out"] >= 12)
            silent = record(audio_cap, 0.3)

            select(switch, 0)
            wait_for(lambda: host.runtime is not None and host.runtime.id == "audio")
            back = host.runtime.snapshot()[1]
        events = midi_cap.stop()
    finally:
        audio_cap.close()

    assert np.abs(playing).max() > 0.05 and np.isfinite(playing).all()
    assert np.abs(silent).max() == 0.0  # the audio runtime was destroyed, not left playing
    notes = [d for _, d in events if d and d[0] & 0xF0 in (NOTE_ON, NOTE_OFF)]
    ons = [d[1] for d in notes if d[0] & 0xF0 == NOTE_ON and d[2] > 0]
    assert 50 in ons  # the state changed on the audio thread reached the MIDI kernel
    assert stuck_notes(notes) == set()
    assert events[-1][1] == [STOP]
    assert int(back["notes"][0][0]) == 50  # and came back to the audio runtime
