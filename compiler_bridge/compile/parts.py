"""One part of a compile, in this process: the native entry points and their test run, or the checked kernels.

One forked child (at the worker's low priority) builds the native entry points
and test-runs them as a runtime calls them. The entry points are bounds-checked
themselves: a kernel that raises (an index out of range, a raise) returns 0 in
the test run, and only then is the kernel compiled again with Python exceptions
(the "checked" part) and run again to say which exception and where. (Both
parts used to run side by side for every compile: twice the CPU on a two-core
machine, for the rare save that raises.) When the build exists (a save of
defaults or settings), the part is a quick test run of cached code.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import types
from pathlib import Path

from .. import abi
from ..config import PATCH_NAME
from ..errors import PatchError
from ..program import SCHEMA_VERSION, load_build
from .builds import livehost_dir, text_sha
from .diagnostics import compiling, line_of_def
from .natives import build_natives, load_natives
from .patch import Sources, check_field_names, exec_patch, kernels_and_layout
from .standby import kept, loaded_ahead
from .testrun import KernelRaised, RunShape, checked_run, entry_run, kernel_signature


def compile_here(project_dir: Path, report=lambda message: None, checked: bool = True) -> dict:
    """Both parts (or only the build, without *checked*) in this process, one after the other
    (the worker warms itself up with it: a compile's child starts from the typing state it
    leaves, the checked part's included)."""
    sources = Sources.read(Path(project_dir).resolve())
    if checked:
        compile_part(sources, "checked", report)
    return compile_part(sources, "build", report)


def compile_part(sources: Sources, part: str, report) -> dict | None:
    """Run one part of a compile; *report* is told when each kernel's test run starts.

    ``build``: the native entry points (numba compiles them, or loads them from
    the build's cache when the build exists), test-run as a runtime calls
    them; returns the compiled config. A kernel that raises there is run
    again as ``checked`` to say what it raised, and where. ``checked``: the
    kernels compiled with Python exceptions, and their test run.
    """
    namespace = exec_patch(sources.source, sources.patch_path)
    kernels, layout = kernels_and_layout(namespace, sources.source, sources.patch_path)
    layout = layout.with_hidden(sources.numbers)
    check_field_names(sources.config, layout)
    shape = RunShape.of(sources.config)
    if part == "checked":
        return _checked_part(sources, kernels, layout, shape, report)
    return _build_part(sources, kernels, layout, shape, namespace, report)


def _checked_part(sources: Sources, kernels: list[str], layout, shape: RunShape, report) -> None:
    build, source, patch_path = sources.build, sources.source, sources.patch_path
    checked_mod = kept((build, "checked"), lambda: compiling(lambda: load_build(build, "checked"), build, layout,
                                                             source, patch_path))
    # Registered for good in this throwaway child: numba's cache names the module of a kernel
    # that raises Python exceptions, and imports it when it loads the kernel back.
    sys.modules[checked_mod.patch.__name__] = checked_mod.patch
    for kernel in kernels:
        fn = kept((build, "checked", kernel), lambda: checked_mod.checked(kernel))
        signature = kernel_signature(kernel, layout, shape)
        compiling(lambda: fn.compile(signature), build, layout, source, patch_path)  # or from the cache
        checked_run(kernel, fn, layout, shape, patch_path, str(build / PATCH_NAME), checked_mod.patch, report)
        report({"tested": kernel})  # the next kernel's compile is not timed as this one's test run


def _build_part(sources: Sources, kernels: list[str], layout, shape: RunShape, namespace: dict, report) -> dict:
    # Defaults are not in the build's hash, but their types and sizes are in the state's
    # layout: the entry points are compiled once per layout the build meets.
    entry_name = f"entry_{layout.tag:016x}"
    out = livehost_dir(sources.project_dir)
    t0 = time.perf_counter()
    reused, natives = build_natives(sources, kernels, layout, shape, entry_name)
    # The test run calls the code as a host will: loaded from its object file.
    codes = kept((sources.build, entry_name, "natives"), lambda: load_natives(out, natives))
    patch_mod = types.SimpleNamespace(**namespace)  # (the lines of its kernels)
    seconds = time.perf_counter() - t0
    for kernel, code in codes.items():
        try:
            entry_run(kernel, code.address, layout, shape, sources.patch_path, patch_mod, report)
        except KernelRaised as raised:
            report({"tested": kernel})  # (compiling again, not test-running)
            compile_part(sources, "checked", report)  # says what and where; or, if it cannot:
            raise PatchError(sources.patch_path, line_of_def(patch_mod, kernel),
                             f"{kernel}() raised in test call {raised.call} (an index out of range, or a raise)")
        report({"tested": kernel})
    return {
        "schema_version": SCHEMA_VERSION,
        "abi_version": abi.ABI_VERSION,
        "source_hash": sources.digest,
        "build": sources.build.name,
        "entry": entry_name,
        "reused_build": reused,
        "project": str(sources.project_dir),
        "build_dir": str(sources.build),
        "kernels": kernels,
        "natives": natives,
        "state": layout.to_json(),
        "config": sources.config.to_json(),
        "warnings": sources.config.warnings,
        "compiled_at": time.time(),
        "compile_seconds": round(seconds, 4),
        "prepared": loaded_ahead(),  # test-run in a child that had loaded the build ahead
        "patch_sha": text_sha(sources.source),  # what was test-run, and how: a save of settings alone
        "shape": dataclasses.asdict(shape),  # that changes neither needs no run (see settings_only)
    }
