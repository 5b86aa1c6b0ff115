"""numba's cached engine code is rebuilt when any engine source changes, not only its own file."""

from __future__ import annotations

from runtimes.realtime.caches import clear_if_stale


def _cached(root):
    cache = root / "pkg" / "__pycache__"
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("cycle.step-1.py311.nbi", "cycle.step-1.py311.1.nbc"):
        (cache / name).write_bytes(b"machine code")
    return sorted(p.name for p in cache.iterdir())


def test_a_change_to_any_engine_source_clears_the_cached_code_of_all(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "cycle.py").write_text("def step(): pass\n")
    (tmp_path / "pkg" / "inputs.py").write_text("COLUMNS = 2\n")
    stamps = tmp_path / "stamps"
    _cached(tmp_path)
    assert clear_if_stale([tmp_path / "pkg"], stamps)  # first look: no record of the sources
    assert _cached(tmp_path) and not clear_if_stale([tmp_path / "pkg"], stamps)  # unchanged: kept
    assert len(list((tmp_path / "pkg" / "__pycache__").glob("*.nb?"))) == 2
    (tmp_path / "pkg" / "inputs.py").write_text("COLUMNS = 5\n")  # another file than cycle.py's
    assert clear_if_stale([tmp_path / "pkg"], stamps)
    assert list((tmp_path / "pkg" / "__pycache__").glob("*.nb?")) == []
