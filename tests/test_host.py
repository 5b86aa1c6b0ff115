"""Host selection, fallback, lock, latest-wins and watching, with exact log lines.

Test runtimes record their calls; the registry is the real ``Registry``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time

import pytest

from compiler_bridge.compile import compile_project
from compiler_bridge.settings import RuntimeSchema, boolean, integer
from helpers import wait_for
from host import Host
from runtimes.base import BaseRuntime
from runtimes.registry import Registry, RegistryEntry

EVENTS: list[tuple] = []
ACTIVE = {"now": 0, "max": 0}
GATE = threading.Event()


class Recorder(BaseRuntime):
    def _open(self, program, state):
        EVENTS.append(("open", self.id, program.source_hash, float(state["step"][0])))
        if self.settings["slow"]:
            assert GATE.wait(30)
        if self.settings["fail"]:
            raise OSError("device is gone")
        self.state = state
        ACTIVE["now"] += 1
        ACTIVE["max"] = max(ACTIVE["max"], ACTIVE["now"])

    def _load(self, program):
        EVENTS.append(("load", self.id, program.source_hash))
        self.state = program.layout.carry(self.program.layout, self.state)

    def _update_settings(self, settings):
        EVENTS.append(("settings", self.id, settings["size"]))

    def _snapshot(self):
        return self.state.copy()

    def _close(self):
        EVENTS.append(("close", self.id))
        ACTIVE["now"] -= 1


def recorder(id_):
    schema = RuntimeSchema(id_, {"fail": False, "slow": False, "size": 1, "port": 0},
                           {"fail": boolean, "slow": boolean, "size": integer(1, 9), "port": integer(0, 9)},
                           frozenset({"size"}))
    return RegistryEntry(id_, schema, lambda settings, **kw: type(id_, (Recorder,), {"id": id_})(settings, **kw))


REGISTRY = Registry([recorder("rec_a"), recorder("rec_b"), recorder("rec_c")], "rec_a")


@pytest.fixture(autouse=True)
def clean():
    EVENTS.clear()
    GATE.clear()
    ACTIVE.update(now=0, max=0)
    yield
    assert ACTIVE["max"] <= 1, "two runtimes were active at once"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Two builds of the sequencer (different velocity defaults)."""
    import shutil

    from conftest import EXAMPLES

    root = tmp_path_factory.mktemp("seq") / "sequencer"
    shutil.copytree(EXAMPLES / "sequencer", root)
    first = compile_project(root)
    patch = root / "patch.py"
    patch.write_text(patch.read_text().replace("velocity = 100", "velocity = 90"))
    second = compile_project(root)
    (root / ".livehost" / "compiled.json").unlink()  # tests hand the host their own requests
    return root, first, second


def with_runtimes(compiled: dict, entries: list[dict], selected: int = 0) -> dict:
    c = copy.deepcopy(compiled)
    c["config"]["runtime_settings"] = entries
    c["config"]["selected_runtime"] = selected
    return c


def sequencer_on(project, runtime_lines: str):
    """examples/sequencer copied, its first runtime entry (midi) replaced by *runtime_lines*."""
    seq = project("sequencer")
    toml = seq / "livehost.toml"
    toml.write_text(toml.read_text().replace('runtime = "midi"', runtime_lines))
    return seq


def host_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "livehost.host"]


def apply(host: Host, compiled: dict) -> None:
    host.request(compiled)
    assert host.wait_idle()


@pytest.fixture
def host(compiled, caplog):
    caplog.set_level(logging.INFO, logger="livehost")
    root, _, _ = compiled
    with Host(root, registry=REGISTRY, watch=False) as h:
        yield h


def test_selection_and_switch_log_exact_lines_and_carry_state(host, compiled, caplog):
    _, first, _ = compiled
    both = [{"runtime": "rec_a"}, {"runtime": "rec_b"}]
    apply(host, with_runtimes(first, both, 0))
    host.runtime.state["step"] = 3.0
    apply(host, with_runtimes(first, both, 1))
    assert host_lines(caplog) == [
        "Requesting runtime: rec_a", "Loaded runtime from registry: rec_a", "Successfully initialized runtime: rec_a",
        "Requesting runtime: rec_b", "Loaded runtime from registry: rec_b", "Destroying runtime: rec_a",
        "Successfully initialized runtime: rec_b",
    ]
    h = first["source_hash"]
    assert EVENTS == [("open", "rec_a", h, 0.0), ("close", "rec_a"), ("open", "rec_b", h, 3.0)]
    assert host.runtime.id == "rec_b" and host.settings["size"] == 1  # defaults merged


def test_unknown_runtime_at_start_falls_back_to_default(host, compiled, caplog):
    apply(host, with_runtimes(compiled[1], [{"runtime": "nope"}]))
    assert host_lines(caplog) == ["Requesting runtime: nope", "Unknown runtime nope, falling back to default: rec_a",
                                  "Loaded runtime from registry: rec_a", "Successfully initialized runtime: rec_a"]
    assert host.runtime.id == "rec_a"


