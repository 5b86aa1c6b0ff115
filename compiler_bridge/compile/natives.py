"""Object files: each kernel's native entry point, compiled from its kernel build's text, written and checked.

The host loads these (see :mod:`compiler_bridge.native`): code that was
test-run, loaded the same way, and nothing compiled.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import native
from ..config import PATCH_NAME
from ..errors import PatchError
from ..files import write_atomic, write_json_atomic
from ..program import load_build
from ..split import kernel_texts
from ..state import StateLayout
from . import realtime
from .builds import build_folder, build_hash, livehost_dir
from .diagnostics import compiling, line_of
from .patch import Sources
from .templates import entry_text
from .testrun import RunShape, kernel_signature


def build_natives(sources: Sources, kernels: list[str], layout: StateLayout, shape: RunShape,
                  entry_name: str) -> tuple[bool, dict]:
    """Whether the build's object files for *layout* were there already, and its record of
    them (kernel -> object, symbol, digest, target), compiling those that are not."""
    out = livehost_dir(sources.project_dir)
    natives_path = sources.build / f"{entry_name}.natives.json"  # where each kernel's object code is
    reused = objects_ok(out, natives_path)
    if not reused:
        natives = {kernel: _kernel_native(sources, kernel, text, layout, shape, entry_name)
                   for kernel, text in kernel_texts(sources.built, kernels).items()}
        write_json_atomic(natives_path, natives)
    return reused, json.loads(natives_path.read_text())


def _kernel_native(sources: Sources, kernel: str, text: str, layout: StateLayout, shape: RunShape,
                   entry_name: str) -> dict:
    """*kernel*'s object file record, from the kernel build of *text* (numba compiles it
    unless that kernel build has it: a kernel whose text did not change is not compiled)."""
    out = livehost_dir(sources.project_dir)
    folder = out / "kernels" / build_hash(f"{kernel}\0{text}")
    build_folder(folder, {PATCH_NAME: text})  # the text its entry point is compiled from
    if not objects_ok(out, folder / f"{entry_name}.json"):
        write_atomic(folder / f"{entry_name}.py", entry_text(layout.dtype.descr, [kernel]))
        module = compiling(lambda: load_build(folder, entry_name), sources.build, layout, sources.source,
                           sources.patch_path)
        entry = getattr(module, f"{kernel}_entry")
        data = _object_code(entry, sources.source, sources.patch_path)
        realtime.check(entry, module.patch, kernel, kernel_signature(kernel, layout, shape), sources.source,
                       sources.patch_path)
        _write_object(folder / entry_name, entry.native_name, data)
    return json.loads((folder / f"{entry_name}.json").read_text())


def load_natives(out: Path, natives: dict) -> dict[str, native.NativeCode]:
    """Each kernel's entry point, loaded from its object file as a host loads it."""
    return {k: native.load(out / n["object"], n["symbol"], n["sha256"], n["target"]) for k, n in natives.items()}


def objects_ok(out: Path, record: Path | dict) -> bool:
    """Whether the object files *record* names (kernel -> object, symbol, digest; or one
    kernel's own; or the file that holds it) are there as they were written, for this CPU."""
    try:
        recorded = record if isinstance(record, dict) else json.loads(record.read_text())
        entries = [recorded] if "object" in recorded else list(recorded.values())
        return all(e["target"] == native.target() and native.digest((out / e["object"]).read_bytes()) == e["sha256"]
                   for e in entries)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _object_code(entry, source: str, patch_path: str) -> bytes:
    """The object code numba just compiled for the cfunc *entry*, when a host can load it."""
    data = entry._library._compiled_object  # what numba's code generator made (kept for a cache)
    if not data:
        raise RuntimeError(f"numba kept no object code of {entry.native_name}")
    if native.runtime_linked(data):
        # numba links recursive calls at run time, in the process that compiled them: code loaded
        # anywhere else (a host, from the cache) would call through a pointer nobody set.
        name = re.search(rb"\.numba\.unresolved\$_ZN\d+\w*?_patch(\d+)(\w+)", data)
        name = name[2][:int(name[1])].decode() if name else None
        raise PatchError(patch_path, name and line_of(source, f"def {name}", word=True),
                         f"{name or 'a function'}() calls itself (recursion), directly or through another "
                         "function: kernels and the functions they call cannot be recursive; write it as a loop")
    return data


def _write_object(stem: Path, symbol: str, data: bytes) -> None:
    """Write the object code *data* to ``<stem>.o``, and what it is (its path in
    ``.livehost/``, *symbol* and digest) to ``<stem>.json``."""
    path = stem.with_suffix(".o")
    write_atomic(path, data)
    written = {"object": str(path.relative_to(path.parent.parent.parent)), "symbol": symbol,
               "sha256": native.digest(data), "target": native.target()}
    write_json_atomic(stem.with_suffix(".json"), written)
