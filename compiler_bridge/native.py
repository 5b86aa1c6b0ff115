"""Machine code of one kernel, loaded into a JIT engine of its own and freed with it.

numba loads every build it is asked for into one process-wide engine and
never unloads it: a host that loaded a build per save grew by about 55 KB a
build (55 MB over 1,000), and ran each build's top-level patch code as it
imported it. So the compile writes each kernel's entry point as an object
file (see :mod:`compiler_bridge.compile`), and a host loads each into an LLVM
MCJIT engine of its own: no patch code runs, and when no program refers to
the code any more its engine is closed and its memory given back.

An engine is never closed as its last owner goes: it is queued, and closed
by a later :func:`load` (the host's thread, at its next load) once it has
been unused for :data:`RETIRE_AFTER_S`. A runtime keeps the programs its
native side may still call (as it keeps their states), so the wait is a
margin on top of that, not what makes it safe.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections import deque
from pathlib import Path

import llvmlite.binding as llvm
from numba.core.compiler_lock import global_compiler_lock

RETIRE_AFTER_S = 2.0
# numba links a recursive call (a function calling itself, or two calling each other) at run
# time, through a pointer its process-wide engine fills in: such code cannot be loaded here.
_RUNTIME_LINKED = b".numba.unresolved$"
_retired: deque = deque()  # (when, engine), appended by finalizers in whatever thread collects
_ready = False
_target: str | None = None


def runtime_linked(data: bytes) -> bool:
    """Whether object code calls functions numba links at run time (recursion): it cannot load here."""
    return _RUNTIME_LINKED in data


def target() -> str:
    """The CPU this process's numba compiles for (its name and features): object code
    compiled for one runs here only if this is the same (``NUMBA_CPU_NAME`` included)."""
    global _target
    if _target is None:
        _prepare()
        from numba.core.registry import cpu_target

        codegen = cpu_target.target_context.codegen()
        _target = f"{codegen._get_host_cpu_name()} {codegen._get_host_cpu_features()}"
    return _target


def digest(data: bytes) -> str:
    """What a compiled config records of an object file, checked before it is loaded."""
    return hashlib.sha256(data).hexdigest()


class NativeCode:
    """One kernel's entry point, loaded from *data* (an object file's bytes).

    :attr:`address` is the C entry point (see :mod:`compiler_bridge.abi`); it
    stays valid while this object is alive, and a while after.
    """

    def __init__(self, data: bytes, symbol: str) -> None:
        if runtime_linked(data):
            raise ValueError("its code calls recursive functions, which numba links at run time")
        _prepare()
        with global_compiler_lock:  # numba's: LLVM's global context serves one thread at a time
            _close_retired()
            engine = llvm.create_mcjit_compiler(_empty_module(), _target_machine())
            try:
                engine.add_object_file(llvm.ObjectFileRef.from_data(data))
                engine.finalize_object()
                address = engine.get_function_address(symbol)
                if not address:
                    raise ValueError(f"the object code defines no {symbol!r}")
            except BaseException:
                engine.close()
                raise
        self.address = address
        self.symbol = symbol
        self.size = len(data)
        weakref.finalize(self, _retire, engine)


def load(path: Path, symbol: str, sha256: str | None = None, compiled_for: str | None = None) -> NativeCode:
    """Load the object file at *path* and find *symbol* in it.

    With *sha256*, the file must have that digest (what the compile wrote and
    test-ran): a file changed or cut short since is refused, never loaded.
    With *compiled_for* (its :func:`target`), code for another CPU is refused.
    Raises ``OSError`` when unreadable and ``ValueError`` otherwise.
    """
    if compiled_for is not None and compiled_for != target():
        raise ValueError(f"it was compiled for another CPU ({compiled_for.split()[0]}; this one is "
                         f"{target().split()[0]} or has other features)")
    data = Path(path).read_bytes()
    if sha256 is not None and digest(data) != sha256:
        raise ValueError("its contents are not what the compile wrote (changed or cut short since)")
    return NativeCode(data, symbol)


def retired() -> int:
    """Engines waiting to be closed (for tests and the soak figures)."""
    return len(_retired)


def _retire(engine) -> None:
    _retired.append((time.monotonic(), engine))


def _close_retired() -> None:
    """Close the engines unused for RETIRE_AFTER_S (the caller holds numba's compiler lock)."""
    now = time.monotonic()
    while _retired and now - _retired[0][0] >= RETIRE_AFTER_S:
        _retired.popleft()[1].close()


def _prepare() -> None:
    """numba's runtime and helper symbols (what its object code calls) must be
    registered with LLVM before any object is loaded: creating its CPU
    target context does that once."""
    global _ready
    if not _ready:
        from numba.core.registry import cpu_target

        cpu_target.target_context  # noqa: B018 (initialises LLVM, the NRT and the helper symbols)
        _ready = True


def _empty_module():
    module = llvm.parse_assembly("")
    module.triple = llvm.get_process_triple()
    return module


def _target_machine():
    # An engine owns (and closes) its target machine: each gets its own.
    return llvm.Target.from_default_triple().create_target_machine(codemodel="jitdefault", jit=True)
