"""Live numbers: the float literals written inside ``audio()`` and ``midi()``.

Changing a number in a kernel's code is the commonest edit on stage after a
``State`` default. The text numba compiles (the build's ``patch.py``) reads
each such literal from a hidden state field instead, so the build does not
depend on its value: a save that changes only those numbers (and defaults)
reuses the build, like a save of defaults, and is heard at the next block
instead of after a numba compile. The field's default is the literal's value;
a changed value takes the new default when the program is swapped in (see
:mod:`compiler_bridge.state`), so what plays is always what the text says.

Hidden fields are named ``_<kernel>_<k>`` (the k-th number in that kernel's
body); ``State`` fields cannot start with ``_``, and hidden ones are not
offered to OSC, MIDI CC maps or error messages. The arithmetic is the same
IEEE arithmetic on the same values, so the samples are the same; the cost is
a load where a constant was, and no constant folding.

Left as they are: ints (they size arrays, index tuples and bound loops, which
numba may need as constants), numbers in nested functions, lambdas,
comprehensions and ``match`` patterns, numbers of helper functions outside
the kernels, a kernel that rebinds its state argument or is defined
unusually (decorated, bound twice), and kernels with more than
:data:`MAX_NUMBERS` numbers.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter

from .abi import KERNEL_NAMES

MAX_NUMBERS = 64  # per kernel: a table written out as literals stays compiled in

_OTHER_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
                 ast.DictComp, ast.GeneratorExp, ast.match_case, ast.JoinedStr)


def live_numbers(source: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """Return *source* with each kernel's float literals read from ``<state>._<kernel>_<k>``,
    and those fields' ``(name, value)`` pairs. Lines stay where they were (errors
    name the same ``patch.py:LINE``). Text that does not parse is returned as it is."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return source, ()
    bound = Counter(name for stmt in tree.body for name in _top_level_names(stmt))
    edits: list[tuple[int, int, int, str]] = []  # (line, start byte, end byte, new text)
    numbers: list[tuple[str, float]] = []
    for stmt in tree.body:
        if (not isinstance(stmt, ast.FunctionDef) or stmt.name not in KERNEL_NAMES or stmt.decorator_list
                or bound[stmt.name] != 1 or not stmt.args.args):
            continue
        state = stmt.args.args[0].arg
        if _rebinds(stmt, state):
            continue
        found = [n for n in _constants(stmt.body)
                 if type(n.value) is float and math.isfinite(n.value) and n.lineno == n.end_lineno]
        if not found or len(found) > MAX_NUMBERS:
            continue
        for k, node in enumerate(found):
            name = f"_{stmt.name}_{k}"
            edits.append((node.lineno, node.col_offset, node.end_col_offset, f"{state}.{name}"))
            numbers.append((name, node.value))
    if not edits:
        return source, ()
    lines = source_lines(source)
    for line, start, end, text in sorted(edits, reverse=True):  # right to left: offsets stay valid
        raw = lines[line - 1].encode()
        lines[line - 1] = (raw[:start] + text.encode() + raw[end:]).decode()
    return "".join(lines), tuple(numbers)


def source_lines(source: str) -> list[str]:
    """*source*'s lines as Python numbers them (ends kept): split at ``\\n``, ``\\r\\n`` and
    ``\\r`` only, not at the form feeds and other separators ``str.splitlines`` also takes."""
    return re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", source)


def _top_level_names(stmt: ast.stmt):
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield stmt.name
    elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
        for alias in stmt.names:
            yield (alias.asname or alias.name).split(".")[0]
    else:
        for node in ast.walk(stmt):  # an ``if`` or ``try`` may define a kernel too
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                yield node.id
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield node.name


def _rebinds(func: ast.FunctionDef, name: str) -> bool:
    """Whether *func* assigns, deletes or declares *name* anywhere in its body."""
    for node in ast.walk(ast.Module(body=func.body, type_ignores=[])):
        if isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
            return True
        if isinstance(node, (ast.Global, ast.Nonlocal)) and name in node.names:
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and name in {
                a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}:
            return True  # shadowed in a nested scope: left alone there anyway, but keep it simple
    return False


def _constants(body: list[ast.stmt]):
    """The constants of *body* outside nested scopes, annotations and patterns, in source order."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Constant):
            yield node
            continue
        if isinstance(node, _OTHER_SCOPES):
            continue
        children = [c for field, c in _fields(node) if field not in ("annotation", "returns")]
        stack.extend(reversed(children))


def _fields(node: ast.AST):
    for field, value in ast.iter_fields(node):
        if isinstance(value, ast.AST):
            yield field, value
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, ast.AST):
                    yield field, item
