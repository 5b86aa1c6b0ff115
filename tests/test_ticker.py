"""The tick loop and the logic runtime against a virtual clock: exact times."""

import threading

import pytest

from compiler_bridge.compile import compile_project
from compiler_bridge.program import Program
from helpers import expected_sequencer_events, stuck_notes
from runtimes.clock import Transport, VirtualClock
from runtimes.logic import LogicRuntime
from runtimes.ticker import TickLoop

PERIOD_120_NS = 60e9 / 120 / 24


class LateClock(VirtualClock):
    """A virtual clock whose sleeps wake *late_ns* after the deadline: a late OS timer."""

    def __init__(self, start_ns: int, late_ns: int) -> None:
        super().__init__(start_ns)
        self.late_ns = late_ns

    def sleep_until_ns(self, deadline_ns: int) -> None:
        super().sleep_until_ns(deadline_ns + self.late_ns)


def run_ticks(count, on_tick=None, tempo_bpm=120.0, late_ns=0):
    clock = LateClock(1_000_000_000, late_ns)
    transport = Transport(tempo_bpm, clock)
    seen = []
    done = threading.Event()

    def tick(n, deadline_ns):
        seen.append((n, deadline_ns, clock.now_ns()))
        if on_tick:
            on_tick(n, deadline_ns, transport)
        if n + 1 == count:
            loop.stop()
            done.set()

    loop = TickLoop(transport, clock, 24, tick)
    loop.start(first_beat=0.0)
    assert done.wait(30)
    return seen, loop


@pytest.mark.parametrize("late_us", [300, 1500])
def test_deadlines_are_absolute_and_never_drift_though_every_wake_up_is_late(late_us):
    """Each wake-up comes late; the lateness is measured, and never adds up."""
    seen, loop = run_ticks(2000, late_ns=late_us * 1000)
    assert [n for n, _, _ in seen] == list(range(2000))
    start = 1_000_000_000
    assert [d for _, d, _ in seen] == [start + round(n * PERIOD_120_NS) for n in range(2000)]
    assert all(now - d == late_us * 1000 for _, d, now in seen)  # late by the wake-up, never by more
    stats = loop.stats()
    assert stats["ticks"] == 2000 and stats["late_ticks"] == (2000 if late_us > 1000 else 0)
    assert stats["jitter_max_us"] == late_us and stats["drift_us"] == late_us


def test_tempo_change_applies_at_the_next_tick_without_a_phase_jump():
    def change(n, deadline_ns, transport):
        if n == 100:
            transport.set_tempo(240.0, at_ns=deadline_ns)

    seen, _ = run_ticks(200, change)
    deadlines = [d for _, d, _ in seen]
    assert [n for n, _, _ in seen] == list(range(200))  # no tick lost or doubled
    spacing = [b - a for a, b in zip(deadlines, deadlines[1:])]
    assert all(abs(s - PERIOD_120_NS) <= 1 for s in spacing[:100])
    assert all(abs(s - PERIOD_120_NS / 2) <= 1 for s in spacing[100:])
    assert deadlines[100] == 1_000_000_000 + round(100 * PERIOD_120_NS)


def test_logic_runtime_plays_the_sequencer_exactly(project):
    program = Program.from_compiled(compile_project(project("sequencer")))
    clock = VirtualClock()
    runtime = LogicRuntime({"ppqn": 24, "channel": 10}, transport=Transport(120.0, clock), clock=clock)
    with runtime:
        runtime.start(program, program.new_state())
        while runtime.stats()["ticks"] < 200:
            threading.Event().wait(0.01)
    played = [e for e in runtime.events if e[0] < 192]
    expected = [(t, 0x99 if kind == "note_on" else 0x89, note, 100 if kind == "note_on" else 64)
                for t, kind, note in expected_sequencer_events(192)]
    assert played == expected
    # closing released what was sounding: every NoteOn met its NoteOff
    assert stuck_notes(e[1:] for e in runtime.events) == set() and runtime.events[-1][1:] == (0xB9, 123, 0)
    assert runtime.stats()["notes_on"] == 0


def test_logic_runtime_swaps_at_a_tick_boundary_keeping_state(project):
    seq = project("sequencer")
    program = Program.from_compiled(compile_project(seq))
    (seq / "patch.py").write_text((seq / "patch.py").read_text().replace("velocity = 100", "velocity = 50"))
    louder = Program.from_compiled(compile_project(seq))
    clock = VirtualClock()
    runtime = LogicRuntime({"ppqn": 24, "channel": 1}, transport=Transport(120.0, clock), clock=clock)
    with runtime:
        runtime.start(program, program.new_state())
        while runtime.stats()["ticks"] < 50:
            threading.Event().wait(0.005)
        lo = runtime.stats()["ticks"]
        runtime.load(louder)
        hi = runtime.stats()["ticks"]  # the swap happened between tick lo and tick hi
        while runtime.stats()["ticks"] < hi + 50:
            threading.Event().wait(0.005)
    ons = [(t, note, vel) for t, status, note, vel in runtime.events if status == 0x90]
    before = [o for o in ons if o[0] < lo - 1]
    after = [o for o in ons if o[0] > hi]
    assert before and after
    assert {v for _, _, v in before} == {100} and {v for _, _, v in after} == {50}
    # the step counter was carried: notes continue the 4-step cycle without restarting
    notes = [n for _, n, _ in ons]
    assert notes == [[36, 38, 42, 38][k % 4] for k in range(len(notes))]
    assert runtime.stats()["swaps"] == 1


@pytest.mark.parametrize("at_beat, first_beat", [(8.0, 8.0), (2.0, 16 / 3)])  # the control: a beat passed
def test_a_logic_runtime_started_on_a_beat_plays_its_first_tick_on_it(project, at_beat, first_beat):
    program = Program.from_compiled(compile_project(project("sequencer")))
    clock = VirtualClock()
    transport = Transport(120.0, clock)
    clock.sleep_until_ns(transport.time_at(5.3))  # mid-beat: the next tick is on beat 5 + 8/24
    runtime = LogicRuntime({"ppqn": 24, "channel": 10}, transport=transport, clock=clock)
    runtime.start_at_beat = at_beat
    with runtime:
        runtime.start(program, program.new_state())
        while runtime.stats()["ticks"] < 30:
            threading.Event().wait(0.005)
        first_tick_ns = runtime._ticked.loop.deadline_ns(0)
    assert first_tick_ns == transport.time_at(first_beat)
    assert runtime.engine.get("beat_origin") == pytest.approx(first_beat)  # the kernels' ctx.beat of tick 0
    assert [e for e in runtime.events if e[0] < 24] == [
        (t, 0x99 if kind == "note_on" else 0x89, note, 100 if kind == "note_on" else 64)
        for t, kind, note in expected_sequencer_events(24)]  # the pattern from its first step
