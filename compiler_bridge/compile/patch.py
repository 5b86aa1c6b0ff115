"""The patch a compile works from: its text read once, its top-level code run, its kernels and state found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import abi
from ..config import MAX_PATCH_BYTES, PATCH_NAME, ProjectConfig, load_config
from ..errors import ConfigError, PatchError
from ..numbers import live_numbers
from ..sources import read_source
from ..state import StateLayout
from .builds import build_folder, build_hash, livehost_dir, source_hash
from .children import over_budget
from .diagnostics import line_of, patch_error_from
from .templates import CHECKED_TEMPLATE


@dataclass(frozen=True)
class Sources:
    """What one compile works from, read once before anything runs: both
    children see the very same text, whatever is saved meanwhile."""

    project_dir: Path
    config: ProjectConfig
    source: str
    build: Path  # .livehost/build/<build hash>
    digest: str  # source_hash
    numbers: tuple[tuple[str, float], ...] = ()  # the kernels' live numbers: hidden state fields
    built: str = ""  # the patch as numba compiles it (see compiler_bridge.numbers)

    @property
    def patch_path(self) -> str:
        return str(self.project_dir / PATCH_NAME)

    @classmethod
    def read(cls, project_dir: Path) -> "Sources":
        config = load_config(project_dir)
        source = read_source(project_dir, PATCH_NAME, max_bytes=MAX_PATCH_BYTES, error=PatchError, what="patch")
        built, numbers = live_numbers(source)  # the kernels' numbers read from the state: not in the build
        build_id = build_hash(built)
        build = livehost_dir(project_dir) / "build" / build_id
        build_folder(build, {PATCH_NAME: built, "checked.py": CHECKED_TEMPLATE})  # the text that is checked
        return cls(project_dir, config, source, build, source_hash(config.text, source, build_id), numbers, built)


def exec_patch(source: str, path: str) -> dict:
    """Execute the patch's text in a fresh namespace; errors carry patch.py:LINE."""
    try:
        code = compile(source, path, "exec")
    except SyntaxError as exc:
        raise PatchError(path, exc.lineno, f"SyntaxError: {exc.msg}") from None
    except (RecursionError, MemoryError):  # what Python's parser raises on absurdly deep nesting
        raise PatchError(path, None, "nested too deeply for Python to compile") from None
    namespace: dict = {"__name__": "livehost_patch_check", "__file__": path}
    try:
        exec(code, namespace)
    except MemoryError as exc:
        raise over_budget(path, patch_error_from(exc, path, path).line, exc) from None
    except (Exception, SystemExit) as exc:  # sys.exit() in a patch must not end the worker
        raise patch_error_from(exc, path, path) from None
    return namespace


def kernels_and_layout(namespace: dict, source: str, patch_path: str) -> tuple[list[str], StateLayout]:
    kernels = [k for k in abi.KERNEL_NAMES if callable(namespace.get(k))]
    if not kernels or kernels == ["midi_in"]:  # (input alone plays nothing)
        raise PatchError(patch_path, None, "defines no kernel: write def audio(s, ctx, inp, out) or def midi(s, ctx, ev)"
                         + (" beside midi_in(s, ctx, status, data1, data2)" if kernels else ""))
    try:
        return kernels, StateLayout.from_class(namespace.get("State"))
    except (TypeError, ValueError) as exc:
        raise PatchError(patch_path, line_of(source, "class State"), str(exc)) from None


def check_field_names(config: ProjectConfig, layout: StateLayout) -> None:
    """Settings that name state fields (``cc_map``, ``note_field`` ...) must exist."""
    names = set(layout.names())
    for i, entry in enumerate(config.runtime_settings):
        named = [("cc_map", v) for v in (entry.get("cc_map") or {}).values()]
        named += [(k, entry[k]) for k in ("note_field", "velocity_field") if entry.get(k)]
        for key, name in named:
            if name not in names:
                raise ConfigError(str(config.path), config.line_of("runtime_settings", i, key),
                                  f"runtime_settings[{i}].{key}: patch.py has no state field {name!r} "
                                  f"(fields: {', '.join(sorted(names)) or 'none'})")
