"""Compile a project in a forked child and publish its compiled config, or its error.

Each compile runs in a forked child: the patch's top-level code, the numba
compile and the test run never grow the calling process, a memory budget
holds for all three, and a kernel that loops forever or runs far over its
budget is stopped :data:`TEST_RUN_TIMEOUT_S` after its test run began.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from pathlib import Path

from ..errors import CompiledConfigError, ConfigError, PatchError, SourceError
from ..files import write_json_atomic
from ..program import on_disk, read_compiled
from ..state import StateLayout
from .builds import livehost_dir, prune_builds, prune_kernel_builds, text_sha
from .children import (COMPILE_TIMEOUT_S, Child, await_children, die_with_parent, end, fork, limit_memory,
                       over_budget, reap, report_to)
from .natives import objects_ok
from .parts import compile_part
from .patch import Sources, check_field_names
from .standby import STANDBY, wait
from .testrun import RunShape

COMPILED_NAME = "compiled.json"
ERROR_NAME = "error.json"


def compile_project(project_dir: Path, *, standby: bool = False) -> dict:
    """Compile *project_dir* and publish ``.livehost/compiled.json``.

    On failure nothing is written over the last good compiled config; the
    error goes to ``.livehost/error.json`` and is raised as a SourceError.
    The compiled config is returned with absolute paths; on disk its paths
    are relative to ``.livehost/``, so a project folder can be copied or moved.

    *standby* (the compile worker): a save of the build that was compiled last
    is test-run in the child :func:`fork_standby` left ready with that build loaded.
    """
    project_dir = Path(project_dir).resolve()
    out = livehost_dir(project_dir)
    try:
        sources = Sources.read(project_dir)  # unreadable files are refused here, before any fork
        compiled = _settings_only(sources) or _compile_isolated(sources, STANDBY.take(sources) if standby else None)
    except (ConfigError, PatchError) as exc:
        write_json_atomic(out / ERROR_NAME, {**exc.to_json(), "time": time.time()})
        raise
    if standby:
        STANDBY.compiled = sources
    write_json_atomic(out / COMPILED_NAME, on_disk(compiled))
    (out / ERROR_NAME).unlink(missing_ok=True)
    prune_builds(out / "build", keep=Path(compiled["build_dir"]))
    prune_kernel_builds(out)
    return compiled


def fork_standby() -> None:
    """Have children ready for the next save (the compile worker, between requests)."""
    STANDBY.fork(_child)


def _settings_only(sources: Sources) -> dict | None:
    """The published compiled config with the new settings, when nothing needs running:
    the patch is the very text that was compiled and test-run, and a test run would feed
    it what it was fed then (e.g. a save that only changes ``selected_runtime``)."""
    try:
        published = read_compiled(livehost_dir(sources.project_dir) / COMPILED_NAME)
    except CompiledConfigError:
        return None
    if (published.get("patch_sha") != text_sha(sources.source) or published["build_dir"] != str(sources.build)
            or published.get("shape") != dataclasses.asdict(RunShape.of(sources.config))
            or not objects_ok(livehost_dir(sources.project_dir), published["natives"])):
        return None
    check_field_names(sources.config, StateLayout.from_json(published["state"]))
    return {**published, "source_hash": sources.digest, "config": sources.config.to_json(),
            "warnings": sources.config.warnings, "compiled_at": time.time(), "reused_build": True,
            "compile_seconds": 0.0}


def _compile_isolated(sources: Sources, standby: tuple[int, Child] | None = None) -> dict:
    """Run the compile in a forked child (or in *standby*: its report pipe and child);
    turn what it reports into a result or an error."""
    children: dict[int, Child] = dict([standby]) if standby else {}
    try:
        if not standby:
            read_fd, write_fd = os.pipe()
            pid = fork(lambda: _child(sources, write_fd), read_fd)
            os.close(write_fd)
            children[read_fd] = Child("build", pid, time.monotonic() + COMPILE_TIMEOUT_S)
        return await_children(children, sources.patch_path)
    finally:
        for fd, child in children.items():
            os.close(fd)
            if child.open:
                end(child.pid)
            else:
                reap(child.pid)


def _child(sources: Sources | None, fd: int, request_fd: int | None = None, warm_up=None) -> None:
    """A forked child's life: build the compile of *sources*, telling the parent on *fd*.

    A standby child (*request_fd*) first loads the build of *sources* by
    compiling it once, unheard (or, without *sources*, runs *warm_up*), then
    waits for the sources of the compile it is for.
    """
    report = report_to(fd)
    code = 1
    try:
        die_with_parent()
        STANDBY.forget()  # the other standby children's pipes: they must see EOF when the worker closes them
        if request_fd is not None and sources is None:  # ready for any build: the warm-up is not the patch's
            sources = wait(warm_up, request_fd, fd)
            limit_memory()
        else:
            limit_memory()
            if request_fd is not None:
                prepared = sources
                sources = wait(lambda: compile_part(prepared, "build", lambda message: None), request_fd)
        report({"result": compile_part(sources, "build", report)})
        code = 0
    except SourceError as exc:
        report({"error": exc.to_json(), "kind": type(exc).__name__})
    except MemoryError as exc:
        report({"error": over_budget(sources.patch_path, None, exc).to_json(), "kind": "PatchError"})
    except BaseException as exc:  # a bug of ours: say so, never blame a line of the patch
        report({"internal": "".join(traceback.format_exception_only(exc)).strip()})
    finally:
        os._exit(code)
