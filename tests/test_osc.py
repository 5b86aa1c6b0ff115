"""OSC control: a client on loopback switches runtimes, writes state, sets tempo;
hostile datagrams are survived with the host still answering."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from compiler_bridge.compile import compile_project
from helpers import (CaptureProcess, LivehostRun, follow_livehost, pitch_hz, portaudio_ports,
                     save, stuck_notes, take_clean, wait_for)
from host import Host
from host.osc import OscServer

ROOT = Path(__file__).resolve().parents[1]


def message(address: str, *args) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def bundle(at_unix: float, address: str, *args) -> bytes:
    builder = OscBundleBuilder(at_unix)
    builder.add_content(OscMessage(message(address, *args)))
    return builder.build().dgram


class Client:
    """A UDP OSC client on loopback, as a controller app is."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)
        self.to = ("127.0.0.1", port)

    def send(self, address_or_bytes, *args) -> None:
        data = address_or_bytes if isinstance(address_or_bytes, bytes) else message(address_or_bytes, *args)
        self.sock.sendto(data, self.to)

    def stats(self) -> dict:
        self.send("/livehost/stats")
        reply = OscMessage(self.sock.recvfrom(65536)[0])
        assert reply.address == "/livehost/stats"
        return json.loads(reply.params[0])

    def close(self) -> None:
        self.sock.close()


def _client_of(lh: LivehostRun) -> Client:
    """A client of the port ``livehost run --osc-port 0`` took (it logs which)."""
    listening = lh.wait_for("OSC control on udp://127.0.0.1:")["message"]
    return Client(int(re.search(r"udp://127\.0\.0\.1:(\d+)", listening).group(1)))


@pytest.fixture
def logic_host(project):
    """A host playing examples/sequencer on the device-free ``logic`` runtime, with an OSC server."""
    seq = project("sequencer")
    toml = seq / "livehost.toml"
    toml.write_text(toml.read_text().replace('runtime = "midi"', 'runtime = "logic"'))
    compile_project(seq)
    with Host(seq, debounce_s=0.02) as host, OscServer(host, 0) as server:
        wait_for(lambda: host.runtime is not None and host.runtime.id == "logic")
        client = Client(server.port)
        try:
            yield seq, host, server, client
        finally:
            client.close()


def test_state_writes_tempo_and_swap_on_reach_the_host_and_tempo_holds_until_the_file_changes_it(logic_host):
    seq, host, server, client = logic_host
    client.send("/livehost/state/notes", 2, 77)  # element 2 of an array field
    client.send("/livehost/state/velocity", 64)
    wait_for(lambda: any(e[1] == 0x99 and e[2] == 77 and e[3] == 64 for e in list(host.runtime.events)), 10)
    client.send("/livehost/tempo", 150.0)
    assert client.stats()["tempo_bpm"] == 150.0
    client.send("/livehost/swap_on", "bar")

    patch = seq / "patch.py"
    save(patch, patch.read_text().replace("velocity = 100", "velocity = 90"))  # a save of the patch ...
    compiled = compile_project(seq)
    host.request(compiled)
    assert host.wait_idle()
    assert host.runtime.program.source_hash == compiled["source_hash"]
    assert client.stats()["tempo_bpm"] == 150.0  # ... keeps what OSC set
    assert host.runtime.program.config["swap_on"] == "bar"

    toml = seq / "livehost.toml"
    save(toml, toml.read_text().replace("tempo_bpm = 120.0", "tempo_bpm = 100.0"))  # the file says: its word
    host.request(compile_project(seq))
    assert host.wait_idle()
    assert client.stats()["tempo_bpm"] == 100.0 and host.runtime.program.config["swap_on"] == "bar"
    wait_for(lambda: server.applied == 7)  # (counted once its reply is out)
    assert server.rejected == 0


def test_a_future_bundle_waits_for_its_time_without_blocking_what_comes_after_it(logic_host):
    _, host, server, client = logic_host
    client.send(bundle(time.time() + 0.5, "/livehost/tempo", 90.0))
    assert client.stats()["tempo_bpm"] == 120.0  # answered at once: the bundle waits apart
    wait_for(lambda: host.transport.tempo_bpm == 90.0, 5)
    client.send(bundle(time.time() + 3600, "/livehost/tempo", 60.0))
    client.stats()
    assert server.rejected == 1 and host.transport.tempo_bpm == 90.0


