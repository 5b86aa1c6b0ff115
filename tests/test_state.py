"""State layout and carry-over rules, snapshots, and the control ring."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler_bridge import abi
from compiler_bridge.api import array
from compiler_bridge.state import StateLayout, load_snapshot, save_snapshot
from runtimes.realtime import controls
from runtimes.realtime.controls import ControlRing


class Old:
    freq_hz = 440.0
    gain = 0.2
    phase = 0.0
    steps = array([60, 62, 64, 65])
    count = 0
    removed = 1.5


class New:
    freq_hz = 660.0  # default changed in the source: the new default applies
    gain = 0.2  # unchanged: keeps its running value
    phase = 0.0
    steps = array([60, 62, 64, 65])
    count = 0.0  # int -> float: a new field as far as carrying goes
    added = array(3, "f4")


def running_old():
    layout = StateLayout.from_class(Old)
    state = layout.defaults()
    state["freq_hz"], state["gain"], state["phase"] = 445.0, 0.7, 1.25
    state["steps"] = [1, 2, 3, 4]
    state["count"] = 99
    return layout, state


def test_layout_reads_types_and_defaults_in_source_order():
    layout = StateLayout.from_class(Old)
    assert layout.names() == ["freq_hz", "gain", "phase", "steps", "count", "removed"]
    assert [f.dtype for f in layout.fields] == ["f8", "f8", "f8", "i8", "i8", "f8"]
    assert layout.field("steps").shape == (4,) and layout.field("steps").default == (60, 62, 64, 65)
    d = layout.defaults()
    assert d["freq_hz"][0] == 440.0 and list(d["steps"][0]) == [60, 62, 64, 65]


def test_carry_over_rules():
    old_layout, old_state = running_old()
    new_layout = StateLayout.from_class(New)
    new = new_layout.carry(old_layout, old_state)
    assert new["freq_hz"][0] == 660.0  # changed default applied to the running value
    assert new["gain"][0] == 0.7  # kept
    assert new["phase"][0] == 1.25  # kept
    assert list(new["steps"][0]) == [1, 2, 3, 4]  # kept (array)
    assert new["count"][0] == 0.0  # dtype changed: default
    assert list(new["added"][0]) == [0.0, 0.0, 0.0]  # new field: default
    assert "removed" not in new.dtype.names


def test_json_round_trip_keeps_carry_rules():
    old_layout, old_state = running_old()
    again = StateLayout.from_json(old_layout.to_json())
    assert again == old_layout
    assert again.carry(old_layout, old_state)["gain"][0] == 0.7


def test_snapshot_restores_through_the_carry_rules(tmp_path):
    old_layout, old_state = running_old()
    path = tmp_path / "state.npz"
    save_snapshot(path, old_layout, old_state)
    restored = load_snapshot(path, StateLayout.from_class(New))
    assert restored["gain"][0] == 0.7 and restored["freq_hz"][0] == 660.0
    assert load_snapshot(tmp_path / "missing.npz", old_layout) is None


class Fields:
    a = 0.0
    b = 0
    c = array(4, "f4")
    d = array([0, 0], "i4")
    e = False


def _drain(ring, state, tag, stop_tag=0):
    return controls.drain(ring.header, ring.records, state.view(np.uint8), tag, stop_tag)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 3),
                          st.integers(-1000, 1000)), max_size=40), st.integers(1, 8))
def test_control_ring_applies_every_write_in_order(writes, capacity):
    layout = StateLayout.from_class(Fields)
    state = layout.defaults()
    expected = layout.defaults()
    ring = ControlRing(capacity)
    for start in range(0, len(writes), capacity):  # the consumer drains once per "block"
        for name, index, value in writes[start:start + capacity]:
            size = layout.field(name).shape[0] if layout.field(name).shape else 1
            index %= size
            assert ring.push(*layout.target(name, index), value)
            target = expected[name] if size == 1 else expected[name][:, index]
            target[...] = value
        assert _drain(ring, state, layout.tag) == (len(writes[start:start + capacity]), 0)
    assert ring.pending() == 0 and ring.dropped == 0
    assert state.tobytes() == expected.tobytes()


def test_full_control_ring_drops_and_counts():
    ring = ControlRing(2)
    assert ring.push(1, 0, abi.KIND_F8, 1.0) and ring.push(1, 0, abi.KIND_F8, 2.0)
    assert not ring.push(1, 0, abi.KIND_F8, 3.0)
    assert ring.dropped == 1 and ring.pending() == 2


def test_control_ring_skips_writes_outside_the_state_or_misaligned():
    layout = StateLayout.from_class(Fields)
    state = layout.defaults()
    before = state.tobytes()
    ring = ControlRing(8)
    size, tag = layout.dtype.itemsize, layout.tag
    ring.push(tag, size, abi.KIND_F8, 1.0)  # past the end
    ring.push(tag, size - 4, abi.KIND_F8, 1.0)  # would run past the end
    ring.push(tag, 4, abi.KIND_F8, 1.0)  # misaligned for a float64
    ring.push(tag, -8, abi.KIND_I8, 1.0)
    assert _drain(ring, state, tag) == (0, 4)
    assert state.tobytes() == before and ring.pending() == 0
    ring.push(*layout.target("a"), 2.5)
    assert _drain(ring, state, tag) == (1, 0)
    assert state["a"][0] == 2.5


def test_writes_for_another_layout_are_dropped_and_writes_for_the_next_wait():
    class Other:
        level = 0.0
        a = 0.0

    layout, other = StateLayout.from_class(Fields), StateLayout.from_class(Other)
    state = layout.defaults()
    before = state.tobytes()
    ring = ControlRing(8)
    ring.push(*other.target("level"), 9.0)  # addressed to a layout that does not play: dropped
    ring.push(*other.target("a"), 7.0)
    assert _drain(ring, state, layout.tag) == (0, 2)
    assert state.tobytes() == before
    ring.push(*layout.target("a"), 1.5)
    ring.push(*other.target("a"), 2.5)  # for the layout of a swap waiting to be taken
    ring.push(*layout.target("a"), 3.5)
    assert _drain(ring, state, layout.tag, stop_tag=other.tag) == (1, 0)
    assert state["a"][0] == 1.5 and ring.pending() == 2  # stopped at the write for the next state
    new_state = other.defaults()
    assert _drain(ring, new_state, other.tag) == (1, 1)  # after the swap: its write lands, the stale one does not
    assert new_state["a"][0] == 2.5 and new_state["level"][0] == 0.0
