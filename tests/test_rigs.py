"""Headless rigs in the states they spend hours in: waiting for a clock leader that starts
later, a kernel that really hangs, ``--duration``, a named server that appears late, audio
on whatever server runs (jackd, or PipeWire through ``pw-jack``) beside other clients.

livehost runs as an operator runs it, ``livehost run --headless`` under its supervisor in
a process of its own, logging JSON lines; what it plays is captured by JACK clients in
processes of their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers import (COUNTER_PATCH, ON_PIPEWIRE, CaptureProcess, LivehostRun, clear_of, pitch_hz, rig_project,
                     stuck_notes, stuck_notes_clear_of, take_clean, wait_for)
from jack_midi_capture import Capture

pytestmark = pytest.mark.jack

RATE = 48000
NOTE_ON, STOP, START, CONTINUE, CLOCK = 0x90, 0xFC, 0xFA, 0xFB, 0xF8
RESTARTED = "restarting in"

def _clock_plan(beats: int, bpm: float = 120.0) -> tuple[list, list[int], int]:
    """A leader's Start, *beats* of clock bytes and Stop: ``(plan, clock frames, stop frame)``."""
    period = RATE * 60.0 / (bpm * 24)
    clocks = [1000 + round(k * period) for k in range(beats * 24)]
    stop = clocks[-1] + round(period / 2)
    return [(0, [START])] + [(f, [CLOCK]) for f in clocks] + [(stop, [STOP])], clocks, stop


