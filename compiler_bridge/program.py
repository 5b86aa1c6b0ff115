"""Load a compiled build into this process without compiling anything.

A :class:`Program` is what runtimes play: kernel entry addresses (see
:mod:`compiler_bridge.abi`), the state layout and the resolved config. It
keeps the build's module alive, since native code holds its addresses.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from .abi import ABI_VERSION
from .state import StateLayout

SCHEMA_VERSION = 1  # of compiled.json


def load_build(build_dir: Path, digest: str) -> ModuleType:
    """Import ``<build_dir>/entry.py`` under a name unique to that folder.

    Its cfuncs load from numba's cache in the build folder when the compile
    worker already compiled them (numba's cache records the module name, so
    worker and host derive it the same way); importing twice returns the
    same module. Two projects with identical sources still get a build each.
    """
    folder = hashlib.sha256(str(Path(build_dir).resolve()).encode()).hexdigest()[:8]
    name = f"livehost_build_{digest}_{folder}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(build_dir) / "entry.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        sys.modules.pop(name + "_patch", None)
        raise
    return module


@dataclass
class Program:
    """One compiled, test-run patch, ready to hand to a runtime."""

    source_hash: str
    layout: StateLayout
    kernels: dict[str, int]  # kernel name -> native entry address
    config: dict
    compiled: dict = field(repr=False)
    module: ModuleType = field(repr=False)

    @classmethod
    def from_compiled(cls, compiled: dict) -> "Program":
        """Load what *compiled* names; a build of another schema or ABI is refused."""
        if (compiled.get("schema_version"), compiled.get("abi_version")) != (SCHEMA_VERSION, ABI_VERSION):
            raise ValueError(f"built by another livehost (schema {compiled.get('schema_version')}, "
                             f"ABI {compiled.get('abi_version')}); compile the project again")
        module = load_build(Path(compiled["build_dir"]), compiled["source_hash"])
        kernels = {k: getattr(module, f"{k}_entry").address for k in compiled["kernels"]}
        return cls(compiled["source_hash"], StateLayout.from_json(compiled["state"]), kernels,
                   compiled["config"], compiled, module)

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
