"""Compile a project: validate, snapshot, numba-compile, test-run, publish.

Runs inside the compile worker process (never in the host: a compile would
stall the host's threads) or ``livehost compile``. What the host later loads
is an immutable build folder, ``.livehost/build/<hash>/``: ``patch.py`` as
numba compiles it (the kernels' numbers read from the state, see
:mod:`compiler_bridge.numbers`), the bounds-checked kernels, and per state
layout a record of where each kernel's native entry point is: an object file
under ``.livehost/kernels/<hash>/``, compiled from that kernel's own text (see
:mod:`compiler_bridge.split`), so an edit of one kernel compiles that kernel
alone. The host loads those object files (see :mod:`compiler_bridge.native`):
code that was test-run, loaded the same way, and nothing compiled.

The steps, a module each: :mod:`.patch` (the sources, read once),
:mod:`.builds` (a build's hash, folder and pruning), :mod:`.templates` and
:mod:`.natives` (the generated entry points and their object files),
:mod:`.realtime` (what a kernel's compiled code may not do, read from its
LLVM IR by :mod:`.llvm_calls`), :mod:`.testrun`, :mod:`.diagnostics`
(``patch.py:LINE`` errors), :mod:`.children` and :mod:`.standby` (the forked
children a compile runs in), :mod:`.parts` (one compile in this process) and
:mod:`.project` (a compile in a child, published).
"""

from ..files import write_json_atomic
from .builds import KEEP_BUILDS, code_text, livehost_dir
from .children import MEMORY_BUDGET_BYTES, TEST_RUN_TIMEOUT_S
from .project import COMPILED_NAME, ERROR_NAME, compile_project, fork_standby
from .standby import STANDBY

__all__ = ["COMPILED_NAME", "ERROR_NAME", "KEEP_BUILDS", "MEMORY_BUDGET_BYTES", "STANDBY", "TEST_RUN_TIMEOUT_S",
           "code_text", "compile_project", "fork_standby", "livehost_dir", "write_json_atomic"]