def test_out_of_range_index_falls_back_to_default(host, compiled, caplog):
    apply(host, with_runtimes(compiled[1], [{"runtime": "rec_b"}], selected=4))
    assert "Unknown runtime <runtime_settings[4]>, falling back to default: rec_a" in host_lines(caplog)
    assert host.runtime.id == "rec_a"


def test_unknown_runtime_while_playing_is_a_bad_save(host, compiled, caplog):
    _, first, second = compiled
    apply(host, with_runtimes(first, [{"runtime": "rec_b"}]))
    playing = host.runtime
    apply(host, with_runtimes(second, [{"runtime": "rec_bb"}]))
    assert host.runtime is playing and playing.program.source_hash == first["source_hash"]
    assert host_lines(caplog)[-2:] == ["Requesting runtime: rec_bb",
                                       "Unknown runtime rec_bb: a bad save; rec_b keeps playing"]
    assert ("close", "rec_b") not in EVENTS


def test_same_runtime_hot_swaps_and_applies_live_settings(host, compiled, caplog):
    _, first, second = compiled
    apply(host, with_runtimes(first, [{"runtime": "rec_a"}]))
    playing = host.runtime
    playing.state["step"] = 2.0
    apply(host, with_runtimes(second, [{"runtime": "rec_a", "size": 5}]))
    assert host.runtime is playing
    assert EVENTS[1:] == [("settings", "rec_a", 5), ("load", "rec_a", second["source_hash"])]
    assert float(playing.state["step"][0]) == 2.0  # kept: same name, dtype and default
    assert float(playing.state["velocity"][0]) == 90  # changed default applied
    assert "Destroying runtime: rec_a" not in host_lines(caplog)


def test_non_live_setting_change_recreates_the_runtime(host, compiled, caplog):
    _, first, _ = compiled
    apply(host, with_runtimes(first, [{"runtime": "rec_a"}]))
    host.runtime.state["step"] = 1.0
    apply(host, with_runtimes(first, [{"runtime": "rec_a", "port": 3}]))
    assert [e[0] for e in EVENTS] == ["open", "close", "open"]
    assert EVENTS[2][3] == 1.0 and host.settings["port"] == 3


def test_failed_init_logs_why_and_restores_the_previous_runtime(host, compiled, caplog):
    _, first, _ = compiled
    apply(host, with_runtimes(first, [{"runtime": "rec_a"}, {"runtime": "rec_b", "fail": True}], 0))
    host.runtime.state["step"] = 2.0
    apply(host, with_runtimes(first, [{"runtime": "rec_a"}, {"runtime": "rec_b", "fail": True}], 1))
    lines = host_lines(caplog)
    assert "Failed to initialize runtime: rec_b: device is gone" in lines
    assert lines[-2:] == ["Restoring runtime: rec_a", "Successfully initialized runtime: rec_a"]
    assert host.runtime.id == "rec_a" and float(host.runtime.state["step"][0]) == 2.0


def test_failed_init_at_start_leaves_the_host_up(host, compiled, caplog):
    _, first, _ = compiled
    apply(host, with_runtimes(first, [{"runtime": "rec_b", "fail": True}]))
    assert host.runtime is None
    apply(host, with_runtimes(first, [{"runtime": "rec_c"}]))
    assert host.runtime.id == "rec_c"


def test_latest_request_wins_while_one_initialises(host, compiled, caplog):
    _, first, second = compiled
    host.request(with_runtimes(first, [{"runtime": "rec_a", "slow": True}]))
    deadline = time.monotonic() + 10
    while not EVENTS and time.monotonic() < deadline:
        time.sleep(0.005)
    assert EVENTS == [("open", "rec_a", first["source_hash"], 0.0)]  # blocked in start()
    host.request(with_runtimes(first, [{"runtime": "rec_b"}]))
    host.request(with_runtimes(first, [{"runtime": "rec_c"}]))
    host.request(with_runtimes(second, [{"runtime": "rec_b", "port": 2}]))
    GATE.set()
    assert host.wait_idle()
    requested = [line for line in host_lines(caplog) if line.startswith("Requesting")]
    assert requested == ["Requesting runtime: rec_a", "Requesting runtime: rec_b"]
    assert host.runtime.id == "rec_b" and host.settings["port"] == 2
    assert host.runtime.program.source_hash == second["source_hash"]


