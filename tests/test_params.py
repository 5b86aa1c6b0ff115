"""State fields with ranges: ``param(default, lo=, hi=, curve=)``.

The kernel sees a plain float64; writes from outside are held inside the
range (OSC), and a CC is mapped onto it along its curve.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from compiler_bridge.compile import compile_project
from compiler_bridge.errors import PatchError
from compiler_bridge.program import Program
from helpers import wait_for
from runtimes.base import offer
from runtimes.ticks.engine import TickEngine
from runtimes.ticks.slots import WANT_RUN

PATCH = '''
from compiler_bridge.api import param


class State:
    freq_hz = param(440.0, lo=20.0, hi=2000.0, curve="exp")
    mix = param(0.5, lo=0.0, hi=1.0)
    plain = 1.0
    seen = 0.0


def midi(s, ctx, ev):
    s.seen = s.freq_hz
'''


def _project(root, patch: str = PATCH, runtime: str = "logic"):
    proj = root / "ranged"
    proj.mkdir()
    (proj / "livehost.toml").write_text(f'[[runtime_settings]]\nruntime = "{runtime}"\n')
    (proj / "patch.py").write_text(patch)
    return proj


def test_a_param_is_a_plain_float_to_the_kernel_and_its_range_is_in_the_compiled_config(tmp_path):
    compiled = compile_project(_project(tmp_path))
    fields = {f["name"]: f for f in compiled["state"]}
    assert fields["freq_hz"]["dtype"] == "f8" and fields["freq_hz"]["range"] == [20.0, 2000.0, "exp"]
    assert fields["mix"]["range"] == [0.0, 1.0, "lin"] and "range" not in fields["plain"]
    program = Program.from_compiled(compiled)
    assert program.new_state()["freq_hz"][0] == 440.0


@pytest.mark.parametrize("bad, why", [("param(440.0, lo=2000.0, hi=20.0)", "lo must be below hi"),
                                      ("param(5.0, lo=20.0, hi=2000.0)", "the default is outside its range"),
                                      ("param(1.0, lo=0.0, hi=2.0, curve='exp')", "an exp curve needs lo above 0"),
                                      ("param(1.0, lo=0.0, hi=2.0, curve='log')", "expected one of")])
def test_a_bad_range_is_a_compile_error_at_its_line(tmp_path, bad, why):
    proj = _project(tmp_path, PATCH.replace('param(0.5, lo=0.0, hi=1.0)', bad))
    with pytest.raises(PatchError) as err:
        compile_project(proj)
    text = str(err.value)
    assert text.startswith(f"{proj / 'patch.py'}:7:") and why in text, text


def test_an_osc_write_beyond_the_range_plays_inside_it_and_is_logged_once(tmp_path, caplog):
    from host import Host

    proj = _project(tmp_path)
    compiled = compile_project(proj)
    with Host(proj, watch=False) as host, caplog.at_level(logging.WARNING, logger="livehost.host"):
        host.request(compiled)
        assert host.wait_idle(10)
        engine = host.runtime.engine
        host.write_state("freq_hz", 1e30)
        wait_for(lambda: engine.playing()[1]["seen"][0] == 2000.0, 10)
        host.write_state("freq_hz", -5.0)
        wait_for(lambda: engine.playing()[1]["seen"][0] == 20.0, 10)
        host.write_state("plain", 1e30)  # no range: as it came
        wait_for(lambda: engine.playing()[1]["plain"][0] == 1e30, 10)
    told = [r.getMessage() for r in caplog.records if "outside its range" in r.getMessage()]
    assert told == ["freq_hz = 1e+30 is outside its range 20 to 2000: playing 2000 (later ones are clamped quietly)"]


def test_a_cc_is_mapped_onto_the_range_along_its_curve(tmp_path):
    program = Program.from_compiled(compile_project(_project(tmp_path)))
    settings = {"ppqn": 24, "channel": 1, "send_clock": False, "send_transport": False,
                "cc_map": {74: "freq_hz", 75: "mix", 76: "plain"}}
    engine = TickEngine(settings, 48000.0, 120.0)
    engine.first(offer(program))
    engine.want(WANT_RUN)
    got = []
    for value in (0, 64, 127):
        for cc in (74, 75, 76):
            engine.inbox.push(0xB0, cc, value, 3)
        engine.step()
        state = engine.playing()[1]
        got.append((float(state["freq_hz"][0]), float(state["mix"][0]), float(state["plain"][0])))
    expected = [(20.0 * 100.0 ** (v / 127.0), v / 127.0, float(v)) for v in (0, 64, 127)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[1][0] == pytest.approx(203.66, abs=0.01)  # CC 64, just past the middle of an exp range: near 200, the geometric middle


def test_inspect_shows_the_range(tmp_path):
    from host.inspect import inspect, show

    proj = _project(tmp_path)
    info = inspect(proj)
    assert {f["name"]: f.get("range") for f in info["state"]}["freq_hz"] == [20.0, 2000.0, "exp"]
    assert "20 to 2000 (exp)" in show(info)
