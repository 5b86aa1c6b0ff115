"""Build identity: what a build's hash covers, its immutable folder, and pruning old ones.

A build's hash covers the code numba compiles and nothing else: a save that
changes only ``State``'s defaults, numbers in the kernels or ``livehost.toml``
reuses the build, and its compile is a test run of the cached code with the
new values.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numba

from .. import abi, api
from ..files import write_atomic
from ..numbers import source_lines
from . import llvm_calls, realtime
from .templates import CHECKED_TEMPLATE, ENTRY_TEMPLATE, KERNEL_TEMPLATE, KERNEL_VIEWS

KEEP_BUILDS = 16  # build folders kept per project: the newest ones


def livehost_dir(project_dir: Path) -> Path:
    return Path(project_dir) / ".livehost"


def source_hash(config_text: str, patch_source: str, build: str) -> str:
    """Hash of everything a compiled config is made of: both sources and *build*, the build's hash."""
    h = hashlib.sha256()
    for text in (config_text, patch_source, build):
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def build_hash(patch_source: str) -> str:
    """Hash of what numba compiles: the patch with ``State``'s default values
    left out (see :func:`code_text`), the generated code and the native code
    compiled into it. Saves that change only defaults or ``livehost.toml``
    share a build: nothing is recompiled for them."""
    h = hashlib.sha256(code_text(patch_source).encode())
    h.update(_generated_code_digest())
    return h.hexdigest()[:16]


@functools.cache
def _generated_code_digest() -> bytes:
    """What every build of this process compiles besides the patch: read once, not at every save."""
    h = hashlib.sha256(f"abi{abi.ABI_VERSION} numba{numba.__version__} py{sys.version_info[:2]}".encode())
    h.update((ENTRY_TEMPLATE + KERNEL_TEMPLATE + CHECKED_TEMPLATE + repr(KERNEL_VIEWS)).encode())
    # the context layout and helpers compiled into every build (as loaded here), and the rules its code is held to
    for module in (abi, api, llvm_calls, realtime):
        h.update(Path(module.__file__).read_bytes())
    return h.digest()


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_text(source: str) -> str:
    """*source* with the values of ``class State:``'s plain assignments blanked out.

    The kernels read state through ``s``, never through ``State``, so those
    values are not part of the compiled code; the state layout (names, types,
    shapes) is checked separately. Blanking keeps every line where it was, so
    two sources with equal code text have their code on the same lines. When
    ``State`` is used anywhere else (a top-level ``TABLE = np.zeros(State.n)``
    the kernels could read), has bases or decorators, or the text does not
    parse, nothing is blanked.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return source
    states = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "State"]
    if len(states) != 1 or states[0].bases or states[0].keywords or states[0].decorator_list:
        return source
    state = states[0]
    others = [n for n in ast.walk(ast.Module(body=[b for b in tree.body if b is not state], type_ignores=[]))
              if isinstance(n, ast.Name) and n.id == "State"]
    if others:
        return source
    lines = source_lines(source)  # as Python numbers them: the AST's line numbers index it
    spans = []
    for stmt in state.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            spans.append(stmt.value)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
            spans.append(stmt.value)
    for value in reversed(spans):  # from the end: earlier offsets stay valid
        first, last = value.lineno - 1, value.end_lineno - 1
        head = lines[first].encode()[:value.col_offset].decode(errors="replace")
        tail = lines[last].encode()[value.end_col_offset:].decode(errors="replace")
        lines[first:last + 1] = [head + "..." + "\n" * (last - first) + tail]
    return "".join(lines)


def build_folder(folder: Path, files: dict[str, str]) -> None:
    """A build's folder with *files*: written once, never rewritten (the last is written last)."""
    if not (folder / list(files)[-1]).exists():
        for name, text in files.items():
            write_atomic(folder / name, text)
    else:
        os.utime(folder)  # in use again: not pruned as old


def prune_builds(builds: Path, keep: Path, newest: int = KEEP_BUILDS) -> None:
    """Delete all but the *newest* build folders (and *keep*), so hours of saves
    do not fill the disk. A running host has what it plays loaded in memory."""
    folders = sorted((p for p in builds.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in folders[newest:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def prune_kernel_builds(out: Path) -> None:
    """Delete the kernel builds no build folder uses any more."""
    kernels = out / "kernels"
    if not kernels.is_dir():
        return
    used = set()
    for record in (out / "build").glob("*/entry_*.natives.json"):
        try:
            used.update(Path(n["object"]).parts[1] for n in json.loads(record.read_text()).values())
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            pass  # that build is not whole: its next compile makes what it needs again
    for folder in kernels.iterdir():
        if folder.name not in used and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
