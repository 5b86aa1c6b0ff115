"""One text per kernel, so that a kernel whose code did not change is not compiled again.

A build's native entry points each come from a *kernel build* of their own
(``.livehost/kernels/<hash>/``): the patch as numba compiles it, with the
bodies of the other kernels left out. A save that edits ``audio()`` changes
the text of audio's kernel build only; ``midi()``'s entry point loads from
the cache of the kernel build it had. Everything else in the patch (imports,
helpers, ``State``, top-level constants) is in every kernel's text, so an edit
there compiles every kernel again. A kernel that another kernel or a helper
names (calls) keeps its body. Lines stay where they were, so errors name the same
``patch.py:LINE``.
"""

from __future__ import annotations

import ast

from .abi import KERNEL_NAMES
from .numbers import source_lines


def _ending(line: str) -> str:
    return line[len(line.rstrip("\r\n")):]


def kernel_texts(source: str, kernels: list[str]) -> dict[str, str]:
    """The text each of *kernels* is compiled from: *source* with the bodies of
    the other kernels replaced by ``pass`` (and blank lines). When *source* does
    not parse, or a kernel is not a plain top-level ``def``, every kernel gets
    the whole text."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {k: source for k in kernels}
    defs = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name in KERNEL_NAMES:
            if stmt.name in defs:  # defined twice: whichever plays, keep both
                return {k: source for k in kernels}
            defs[stmt.name] = stmt
    if any(k not in defs for k in kernels):
        return {k: source for k in kernels}
    names = {k: {n.id for n in ast.walk(d) if isinstance(n, ast.Name)} for k, d in defs.items()}
    shared = {n.id for stmt in tree.body if stmt not in defs.values() for n in ast.walk(stmt)
              if isinstance(n, ast.Name)}  # a kernel a helper calls is kept whole everywhere
    lines = source_lines(source)
    out = {}
    for kernel in kernels:
        text = list(lines)
        for other, d in defs.items():
            if other == kernel or other in names[kernel] or other in shared:
                continue
            first, last = d.body[0].lineno, d.end_lineno
            if first == d.lineno:  # a body on the line of its def: left as it is
                continue
            indent = lines[first - 1][: len(lines[first - 1]) - len(lines[first - 1].lstrip())]
            text[first - 1:last] = [("" if n > first else f"{indent}pass") + _ending(lines[n - 1])
                                    for n in range(first, last + 1)]
        out[kernel] = "".join(text)
    return out