def test_bad_messages_are_logged_once_and_ignored(logic_host, caplog):
    _, host, server, client = logic_host
    caplog.set_level(logging.WARNING, "livehost.osc")
    bad = [("/livehost/tempo", "fast"), ("/livehost/tempo", 5000.0), ("/livehost/tempo",),
           ("/livehost/state/nope", 1.0), ("/livehost/state/notes", 9, 1.0), ("/livehost/runtime", "audio"),
           ("/livehost/runtime", 7), ("/livehost/swap_on", "never"), ("/elsewhere", 1)]
    for args in bad * 2:
        client.send(*args)
    client.send(b"\x00garbage")
    assert client.stats()["runtime"] == "logic" and host.transport.tempo_bpm == 120.0
    wait_for(lambda: server.rejected == 2 * len(bad) + 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "livehost.osc"]
    assert len(lines) == len(bad) + 1, lines  # each kind once
    assert "OSC /livehost/state/nope ignored: no state field 'nope' (fields: notes, velocity, step)" in lines
    assert any(line.startswith("OSC /livehost/state/notes ignored: notes[9] out of range (size 4)") for line in lines)
    assert any("no [[runtime_settings]] entry for runtime 'audio'" in line for line in lines)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # numba reports it so
def test_a_state_write_that_sends_the_kernel_outside_its_array_is_a_kernel_fault_not_a_crash(logic_host):
    seq, host, server, client = logic_host
    client.send("/livehost/state/step", 1_000_000)  # the sequencer plays s.notes[s.step]
    wait_for(lambda: host.runtime.stats()["kernel_errors"] == 1, 5)
    assert client.stats()["runtime"] == "logic"  # the host answers; that program is silent
    events = host.runtime.stats()["events_out"]
    time.sleep(0.3)
    assert host.runtime.stats()["events_out"] == events
    patch = seq / "patch.py"  # the next save plays again
    save(patch, patch.read_text().replace("velocity = 100", "velocity = 90"))
    host.request(compile_project(seq))
    assert host.wait_idle()
    wait_for(lambda: host.runtime.stats()["events_out"] > events + 4, 5)
    assert host.runtime.stats()["kernel_errors"] == 1


_ADDRESSES = st.one_of(st.sampled_from(["/livehost/tempo", "/livehost/runtime", "/livehost/swap_on",
                                        "/livehost/state/notes", "/livehost/state/step", "/livehost/state/",
                                        "/livehost/stats", "/livehost/", "/"]),
                       st.text(max_size=40).map(lambda t: "/" + t))
_ARGS = st.lists(st.one_of(st.integers(-2**31, 2**31 - 1), st.floats(width=32), st.text(max_size=20),
                           st.binary(max_size=20), st.booleans(), st.none()), max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), st.tuples(_ADDRESSES, _ARGS)))
def test_hostile_datagrams_are_survived_and_the_host_still_answers(logic_host, caplog, data):
    _, host, server, client = logic_host
    if isinstance(data, tuple):
        address, args = data
        try:
            data = message(address, *args)
        except Exception:  # python-osc cannot build it: send its raw address bytes instead
            data = address.encode("utf-8", "replace")[:300]
    before = server.received
    client.send(data)
    wait_for(lambda: server.received > before)
    assert not [r for r in caplog.records if r.name == "livehost.osc" and r.levelno >= logging.ERROR]
    stats = client.stats()  # still answering, and still playing
    assert stats["runtime"] == "logic" and 20.0 <= stats["tempo_bpm"] <= 999.0
    assert host.runtime is not None and host.runtime.id == "logic"


# --- as a performer plays it: livehost run, a controller app, captures in other processes ---


