"""``livehost run --headless`` under its supervisor: a killed or hung host comes back,
with its state, its notes ended, and a program that keeps failing set aside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import COUNTER_PATCH, rig_project, stuck_notes, wait_for
from host.supervisor import HANG_S

LIVEHOST = [sys.executable, "-m", "host.cli"]
START, CLOCK = 0xFA, 0xF8

def _headless(proj) -> subprocess.Popen:
    return subprocess.Popen([*LIVEHOST, "run", str(proj), "--headless"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _host_child(supervisor: subprocess.Popen) -> int | None:
    """The pid of the supervisor's ``livehost run --supervised`` child."""
    for task in os.listdir(f"/proc/{supervisor.pid}/task"):
        for pid in open(f"/proc/{supervisor.pid}/task/{task}/children").read().split():
            try:
                cmdline = open(f"/proc/{pid}/cmdline").read()
            except (FileNotFoundError, ProcessLookupError):  # a child that ended between the two reads (a restarted host)
                continue
            if "--supervised" in cmdline:
                return int(pid)
    return None


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


@pytest.mark.jack
def test_a_killed_host_is_restarted_its_notes_ended_and_its_state_kept(tmp_path):
    from jack_midi_capture import Capture

    proj = rig_project(tmp_path, '[[runtime_settings]]\nruntime = "midi"\nchannel = 3\nconnect_to = "supcap:in"\n',
                       COUNTER_PATCH)
    with Capture("supcap") as cap:
        sup = _headless(proj)
        try:
            wait_for(lambda: _host_child(sup) is not None and (proj / ".livehost" / "state.npz").exists(), 60)
            time.sleep(1.0)  # notes are sounding half the time: the kill may well leave one on
            os.kill(_host_child(sup), signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(lambda: _host_child(sup) is not None, 30)
            time.sleep(3.0)
        finally:
            err = _stop(sup)
        events = cap.stop()
    print(f"killed, then stopped {time.monotonic() - killed_at:.1f} s later")
    assert sup.returncode == 0 and "was killed by SIGKILL; restarting" in err, err
    starts = [i for i, (_, d) in enumerate(events) if d == [START]]
    assert len(starts) == 2, events  # the first run, and the restarted one
    before, after = events[:starts[1]], events[starts[1]:]
    clocks_before = [f for f, d in before if d == [CLOCK]]
    gap_s = (after[0][0] - clocks_before[-1]) / 48000
    print(f"MIDI clock silent for {gap_s:.2f} s across the kill and the restart")
    assert gap_s < 2.0 + 0.5  # the restart itself is bounded by 2 s; the kill lands within half a second of here
    restart_frame = after[0][0]
    all_off = {d[0] & 15 for f, d in events if f == restart_frame and len(d) == 3 and d[0] & 0xF0 == 0xB0
               and d[1] == 123}
    assert all_off == set(range(16)), events[starts[1] - 20:starts[1] + 2]  # at the restart, before Start
    sounding = stuck_notes(d for f, d in events if f < restart_frame)
    assert all(ch == 2 for ch, _ in sounding)  # what the kill left on, on the rig's channel: ended above
    notes_after = [d[1] for _, d in after if d[:1] == [0x92]]
    first_before = [d[1] for _, d in before if d[:1] == [0x92]][0]
    assert first_before == 30 and notes_after[0] != 30  # the counter went on from the snapshot, not from 0
    assert stuck_notes(d for _, d in after) == set()


HANGING_PATCH = '''class State:
    ticks = 0
    spin = 0.0


def midi(s, ctx, ev):
    s.ticks += 1
    while s.ticks > 150 and s.spin >= 0.0:  # an endless loop, entered live (after its test run's 96 ticks)
        s.spin += 1.0
'''


def test_a_hung_engine_is_ended_and_restarted_and_a_program_that_keeps_hanging_is_set_aside(tmp_path):
    good = COUNTER_PATCH
    proj = rig_project(tmp_path, '[[runtime_settings]]\nruntime = "logic"\n', good)
    sup = _headless(proj)
    try:
        wait_for(lambda: (proj / ".livehost" / "compiled.json").exists(), 60)
        first = (proj / ".livehost" / "compiled.json").read_text()
        time.sleep(1.0)
        (proj / "patch.py").write_text(HANGING_PATCH)
        wait_for(lambda: (proj / ".livehost" / "compiled.json").read_text() != first, 60)
        wait_for(lambda: (proj / ".livehost" / "previous.json").exists(), 30)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and sup.poll() is None:
            time.sleep(0.5)
            if _host_child(sup) is not None and b"quarantine" in open(f"/proc/{_host_child(sup)}/cmdline", "rb").read():
                time.sleep(2.0)  # the quarantined start plays the program before
                break
    finally:
        err = _stop(sup)
    print(err[-3000:])
    assert f"hung in a kernel (a call did not return for {HANG_S:g} s) and was ended" in err
    assert "quarantined (its kernel hung)" in err
    assert "is quarantined (its kernel hung or crashed the engine): playing" in err
    assert sup.returncode == 0 and "Traceback" not in err
