"""Real-time safety, checked at compile: a kernel may not allocate, take the GIL or call Python.

The audio and MIDI callbacks must never wait: not for the memory allocator,
not for Python's interpreter lock. numba compiles ``np.zeros(16)``, array
arithmetic, a list or a dict into calls of its runtime's allocator, and
``print()`` into calls of Python's C API under the GIL. Those calls are
looked for in the LLVM IR of a kernel's entry point: the kernel's own code and
all it calls (inlined or not), on the paths that return rather than raise
(see :mod:`.llvm_calls`). The cfunc wrapper around it is left out: it takes
the GIL only to report an exception, after which the engine mutes the kernel.
An exception made from values at run time (``raise ValueError(s.x)``) is
refused too: reporting one, the wrapper keeps the GIL.

Finding one costs a pass over the IR (about a millisecond). Only then is the
kernel compiled again, with debug information and nothing inlined, to name
the line that does it: in the kernel, or in a function of the patch it calls.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass

import numba
from numba.core.dispatcher import Dispatcher
from numba.core.errors import NumbaDebugInfoWarning

from ..errors import PatchError
from ..numbers import source_lines
from .diagnostics import line_of_def
from .llvm_calls import Ref, debug_lines, references


@dataclass(frozen=True)
class _Rule:
    does: str  # what a kernel that breaks it does
    symbols: re.Pattern
    raising: bool = False  # broken by naming a symbol anywhere, not only by calling it on a path that returns

    def heeds(self, ref: Ref) -> bool:
        return self.raising or (ref.call and ref.live)


# The first rule a kernel breaks is the one reported.
_RULES = (
    _Rule("takes the GIL", re.compile(r"numba_gil_ensure|PyGILState_Ensure|numba_get_\w+_random_state")),
    _Rule("calls into Python", re.compile(
        r"_?Py[A-Z]\w*|NRT_adapt_\w+|NRT_meminfo_\w*pyobject|numba_(unpickle|do_raise|runtime_build_excinfo_struct"
        r"|extract_\w+|recreate_record|get_buffer|adapt_\w+|release_buffer|ndarray_new|py_type|unpack_slice"
        r"|create_np_\w+|fatal_error|\w*pyobject\w*)")),
    _Rule("allocates", re.compile(r"NRT_MemInfo_(alloc|new|varsize_alloc|varsize_realloc)\w*|NRT_Allocate\w*"
                                  r"|numba_(dict|list|set)_new\w*")),
    # An exception made from values at run time: numba's C callback takes the GIL to report it
    # and does not give it back (the test run hangs; live, the whole host would).
    _Rule("raises an exception made at run time", re.compile(r"__excinfo_unwrap_args\w*"), raising=True),
)
_RANDOM = re.compile(r"numba_get_\w+_random_state")  # seeds itself through Python, once in each thread
_CALLBACK = {"audio": "the audio callback", "midi": "the MIDI callback", "midi_in": "the audio callback"}
_MADE = {"zeros", "ones", "empty", "full", "array", "arange", "linspace", "copy", "zeros_like", "ones_like",
         "empty_like", "full_like"}  # numpy calls that make an array a State field can be instead
_PROBE = {"debug": True, "_dbg_optnone": True, "no_cpython_wrapper": True, "nogil": True, "error_model": "numpy",
          "boundscheck": True}  # as the entry point compiles a kernel, with line numbers and nothing inlined


def check(entry, patch_mod, kernel: str, signature: tuple, source: str, patch_path: str) -> None:
    """Refuse *kernel* when the code numba compiled into its entry point *entry* (a cfunc)
    breaks one of the rules above: a PatchError names the line that does it and why.
    *signature* is the kernel's argument types; *source* the performer's text."""
    functions = references(entry._library.get_llvm_str())
    broken = _broken(functions, entry.native_name.removeprefix("cfunc."))
    if broken is None:
        return
    rule, symbol = broken
    try:
        found = _locate(patch_mod, getattr(patch_mod, kernel), signature, rule)
    except Exception:  # the entry point compiled: a probe that does not is no reason to hide why it is refused
        found = None
    line, via = found or (line_of_def(patch_mod, kernel), None)
    raise PatchError(patch_path, line, _message(rule, symbol, kernel, source, line if found else None, via))


def _broken(functions: dict[str, list[Ref]], root: str, rules=_RULES) -> tuple[_Rule, str] | None:
    """The first of *rules* that *root* or the functions it calls break, and the symbol that breaks it."""
    named: dict[bool, list[str]] = {}
    for rule in rules:
        if rule.raising not in named:
            named[rule.raising] = sorted(_named(functions, root, rule))
        if hit := next((s for s in named[rule.raising] if rule.symbols.fullmatch(s)), None):
            return rule, hit
    return None


def _named(functions: dict[str, list[Ref]], root: str, rule: _Rule) -> set[str]:
    """The symbols *root* and the functions it calls use in the way *rule* heeds."""
    seen, todo, named = {root}, [root], set()
    while todo:
        for ref in functions[todo.pop()]:
            if rule.heeds(ref):
                named.add(ref.symbol)
                if ref.call and ref.symbol in functions and ref.symbol not in seen:
                    seen.add(ref.symbol)
                    todo.append(ref.symbol)
    return named


def _locate(patch_mod, py_func, signature: tuple, rule: _Rule) -> tuple[int, tuple | None] | None:
    """The line of *py_func* (compiled for *signature*) that breaks *rule*, and, when that
    line is in a function of the patch it calls, (that function's name, the line calling it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaDebugInfoWarning)  # numba's generated helpers have no source
        probe = numba.njit(**_PROBE)(py_func)
        probe.compile(signature)
    compiled = probe.overloads[tuple(signature)]
    ir = compiled.library.get_llvm_str()
    functions, lines = references(ir), debug_lines(ir)
    ref = next((r for r in functions[compiled.fndesc.mangled_name] if _breaks(functions, r, rule)), None)
    if ref is None:
        return None
    line, helpers = lines.get(ref.dbg), _helpers(patch_mod)
    if ref.symbol in helpers:
        helper, args = helpers[ref.symbol]
        if inner := _locate(patch_mod, helper.py_func, args, rule):
            return inner[0], inner[1] or (helper.py_func.__name__, line)
    return (line, None) if line else None


def _breaks(functions: dict[str, list[Ref]], ref: Ref, rule: _Rule) -> bool:
    """Whether *ref* breaks *rule*: its own symbol, or the function it calls."""
    return rule.heeds(ref) and bool(rule.symbols.fullmatch(ref.symbol) or ref.call and ref.symbol in functions
                                    and _broken(functions, ref.symbol, (rule,)))


def _helpers(patch_mod) -> dict[str, tuple[Dispatcher, tuple]]:
    """The patch's own jitted functions, by the symbol of each compiled version: (function, argument types)."""
    return {compiled.fndesc.mangled_name: (d, args) for d in vars(patch_mod).values()
            if isinstance(d, Dispatcher) and d.py_func.__code__.co_filename == patch_mod.__file__
            for args, compiled in d.overloads.items()}


def _message(rule: _Rule, symbol: str, kernel: str, source: str, line: int | None, via: tuple | None) -> str:
    where = _CALLBACK[kernel] + (f" (in {via[0]}(), called on line {via[1]})" if via else "")
    if _RANDOM.fullmatch(symbol):
        return (f"np.random takes the GIL in {where} (numba seeds it through Python in each new thread): keep a "
                "seed in State and step a generator of your own, e.g. s.seed = (s.seed * 1103515245 + 12345) % 2**31")
    code, nodes = _code_at(source, line)
    if rule.does == "allocates":
        return f"allocates in {where}: {_instead(code, nodes, symbol, source)}"
    what = "print()" if code and re.search(r"\bprint\s*\(", code) else code or f"{kernel}() (its code names {symbol})"
    if rule.raising:
        return (f"{what} {rule.does} in {where}: numba then takes the GIL to report it and keeps it, and the "
                "host would hang; raise with a constant message, e.g. raise ValueError('too loud')")
    return f"{what} {rule.does} in {where}, which must never wait for Python: remove it"


def _instead(code: str | None, nodes: list[ast.AST], symbol: str, source: str) -> str:
    """What to write instead of allocating *code* (its syntax *nodes*)."""
    if made := next((n for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                     and n.func.attr in _MADE), None):
        return f"move {ast.get_source_segment(source, made)} into State as an array"
    if any(isinstance(n, ast.Assign) and any(isinstance(s, ast.Slice) for t in n.targets for s in ast.walk(t))
           for n in nodes):
        return (f"{code} copies through a temporary array whenever the two might share memory (numba cannot "
                "tell); copy element by element in a loop")
    return (f"{code} makes a new array, list, dict or string" if code else f"its code calls {symbol}") + (
        "; keep arrays in State and write into them element by element")


def _code_at(source: str, line: int | None) -> tuple[str | None, list[ast.AST]]:
    """The code on *line* of *source* (comment left out), and the syntax nodes that start there, leftmost first."""
    lines = source_lines(source)
    if line is None or not 0 < line <= len(lines):
        return None, []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = ast.Module(body=[], type_ignores=[])
    nodes = sorted((n for n in ast.walk(tree) if getattr(n, "lineno", None) == line), key=lambda n: n.col_offset)
    return lines[line - 1].split("#")[0].strip() or None, nodes