def test_under_livehost_run_a_kernel_that_raises_while_playing_is_one_log_line(project):
    seq = project("sequencer")
    toml = seq / "livehost.toml"
    toml.write_text(toml.read_text().replace('runtime = "midi"', 'runtime = "logic"'))
    lh = LivehostRun(seq, "--osc-port", "0")
    client = None
    try:
        lh.wait_for("Successfully initialized runtime: logic")
        client = _client_of(lh)
        for _ in range(3):
            client.send("/livehost/state/step", 1_000_000)  # the sequencer plays s.notes[s.step]
        lh.wait_for("A kernel raised IndexError: index is out of bounds while playing")
        lh.wait_for("kernel exceptions (the kernel is muted until the next save)")
        assert client.stats()["runtime"] == "logic"
        lh.terminate()
    finally:
        if client is not None:
            client.close()
        lh.kill()
    text = lh.log_path.read_text()
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert len(lh.messages("A kernel raised")) == 1

OSC_TOML = '''\
selected_runtime = 0

[[runtime_settings]]
runtime = "audio"

[[runtime_settings]]
runtime = "midi"
connect_to = "osccap:in"
'''


@pytest.mark.jack
def test_an_osc_client_switches_the_runtime_and_sets_freq_hz_under_livehost_run(project, tmp_path):
    from jack_midi_capture import Capture

    sine = project("sine")
    patch = sine / "patch.py"
    patch.write_text("from compiler_bridge.api import note_off, note_on\n" + patch.read_text() +
                     "\n\ndef midi(s, ctx, ev):\n    if ctx.tick % 6 == 0:\n        note_on(ev, 60, 90)\n"
                     "    elif ctx.tick % 6 == 3:\n        note_off(ev, 60)\n")
    (sine / "livehost.toml").write_text(OSC_TOML)
    cap = CaptureProcess(1, tmp_path)
    before = portaudio_ports(cap)
    lh = LivehostRun(sine, "--osc-port", "0", exit_s=5.0)  # any free port: it says which
    client = None
    try:
        with Capture("osccap") as midi_cap:
            lh.wait_for("Successfully initialized runtime: audio")
            client = _client_of(lh)
            follow_livehost(cap, before)
            takes = [pitch_hz(take_clean(cap, 0.3)[0][:, 0])]
            client.send("/livehost/state/freq_hz", 660.0)
            time.sleep(0.1)
            takes.append(pitch_hz(take_clean(cap, 0.3)[0][:, 0]))
            client.send("/livehost/runtime", "midi")
            lh.wait_for("Successfully initialized runtime: midi", 30)
            assert client.stats()["runtime"] == "midi"
            time.sleep(0.6)  # a note every sixteenth at 120 BPM: about five
            client.send("/livehost/runtime", 0)
            lh.wait_for("Successfully initialized runtime: audio", 30, count=2)
            events = midi_cap.stop()
        assert client.stats()["runtime"] == "audio"
        lh.terminate()
    finally:
        if client is not None:
            client.close()
        lh.kill()
        cap.close()
    print(f"\npitches heard: {[round(p, 2) for p in takes]}")
    assert takes == pytest.approx([440.0, 660.0], abs=0.5)
    assert sum(1 for _, d in events if d[0] == 0x90 and d[2] > 0) >= 3
    assert stuck_notes(d for _, d in events) == set()


def test_inspect_shows_the_live_values_a_running_host_answers_with(logic_host):
    """``livehost inspect --osc-port`` asks the running host (``/livehost/state``) for its values."""
    from host.inspect import inspect, show

    seq, host, server, client = logic_host
    client.send("/livehost/state/velocity", 77)
    client.send("/livehost/state/notes", 1, 40)
    wait_for(lambda: host.state_values()["fields"]["velocity"] == 77 and host.state_values()["fields"]["notes"][1] == 40)
    info = inspect(seq, server.port)
    fields = {f["name"]: f for f in info["state"]}
    assert fields["velocity"]["live"] == 77 and fields["velocity"]["default"] == 100
    assert fields["notes"]["live"] == [36, 40, 42, 38]
    assert info["live"] == {"port": server.port, "program": host.runtime.program.source_hash}
    assert "now 77" in show(info)
    unanswered = inspect(seq, _free_port())  # no host there: the file's view, no live values
    assert unanswered["live"] is None and "live" not in unanswered["state"][0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
