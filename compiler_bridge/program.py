"""Load a compiled build into this process without compiling anything.

A :class:`Program` is what runtimes play: kernel entry addresses (see
:mod:`compiler_bridge.abi`), the state layout and the resolved config. Its
kernels' machine code is loaded from the object files the compile wrote and
test-ran (see :mod:`compiler_bridge.native`): no patch code runs here, and
the code is freed a while after the last program that plays it is dropped.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from .abi import ABI_VERSION, KERNEL_NAMES
from .errors import CompiledConfigError
from .native import NativeCode, load
from .state import StateLayout

SCHEMA_VERSION = 4  # of compiled.json; 2: paths relative to the .livehost folder; 3: builds shared by saves
# that change only defaults or settings, one entry module per state layout; 4: kernels loaded from object files
COMPILED_PATH = Path(".livehost", "compiled.json")  # in a project folder

# What a host needs from a compiled config, and the type of each.
_REQUIRED = {"schema_version": int, "abi_version": int, "source_hash": str, "build_dir": str, "entry": str,
             "kernels": list, "natives": dict, "state": list, "config": dict}
_NATIVE = {"object": str, "symbol": str, "sha256": str, "target": str}  # natives.<kernel>: its object file in
# .livehost/, what it defines, its digest and the CPU it was compiled for
_REQUIRED_CONFIG = {"selected_runtime": int, "tempo_bpm": (int, float), "runtime_settings": list}
_STATE_FIELD = {"name", "dtype", "shape", "default"}


def read_compiled(path: Path) -> dict:
    """Read and check a compiled config: *path* is ``compiled.json`` or its project folder.

    Raises :class:`CompiledConfigError` naming the file when it is unreadable,
    not a JSON object, incomplete, of another schema or ABI, or has a required
    key of the wrong type.
    """
    path = Path(path)
    if path.is_dir():
        path = path / COMPILED_PATH
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise CompiledConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CompiledConfigError(f"{path}: not JSON: {exc}") from None
    check_compiled(data, str(path))
    folder = path.resolve().parent  # the project's .livehost folder, wherever the project now is
    if Path(data["build_dir"]).is_absolute() or ".." in Path(data["build_dir"]).parts:
        raise CompiledConfigError(f"{path}: build_dir must lie inside {folder}")
    return {**data, "build_dir": str(folder / data["build_dir"]), "project": str(folder.parent)}


def on_disk(compiled: dict) -> dict:
    """*compiled* as ``compiled.json`` holds it: its build folder relative to
    ``.livehost/``, no project path (a copied or moved project plays its own)."""
    build_dir = Path(compiled["build_dir"])
    out = {k: v for k, v in compiled.items() if k != "project"}
    out["build_dir"] = str(build_dir.relative_to(build_dir.parent.parent))
    return out


def check_compiled(data: object, where: str = "compiled config") -> None:
    """Raise :class:`CompiledConfigError` (``where: problem``) unless *data* is a playable compiled config."""
    if not isinstance(data, dict):
        raise CompiledConfigError(f"{where}: expected a JSON object, not {type(data).__name__}")
    versions = (data.get("schema_version", SCHEMA_VERSION), data.get("abi_version", ABI_VERSION))
    if versions != (SCHEMA_VERSION, ABI_VERSION):  # checked first: another version may differ in any key
        raise CompiledConfigError(
            f"{where}: written by another livehost (schema {versions[0]!r}, ABI {versions[1]!r}; this one reads "
            f"schema {SCHEMA_VERSION}, ABI {ABI_VERSION}): compile the project again")
    _check_keys(data, _REQUIRED, where, "")
    _check_keys(data["config"], _REQUIRED_CONFIG, where, "config.")
    if not data["entry"].isidentifier():  # a file name inside the build folder, nothing else
        raise CompiledConfigError(f"{where}: entry {data['entry']!r} is not a module name")
    if unknown := [k for k in data["kernels"] if k not in KERNEL_NAMES]:
        raise CompiledConfigError(f"{where}: unknown kernels {unknown!r} (known: {', '.join(KERNEL_NAMES)})")
    for kernel in data["kernels"]:
        if not isinstance(data["natives"].get(kernel), dict):
            raise CompiledConfigError(f"{where}: natives.{kernel} is missing")
        _check_keys(data["natives"][kernel], _NATIVE, where, f"natives.{kernel}.")
        if Path(data["natives"][kernel]["object"]).is_absolute() or ".." in Path(data["natives"][kernel]["object"]).parts:
            raise CompiledConfigError(f"{where}: natives.{kernel}.object must lie inside the .livehost folder")
    if not all(isinstance(f, dict) and _STATE_FIELD <= f.keys() for f in data["state"]):
        raise CompiledConfigError(f"{where}: every state field needs {', '.join(sorted(_STATE_FIELD))}")


def _check_keys(data: dict, required: dict, where: str, prefix: str) -> None:
    if missing := [prefix + k for k in required if k not in data]:
        raise CompiledConfigError(f"{where}: missing keys: {', '.join(missing)}")
    for key, expected in required.items():
        value = data[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
            raise CompiledConfigError(f"{where}: {prefix}{key} is {type(value).__name__}, expected {names}")


def load_build(build_dir: Path, module: str = "entry") -> ModuleType:
    """Import ``<build_dir>/<module>.py`` (a kernel's entry point, or ``checked`` for a test run) as a module of its own.

    The compile's child does this: numba compiles what the module defines
    (the checked kernels load from numba's cache when they were compiled
    before). numba's cache records the module's name: it is derived from the
    folder's name (its hash) alone, so a copied or moved project (its cache
    included) loads its own build under the same name. The module is
    registered in ``sys.modules`` only while it loads: each load is separate.
    Hosts never import a build: they load its object files (see :class:`Program`).
    """
    name = f"livehost_{module}_{Path(build_dir).name}"
    spec = importlib.util.spec_from_file_location(name, Path(build_dir) / f"{module}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
        sys.modules.pop(name + "_patch", None)
    return module


@dataclass
class Program:
    """One compiled, test-run patch, ready to hand to a runtime."""

    source_hash: str
    layout: StateLayout
    kernels: dict[str, int]  # kernel name -> native entry address
    config: dict
    compiled: dict = field(repr=False)
    natives: dict[str, NativeCode] = field(repr=False)  # what keeps those addresses valid

    @classmethod
    def from_compiled(cls, compiled: dict, playing: "Program | None" = None) -> "Program":
        """Load what *compiled* names; an invalid config, or a build that is gone, raises CompiledConfigError.

        When *playing* plays the same code (a save that changed only defaults
        or settings), its loaded code serves: nothing is loaded again.
        """
        check_compiled(compiled)
        folder = Path(compiled["build_dir"]).parent.parent  # .livehost
        wanted = {k: compiled["natives"][k] for k in compiled["kernels"]}
        if playing is not None and {k: playing.compiled["natives"].get(k) for k in wanted} == wanted \
                and Path(playing.compiled["build_dir"]).parent.parent == folder:
            natives = {k: playing.natives[k] for k in wanted}
        else:
            natives = {k: _load_native(folder / n["object"], n) for k, n in wanted.items()}
        return cls(compiled["source_hash"], StateLayout.from_json(compiled["state"]),
                   {k: code.address for k, code in natives.items()}, compiled["config"], compiled, natives)

    @property
    def project_dir(self) -> Path:
        return Path(self.compiled["project"])

    @property
    def tempo_bpm(self) -> float:
        return float(self.config["tempo_bpm"])

    def new_state(self) -> np.ndarray:
        return self.layout.defaults()

    def has(self, kernel: str) -> bool:
        return kernel in self.kernels


def _load_native(path: Path, entry: dict) -> NativeCode:
    try:
        return load(path, entry["symbol"], entry["sha256"], entry["target"])
    except FileNotFoundError:  # pruned or deleted since it was compiled
        raise CompiledConfigError(f"{path}: the build is gone; compile the project again") from None
    except OSError as exc:
        raise CompiledConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, RuntimeError) as exc:  # a changed file (its digest), or LLVM refused it
        raise CompiledConfigError(f"{path}: cannot load: {exc}; compile the project again") from None