@pytest.mark.parametrize("runtime", ["midi", "jack"])
def test_a_follower_started_before_its_leader_waits_and_plays_on_its_bytes_from_its_start(tmp_path, runtime):
    """The order on stage: livehost boots, the drummer presses play later. Waiting for the
    leader's Start makes no music and is no hang: no restart, no quarantine; once the leader
    (connected by ``connect_from``) starts, every note lands on one of its clock bytes, and its
    Stop ends them. The same for the ``jack`` runtime, whose callback renders audio meanwhile."""
    proj = rig_project(tmp_path, f'[[runtime_settings]]\nruntime = "{runtime}"\nclock_source = "midi"\n'
                                 'connect_from = "rigleader:out"\nconnect_to = "rigcap:in"\n', COUNTER_PATCH)
    with Capture("rigcap") as cap:
        lh = LivehostRun(proj)
        try:
            lh.wait_for(f"Successfully initialized runtime: {runtime}")
            time.sleep(10.0)  # the band is not there yet
            waiting_restarts = len(lh.messages(RESTARTED))
            with Capture("rigleader") as lead:
                lh.wait_for("MIDI: connected rigleader:out to", 10)  # connect_from found it
                plan, clocks, stop = _clock_plan(beats=8)
                base = lead.schedule(plan)
                wait_for(lambda: (lead.clock()[0] - (base + stop + RATE // 2)) & 0xFFFFFFFF < 1 << 31, 30, 0.05)
                lead.stop()
            lh.terminate()
        finally:
            lh.kill()
        heard = [(f - base, d) for f, d in cap.stop()]
        xruns = [x - base for x in cap.xrun_frames + lead.xrun_frames]
    print(f"\nrestarts while waiting 10 s for the leader: {waiting_restarts}; "
          f"after: {len(lh.messages(RESTARTED)) - waiting_restarts}; xruns: {len(xruns)}")
    assert waiting_restarts == 0 and not lh.messages(RESTARTED) and not lh.messages("quarantined")
    ons = [f for f, d in heard if len(d) == 3 and d[0] & 0xF0 == NOTE_ON and d[2] > 0]
    expected = clocks[::6]  # a note every sixth tick, from the leader's Start
    judged = [f for f in expected if clear_of([f], xruns).all()]
    assert len(judged) >= len(expected) // 2, (len(judged), xruns)
    assert set(judged) <= set(ons), sorted(set(judged) - set(ons))[:5]  # on the byte's very frame
    assert all(f in set(clocks) for f in ons if clear_of([f], xruns).all())
    assert not [f for f in ons if f < clocks[0]]  # nothing before the leader's first clock
    assert [d for f, d in heard if d == [STOP]], "the leader's Stop was not passed on"
    assert not [f for f in ons if f > stop]  # Stop ends the music ...
    assert stuck_notes_clear_of([(f, d) for f, d in heard if f <= stop + 2 * 256], xruns) == set()  # ... and notes


HANGING_PATCH = '''\
from compiler_bridge.api import note_off, note_on


class State:
    ticks = 0
    spin = 0.0


def midi(s, ctx, ev):
    s.ticks += 1
    if ctx.tick % 6 == 0:
        note_on(ev, 100, 100)
    elif ctx.tick % 6 == 3:
        note_off(ev, 100)
    while s.ticks > 150 and s.spin >= 0.0:  # an endless loop, entered live (after its test run's 96 ticks)
        s.spin += 1.0
'''


def test_a_kernel_that_hangs_in_the_jack_callback_is_ended_quarantined_and_the_program_before_plays(tmp_path):
    proj = rig_project(tmp_path, '[[runtime_settings]]\nruntime = "midi"\nconnect_to = "hangcap:in"\nchannel = 2\n',
                       COUNTER_PATCH)
    with Capture("hangcap") as cap:
        lh = LivehostRun(proj)
        try:
            lh.wait_for("Successfully initialized runtime: midi")
            time.sleep(1.0)
            (proj / "patch.py").write_text(HANGING_PATCH)
            lh.wait_for("quarantined (its kernel hung)", 30)
            lh.wait_for("Successfully initialized runtime: midi", 30, count=2)
            time.sleep(2.0)
            lh.terminate()
        finally:
            lh.kill()
        events = cap.stop()
    log = "\n".join(r["message"] for r in lh.records())
    print(log[-2000:])
    assert "hung in a kernel" in log and "is quarantined (its kernel hung or crashed the engine): playing" in log
    hung_notes = [f for f, d in events if d[:2] == [0x91, 100]]
    assert hung_notes, "the hanging program never played"
    starts = [f for f, d in events if d == [START]]
    assert len(starts) == 2, starts  # the first run, the restarted one
    before = [f for f, _ in events if f < starts[1]]  # (the restart's All Notes Off shares its Start's frame)
    gap_s = (starts[1] - before[-1]) / RATE  # from the last event before the hang to the restart's Start
    print(f"silent for {gap_s:.2f} s from the hang (its last event) to the program before it")
    after = [d for f, d in events if f >= starts[1]]
    assert not [d for d in after if d[:2] == [0x91, 100]]  # the hanging program no longer plays ...
    assert [d for d in after if d[0] == 0x91]  # ... the one before it does
    assert stuck_notes(d for f, d in events if f < starts[1]) <= {(1, 100)}  # what the hang left on ...
    all_off = {d[0] & 15 for f, d in events if f <= starts[1] and len(d) == 3 and d[0] & 0xF0 == 0xB0 and d[1] == 123}
    assert 1 in all_off  # ... is ended by the restart's All Notes Off
    assert stuck_notes(after) == set()


def test_duration_ends_a_supervised_run_whatever_it_waits_for(tmp_path):
    """A follower with no leader waits for good: ``--duration`` still ends it, with status 0."""
    proj = rig_project(tmp_path, '[[runtime_settings]]\nruntime = "midi"\nclock_source = "midi"\n', COUNTER_PATCH)
    lh = LivehostRun(proj, "--duration", "4")
    try:
        code = lh.proc.wait(60)
    finally:
        lh.kill()
    assert code == 0 and lh.messages("Successfully initialized runtime: midi") and not lh.messages(RESTARTED)


# COUNTER_PATCH with an audio() of a constant level beside its midi()
COUNTER_AND_LEVEL = COUNTER_PATCH.replace("def midi", '''def audio(s, ctx, inp, out):
    for i in range(out.shape[0]):
        out[i, 0] = 0.1


def midi''')


def _named_server(name: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "256"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def _booted_before_its_server(proj, name: str, env: dict):
    """``livehost run`` on *proj*, booted before its named server *name*: ``(run, start)``,
    where ``start()`` starts the server; both end when the block does."""
    lh, servers = LivehostRun(proj), []
    try:
        yield lh, lambda: servers.append(_named_server(name, env))
        lh.terminate()
    finally:
        lh.kill()
        for server in servers:
            server.terminate()
            server.wait(10)


def _audio_outputs(env: dict) -> str:
    """How many audio outputs livehost has on the server *env* names (as a client there sees it)."""
    probe = subprocess.run([sys.executable, "-c", "import jack; c = jack.Client('probe', no_start_server=True); "
                            "print(len(c.get_ports('livehost', is_audio=True, is_output=True)))"],
                           env=env, capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.strip()


def _join(name: str, env: dict) -> tuple[Capture, int]:
    """A MIDI capture client *name* on the server *env* names, and how many starts failed first
    (a client joining a just-started jackd fails to activate now and then: JACK's, not ours)."""
    failed = 0
    while True:
        try:
            return Capture(name, env=env), failed
        except RuntimeError:
            failed += 1
            assert failed < 3, "the capture client could not join the named server"


@pytest.mark.skipif(ON_PIPEWIRE, reason="starts a jackd server of its own: PipeWire's JACK library joins PipeWire")
def test_a_named_server_that_appears_late_is_joined_by_both_runtimes(tmp_path):
    """``jack_server`` in livehost.toml: the audio runtime (and then the MIDI runtime, switched
    to) wait for that server, not the default one, and play on it once it starts."""
    name = f"lhnamed-{os.getpid()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name}
    toml = (f'jack_server = "{name}"\nselected_runtime = 0\n[[runtime_settings]]\nruntime = "audio"\n'
            '[[runtime_settings]]\nruntime = "midi"\nconnect_to = "namedcap:in"\n')
    proj = rig_project(tmp_path, toml, COUNTER_AND_LEVEL)
    # (with the default server in its environment: the config names the other)
    with _booted_before_its_server(proj, name, env) as (lh, start_server):
        lh.wait_for("waiting for JACK")
        time.sleep(8.0)
        started = time.time()
        start_server()
        back = lh.wait_for("JACK is back", 30)["time"] - started
        assert _audio_outputs(env) == "2"  # livehost's two audio outputs, on the named server
        midi_cap, failed_starts = _join("namedcap", env)
        # the switch once its destination is there (a settings-only save is served at once: a switch
        # saved before the capture joined found no destination now and then)
        (proj / "livehost.toml").write_text(toml.replace("selected_runtime = 0", "selected_runtime = 1"))
        with midi_cap:
            lh.wait_for("Successfully initialized runtime: midi", 30)
            time.sleep(1.0)
            events = midi_cap.stop()
    print(f"\nplaying on the named server {back:.2f} s after it started (capture starts that failed: {failed_starts})")
    assert [d for f, d in events if d[0] == 0x90]  # the MIDI runtime plays on the named server too
    assert not lh.messages(RESTARTED)


@pytest.mark.skipif(ON_PIPEWIRE, reason="starts a jackd server of its own: PipeWire's JACK library joins PipeWire")
def test_the_jack_runtime_waits_for_a_named_server_that_appears_late_and_plays_both_kinds_on_it(tmp_path):
    """The ``jack`` runtime booted before its server: it waits (no restart: waiting is no hang),
    joins the server once it starts: its audio outputs are there, and its MIDI plays there."""
    name = f"lhjoint-{os.getpid()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name}
    proj = rig_project(tmp_path, f'jack_server = "{name}"\n[[runtime_settings]]\nruntime = "jack"\n'
                                 'connect_to = "jointcap:in"\n', COUNTER_AND_LEVEL)
    with _booted_before_its_server(proj, name, env) as (lh, start_server):
        lh.wait_for("waiting for JACK")
        time.sleep(6.0)  # the server is late: several heartbeats' worth
        waiting_restarts = len(lh.messages(RESTARTED))
        start_server()
        lh.wait_for("is back after", 30)
        assert _audio_outputs(env) == "2"  # the jack runtime's audio outputs, on the named server
        midi_cap, failed_starts = _join("jointcap", env)
        with midi_cap:
            lh.wait_for("MIDI: connected", 30)
            time.sleep(1.0)
            events = midi_cap.stop()
    print(f"\nrestarts while waiting for the server: {waiting_restarts}; capture starts that failed: {failed_starts}")
    assert waiting_restarts == 0 and not lh.messages(RESTARTED)
    assert [d for f, d in events if d[0] == 0x90]  # its MIDI plays on the named server


def test_headless_audio_opens_the_servers_playback_not_another_client_and_plays_without_a_restart(tmp_path):
    """Beside a client with audio inputs (on PipeWire PortAudio lists every client as a device, and
    the first may be any program's), the audio runtime plays into the server's playback ports,
    its JACK client named livehost, for 30 s with no restart; the pitch is right."""
    proj = rig_project(tmp_path, '[[runtime_settings]]\nruntime = "audio"\n', '''import math


class State:
    phase = 0.0


def audio(s, ctx, inp, out):
    for i in range(out.shape[0]):
        out[i, 0] = out[i, 1] = 0.2 * math.sin(s.phase)
        s.phase = (s.phase + 2.0 * math.pi * 441.0 / ctx.sample_rate) % (2.0 * math.pi)
''')
    cap = CaptureProcess(2, tmp_path)
    try:
        lh = LivehostRun(proj)
        try:
            lh.wait_for("Successfully initialized runtime: audio")
            ours = cap.ports("^livehost[^:]*:out_")
            assert len(ours) == 2, cap.ports(".*")
            connections = subprocess.run(["jack_lsp", "-c", ours[0]], capture_output=True, text=True).stdout
            assert cap.info["client"] not in connections and "playback" in connections, connections
            for src, dst in zip(ours, cap.info["inputs"]):
                cap.connect(src, dst)
            time.sleep(29.0)
            x, report = take_clean(cap, 1.0)  # (a take a server xrun cut frames from bends the pitch)
            x = x[:, 0]
            lh.terminate()
        finally:
            lh.kill()
    finally:
        cap.close()
    print(f"\npitch {pitch_hz(x):.2f} Hz; xruns during the take: {report['xruns']}; "
          f"log: {[r['message'] for r in lh.records() if 'latency' in r['message']]}")
    assert not lh.messages(RESTARTED) and not lh.messages("quarantined")
    assert abs(pitch_hz(x) - 441.0) < 0.5


@pytest.mark.skipif(shutil.which("jack_midi_clock") is None, reason="jack_midi_clock is not installed "
                    "(apt-get install jack-midi-clock)")
@pytest.mark.skipif(ON_PIPEWIRE, reason="the JACK transport does not roll on PipeWire 0.3.65 (seen: jack_midi_clock "
                                        "sent no byte after transport_start)")
def test_a_real_clock_leader_that_follows_the_jack_transport_is_followed_headless(tmp_path):
    """jack_midi_clock (Debian's jack-midi-clock) sends Start and clock when the JACK transport
    rolls: livehost, booted first and connected to it by ``connect_from``, plays each note on
    one of its clock bytes, heard by a capture that hears the leader's bytes too."""
    proj = rig_project(tmp_path, '[[runtime_settings]]\nruntime = "midi"\nclock_source = "midi"\n'
                                 'connect_from = "jack_midi_clock"\nconnect_to = "mclkcap:in"\n'
                                 'send_clock = false\nsend_transport = false\n', COUNTER_PATCH)
    transport = [sys.executable, "-c", "import sys, jack; c = jack.Client('lh-transport', no_start_server=True); "
                 "c.transport_stop() if sys.argv[1] == 'stop' else (c.transport_locate(0), c.transport_start())"]
    with Capture("mclkcap") as cap:
        lh = LivehostRun(proj)
        leader = None
        try:
            lh.wait_for("Successfully initialized runtime: midi")
            subprocess.run([*transport, "stop"], check=True, timeout=30)
            leader = subprocess.Popen(["jack_midi_clock", "-b", "120", "-B", "mclkcap:in"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lh.wait_for("MIDI: connected jack_midi_clock", 10)
            time.sleep(0.5)
            subprocess.run([*transport, "start"], check=True, timeout=30)
            time.sleep(3.0)
            subprocess.run([*transport, "stop"], check=True, timeout=30)
            time.sleep(0.5)
            lh.terminate()
        finally:
            lh.kill()
            if leader is not None:
                leader.terminate()
                leader.wait(10)
        heard = cap.stop()
        xruns = cap.xrun_frames
    clocks = [f for f, d in heard if d == [CLOCK]]
    ons = [f for f, d in heard if len(d) == 3 and d[0] & 0xF0 == NOTE_ON and d[2] > 0]
    print(f"\nthe leader's clock bytes: {len(clocks)}; livehost's notes: {len(ons)}; xruns: {len(xruns)}")
    # the leader played (3 s at 120 BPM), from a Start, or a Continue where the transport had stopped before
    print(f"the leader's transport bytes: {[d for f, d in heard if d[0] in (START, CONTINUE, STOP)]}")
    assert [d for f, d in heard if d in ([START], [CONTINUE])] and len(clocks) >= 24 * 4
    judged = [f for f in ons if clear_of([f], xruns).all()]
    assert len(judged) >= len(clocks) // 6 // 2, (len(judged), len(clocks))
    assert set(judged) <= set(clocks), sorted(set(judged) - set(clocks))[:5]  # each on a byte of the leader's
    assert not lh.messages(RESTARTED) and stuck_notes(d for f, d in heard) == set()