def test_watcher_follows_compiles_and_ignores_broken_configs(project, caplog):
    caplog.set_level(logging.INFO, logger="livehost")
    seq = sequencer_on(project, 'runtime = "logic"')
    first = compile_project(seq)
    with Host(seq, debounce_s=0.02) as host:
        assert host.wait_idle() and host.runtime.id == "logic"
        patch = seq / "patch.py"
        patch.write_text(patch.read_text().replace("velocity = 100", "velocity = 80"))
        second = compile_project(seq)
        wait_for(lambda: host.runtime.program.source_hash == second["source_hash"])
        assert host.runtime.program.source_hash != first["source_hash"]
        assert float(host.runtime.snapshot()[1]["velocity"][0]) == 80

        broken = seq / ".livehost" / "tmp.json"
        broken.write_text("{ not json")
        broken.replace(seq / ".livehost" / "compiled.json")  # an atomic rename: a move event
        wait_for(lambda: any("Ignoring unreadable compiled config" in r.getMessage() for r in caplog.records))

        patch.write_text(patch.read_text() + "\nsyntax error here\n")
        with pytest.raises(Exception):
            compile_project(seq)
        wait_for(lambda: host.last_error is not None)
        assert host.last_error["line"] == 21 and "SyntaxError" in host.last_error["message"]
        assert host.runtime.id == "logic" and host.runtime.program.source_hash == second["source_hash"]
        assert host.status()["last_error"]["text"].startswith(f"{patch}:21: ")
        played = [e for e in host.runtime.events if e[1] & 0xF0 == 0x90]  # the second program still plays
        assert played and {note for _, _, note, _ in played} <= {36, 38, 42}


def test_live_run_restores_its_state_snapshot(project):
    seq = sequencer_on(project, 'runtime = "logic"')
    compile_project(seq)
    with Host(seq, restore_state=True, watch=False) as host:
        assert host.wait_idle()
        host.runtime.engine.controls.push(*host.runtime.program.layout.target("velocity"), 77)  # as if set live
        wait_for(lambda: host.runtime.engine.controls.pending() == 0)
    assert (seq / ".livehost" / "state.npz").exists()
    with Host(seq, restore_state=True, watch=False) as host:
        assert host.wait_idle()
        assert int(host.runtime.snapshot()[1]["velocity"][0]) == 77
    with Host(seq, watch=False) as host:  # renders and tests start from defaults
        assert host.wait_idle()
        assert int(host.runtime.snapshot()[1]["velocity"][0]) == 100


def test_a_program_the_runtime_cannot_play_keeps_the_old_one(project, caplog):
    caplog.set_level(logging.INFO, logger="livehost")
    seq = sequencer_on(project, 'runtime = "offline"\noutput = "take.mid"')
    first = compile_project(seq)
    with Host(seq, watch=False) as host:
        assert host.wait_idle() and host.runtime.id == "offline"
        (seq / "patch.py").write_text("class State:\n    x = 0.0\n\n\ndef audio(s, ctx, inp, out):\n    pass\n")
        apply(host, compile_project(seq))  # an audio-only patch cannot render to a .mid file
        assert host.runtime.program.source_hash == first["source_hash"]
        assert any(line.startswith("Could not swap program") and "no midi(s, ctx, ev) kernel" in line
                   for line in host_lines(caplog))
    assert (seq / "take.mid").exists()


def test_watcher_survives_a_failing_callback(tmp_path):
    from compiler_bridge.watch import DebouncedWatcher

    calls = []

    def callback(changed):
        calls.append(changed)
        if len(calls) == 1:
            raise OSError("the compile worker is gone")

    with DebouncedWatcher(tmp_path, ["patch.py"], callback, debounce_s=0.01):
        (tmp_path / "patch.py").write_text("a")
        wait_for(lambda: len(calls) == 1)
        time.sleep(0.05)  # let the first dispatch finish raising
        (tmp_path / "patch.py").write_text("b")
        wait_for(lambda: len(calls) == 2)
    assert calls == [{"patch.py"}, {"patch.py"}]


@pytest.mark.parametrize("how", ["rename", "in place"])
def test_a_complete_save_is_handled_at_once_not_after_the_debounce(tmp_path, how):
    """A file renamed over the name, or closed after writing, is a whole save: the
    callback runs without waiting out the debounce (here far longer than the wait)."""
    from compiler_bridge.watch import DebouncedWatcher

    calls = []
    with DebouncedWatcher(tmp_path, ["patch.py"], calls.append, debounce_s=60.0):
        if how == "rename":
            (tmp_path / ".patch.py.tmp").write_text("x = 1\n")
            (tmp_path / ".patch.py.tmp").replace(tmp_path / "patch.py")
        else:
            (tmp_path / "patch.py").write_text("x = 2\n")
        wait_for(lambda: calls, 10)
    assert calls == [{"patch.py"}]


def test_a_refused_swap_keeps_the_old_tempo(project, caplog):
    seq = sequencer_on(project, 'runtime = "offline"\noutput = "take.mid"')
    compile_project(seq)
    with Host(seq, watch=False) as host:
        assert host.wait_idle() and host.transport.tempo_bpm == 120.0
        toml = seq / "livehost.toml"
        toml.write_text(toml.read_text().replace("tempo_bpm = 120.0", "tempo_bpm = 90.0"))
        (seq / "patch.py").write_text("class State:\n    x = 0.0\n\n\ndef audio(s, ctx, inp, out):\n    pass\n")
        apply(host, compile_project(seq))
        assert host.transport.tempo_bpm == 120.0
