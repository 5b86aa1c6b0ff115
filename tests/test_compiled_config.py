"""compiled.json: one reader that refuses a file it cannot play, naming the file and the problem."""

from __future__ import annotations

import json
import logging
import re

import pytest

from compiler_bridge.abi import ABI_VERSION
from compiler_bridge.errors import CompiledConfigError, HostError
from compiler_bridge.native import target
from compiler_bridge.program import SCHEMA_VERSION, Program, on_disk, read_compiled
from host import Host


def valid(tmp_path) -> dict:
    return {"schema_version": SCHEMA_VERSION, "abi_version": ABI_VERSION, "source_hash": "0123456789abcdef",
            "project": str(tmp_path), "build_dir": str(tmp_path / ".livehost" / "build" / "0123456789abcdef"),
            "entry": "entry_00000000000000ff",
            "kernels": ["midi"],
            "natives": {"midi": {"object": "kernels/89abcdef01234567/entry_00000000000000ff.o", "symbol": "cfunc.midi",
                                 "sha256": "0" * 64, "target": target()}},
            "state": [{"name": "step", "dtype": "<i8", "shape": [], "default": 0, "offset": 0}],
            "config": {"name": "t", "selected_runtime": 0, "tempo_bpm": 120.0,
                       "runtime_settings": [{"runtime": "logic"}]},
            "warnings": []}


def write(tmp_path, data) -> None:
    path = tmp_path / ".livehost" / "compiled.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def test_a_valid_file_reads_from_the_file_or_its_project(tmp_path):
    write(tmp_path, on_disk(valid(tmp_path)))  # on disk, paths are relative to .livehost/
    assert on_disk(valid(tmp_path))["build_dir"] == "build/0123456789abcdef"
    assert read_compiled(tmp_path) == read_compiled(tmp_path / ".livehost" / "compiled.json") == valid(tmp_path)


@pytest.mark.parametrize("build_dir", ["/elsewhere/build/0123456789abcdef", "../other/.livehost/build/x"])
def test_a_build_folder_outside_the_project_is_refused(tmp_path, build_dir):
    write(tmp_path, {**on_disk(valid(tmp_path)), "build_dir": build_dir})
    path = tmp_path / ".livehost" / "compiled.json"
    with pytest.raises(CompiledConfigError, match=re.escape(f"{path}: build_dir must lie inside")):
        read_compiled(tmp_path)


def edited(**changes):
    def edit(data: dict) -> None:
        for key, value in changes.items():
            target = data["config"] if key.startswith("config_") else data
            key = key.removeprefix("config_")
            if value is None:
                del target[key]
            else:
                target[key] = value
    return edit


BAD = [
    (edited(schema_version=1), f"written by another livehost (schema 1, ABI 1; this one reads schema {SCHEMA_VERSION}, "
                               "ABI 1): compile the project again"),
    (edited(entry="../../elsewhere"), "entry '../../elsewhere' is not a module name"),
    (edited(abi_version=99), f"written by another livehost (schema {SCHEMA_VERSION}, ABI 99;"),
    (edited(build_dir=None, state=None), "missing keys: build_dir, state"),
    (edited(config_runtime_settings=None), "missing keys: config.runtime_settings"),
    (edited(kernels="audio"), "kernels is str, expected list"),
    (edited(source_hash=12), "source_hash is int, expected str"),
    (edited(abi_version=True), "abi_version is bool, expected int"),  # True == ABI 1: only the type check sees it
    (edited(config=[]), "config is list, expected dict"),
    (edited(config_tempo_bpm="fast"), "config.tempo_bpm is str, expected int or float"),
    (edited(kernels=["audio", "video"]), "unknown kernels ['video'] (known: audio, midi, midi_in)"),
    (edited(state=[{"name": "step"}]), "every state field needs default, dtype, name, shape"),
    (edited(natives={}), "natives.midi is missing"),
    (edited(natives={"midi": {"object": "x.o", "symbol": "s"}}), "missing keys: natives.midi.sha256"),
    (edited(natives={"midi": {"object": "x.o", "symbol": 3, "sha256": "", "target": ""}}),
     "natives.midi.symbol is int, expected str"),
    (edited(natives={"midi": {"object": "../../x.o", "symbol": "s", "sha256": "", "target": ""}}),
     "natives.midi.object must lie inside the .livehost folder"),
    (edited(natives={"midi": {"object": "/tmp/x.o", "symbol": "s", "sha256": "", "target": ""}}),
     "natives.midi.object must lie inside the .livehost folder"),
]


@pytest.mark.parametrize("edit, words", BAD)
def test_a_bad_file_is_refused_naming_it_and_the_problem(tmp_path, edit, words):
    data = valid(tmp_path)
    edit(data)
    write(tmp_path, data)
    path = tmp_path / ".livehost" / "compiled.json"
    with pytest.raises(CompiledConfigError) as info:
        read_compiled(tmp_path)
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value), str(info.value)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("text, words", [
    ("{ not json", "not JSON: Expecting property name"),
    (b"\xff\xfe\x00", "not JSON: "),
    ("[1, 2]", "expected a JSON object, not list"),
    ("null", "expected a JSON object, not NoneType"),
])
def test_a_file_that_is_not_a_json_object_is_refused(tmp_path, text, words):
    path = tmp_path / ".livehost" / "compiled.json"
    path.parent.mkdir()
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CompiledConfigError, match=f"^{re.escape(str(path))}: {words}"):
        read_compiled(path)


def test_a_missing_file_is_refused_and_is_a_host_error_and_a_value_error(tmp_path):
    path = tmp_path / ".livehost" / "compiled.json"
    with pytest.raises(CompiledConfigError, match=f"^{re.escape(str(path))}: cannot read: No such file"):
        read_compiled(tmp_path)
    assert issubclass(CompiledConfigError, HostError) and issubclass(CompiledConfigError, ValueError)


def test_program_refuses_a_bad_config_and_a_build_that_is_gone(tmp_path):
    with pytest.raises(CompiledConfigError, match="^compiled config: missing keys: source_hash"):
        Program.from_compiled({k: v for k, v in valid(tmp_path).items() if k != "source_hash"})
    with pytest.raises(CompiledConfigError, match="entry_00000000000000ff.o: the build is gone; compile the project again"):
        Program.from_compiled(valid(tmp_path))


def test_host_start_ignores_a_bad_file_with_one_line_and_plays_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="livehost")
    (tmp_path / "livehost.toml").write_text("")
    data = valid(tmp_path)
    del data["kernels"]
    write(tmp_path, data)
    with Host(tmp_path, watch=False) as host:
        assert host.wait_idle() and host.runtime is None
    path = tmp_path / ".livehost" / "compiled.json"
    assert [r.getMessage() for r in caplog.records if r.name == "livehost.host"] == [
        f"Ignoring unreadable compiled config {path}: missing keys: kernels"]
