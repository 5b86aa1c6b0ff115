"""Whatever a performer saves as livehost.toml or patch.py gives one line, file:line: message.

Binary, non-UTF-8, truncated, NUL-laden, huge files, folders, FIFOs and links
out of the project: each is refused with a one-line SourceError naming the
file, and the last good build stays published.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler_bridge.compile import compile_project
from compiler_bridge.config import MAX_CONFIG_BYTES, MAX_PATCH_BYTES, load_config
from compiler_bridge.errors import ConfigError, PatchError, SourceError

LIVEHOST = [sys.executable, "-m", "host.cli"]
BINARY = bytes(range(256)) * 4


def remove(path: Path) -> None:
    """Remove whatever stands at *path*: a file, a link, a FIFO or a folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write(path: Path, data: bytes) -> None:
    remove(path)
    path.write_bytes(data)


def sparse(size_bytes: int):
    """A file of *size_bytes* that takes no disk space and would take long to read."""
    def make(path: Path) -> None:
        remove(path)
        with open(path, "wb") as f:
            f.truncate(size_bytes)
    return make


def folder(path: Path) -> None:
    remove(path)
    path.mkdir()
    (path / "inside.txt").write_text("a folder where a file should be")


def fifo(path: Path) -> None:
    remove(path)
    os.mkfifo(path)


def link_out(path: Path) -> None:
    outside = path.parent.parent / f"outside-{path.name}"
    outside.write_bytes(path.read_bytes())
    remove(path)
    path.symlink_to(outside)


def contents(data: bytes):
    return lambda path: write(path, data)


# (file, how to spoil it, error class, line or None, words in the message)
HOSTILE = [
    ("livehost.toml", contents(b'name = "sine"\ntempo_bpm = 120.0\n# caf\xe9\n'), ConfigError, 3, "not UTF-8 text"),
    ("livehost.toml", contents(b'name = "sine"\n\x00\n'), ConfigError, 2, "NUL byte"),
    ("livehost.toml", contents(BINARY), ConfigError, 1, "NUL byte"),
    ("livehost.toml", contents(b'name = "caf\xc3'), ConfigError, 1, "not UTF-8 text (byte 0xc3)"),  # truncated
    ("livehost.toml", contents(b"a = " + b"[" * 100_000), ConfigError, None, "nested too deeply"),
    ("livehost.toml", contents(b"tempo_bpm = " + b"1" * 5000), ConfigError, None, "invalid TOML"),
    ("livehost.toml", sparse(MAX_CONFIG_BYTES + 1), ConfigError, None, "too big for a project config"),
    ("livehost.toml", folder, ConfigError, None, "is a folder"),
    ("livehost.toml", fifo, ConfigError, None, "not a regular file"),
    ("livehost.toml", link_out, ConfigError, None, "outside the project folder"),
    ("patch.py", contents(b"import math\n\nx = '\xff'\n"), PatchError, 3, "not UTF-8 text (byte 0xff)"),
    ("patch.py", contents(b"import math\nx = 1\x00\n"), PatchError, 2, "NUL byte"),
    ("patch.py", contents(BINARY), PatchError, 1, "NUL byte"),
    ("patch.py", contents("x = 'é'\n".encode()[:-3]), PatchError, 1, "not UTF-8 text (byte 0xc3)"),  # truncated
    ("patch.py", contents(b""), PatchError, None, "defines no kernel"),
    ("patch.py", contents(b"x = " + b"-" * 200_000 + b"1\n"), PatchError, None, "nested too deeply"),
    ("patch.py", sparse(256 << 20), PatchError, None, "too big for a patch"),
    ("patch.py", sparse(MAX_PATCH_BYTES + 1), PatchError, None, "too big for a patch"),
    ("patch.py", folder, PatchError, None, "is a folder"),
    ("patch.py", fifo, PatchError, None, "not a regular file"),
    ("patch.py", link_out, PatchError, None, "outside the project folder"),
]


def assert_one_line(exc: SourceError, path: Path) -> None:
    text = str(exc)
    assert exc.path == str(path) and text.startswith(f"{path}:"), text
    assert len(text.splitlines()) == 1, text


@pytest.mark.parametrize("name, spoil, error, line, words", HOSTILE)
def test_a_hostile_file_is_one_line_naming_file_and_line(project, name, spoil, error, line, words):
    sine = project("sine")
    spoil(sine / name)
    with pytest.raises(error) as info:
        compile_project(sine)
    assert_one_line(info.value, sine / name)
    assert info.value.line == line and words in info.value.message, str(info.value)


def test_every_hostile_file_keeps_the_last_good_build(project):
    sine = project("sine")
    originals = {name: (sine / name).read_bytes() for name in ("livehost.toml", "patch.py")}
    compile_project(sine)
    compiled = (sine / ".livehost" / "compiled.json").read_bytes()
    for name, spoil, error, _, _ in HOSTILE:
        spoil(sine / name)
        with pytest.raises(error):
            compile_project(sine)
        assert (sine / ".livehost" / "compiled.json").read_bytes() == compiled, name
        write(sine / name, originals[name])


def test_a_link_inside_the_project_and_a_byte_order_mark_are_fine(project):
    sine = project("sine")
    toml = sine / "livehost.toml"
    (sine / "settings").mkdir()
    (sine / "settings" / "live.toml").write_bytes(b"\xef\xbb\xbf" + toml.read_bytes())  # as Notepad saves it
    remove(toml)
    toml.symlink_to(Path("settings") / "live.toml")
    assert load_config(sine).name == "sine"


def test_an_empty_config_means_the_defaults(project):
    sine = project("sine")
    (sine / "livehost.toml").write_bytes(b"")
    compiled = compile_project(sine)
    assert [e["runtime"] for e in compiled["config"]["runtime_settings"]] == ["logic"]


ANY_BYTES = st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(str.encode))


@pytest.mark.parametrize("name", ["livehost.toml", "patch.py"])
def test_any_bytes_compile_or_give_one_line_and_keep_the_last_good_build(project, name):
    sine = project("sine")
    path, compiled_json = sine / name, sine / ".livehost" / "compiled.json"
    compile_project(sine)
    last_good = [compiled_json.read_bytes()]

    @settings(max_examples=60, deadline=None, database=None)
    @given(data=ANY_BYTES)
    def check(data: bytes) -> None:
        path.write_bytes(data)
        try:
            compile_project(sine)
        except SourceError as exc:
            assert_one_line(exc, path)
            assert compiled_json.read_bytes() == last_good[0]
        else:
            last_good[0] = compiled_json.read_bytes()

    check()


def test_the_cli_on_a_binary_patch_prints_one_line(project):
    sine = project("sine")
    (sine / "patch.py").write_bytes(BINARY)
    done = subprocess.run([*LIVEHOST, "compile", str(sine)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{sine / 'patch.py'}:1: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
