"""What each function in numba's LLVM IR calls or names, and whether on a path that returns or raises.

numba's functions return a status: 0 (-2 for None, -3 for a generator's end)
when they return, -1 or a positive code when they raise. Code that only
leads to a raise runs once, when a kernel fails (the engine reports that
through Python and mutes the kernel anyway): what it calls is marked, so
that building an error message does not count as what a kernel does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DEFINE = re.compile(r'define [^@]*@("[^"]+"|[-\w.$]+)\((.*)')
_LABEL = re.compile(r'("[^"]+"|[-\w.$]+):')
_SYMBOL = re.compile(r'@("[^"]+"|[-\w.$]+)')
_CALL = re.compile(r'\b(?:call|invoke)\b[^@]*?@("[^"]+"|[-\w.$]+)\(')
_DBG = re.compile(r"!dbg !(\d+)")
_TARGET = re.compile(r'label %("[^"]+"|[-\w.$]+)')
_RET = re.compile(r"\s*ret i32 (\S+)")
_PHI = re.compile(r"\s*(%\S+) = phi i32 (.*)")
_INCOMING = re.compile(r'\[ ([^,\]]+), %("[^"]+"|[-\w.$]+) \]')
_LOCATION = re.compile(r"^!(\d+) = !DILocation\(line: (\d+)", re.M)
_RETURNED = {"0", "-2", "-3"}  # statuses of a normal return


@dataclass(frozen=True)
class Ref:
    """A function's use of *symbol*: a call, or its address taken (a raise stores one)."""

    symbol: str
    call: bool
    live: bool  # on a path that can return normally
    dbg: str | None  # the instruction's !dbg metadata id, when compiled with debug information


def references(ir: str) -> dict[str, list[Ref]]:
    """Each function *ir* defines, and the symbols its instructions name, in order (every
    path counts as live in a function that does not return numba's status)."""
    functions: dict[str, list[Ref]] = {}
    lines = ir.splitlines()
    i = 0
    while i < len(lines):
        if m := _DEFINE.match(lines[i]):
            end = lines.index("}", i)
            functions[m[1]] = _refs(_blocks(lines[i + 1:end]), status="%excinfo" in m[2])
            i = end
        i += 1
    return functions


def debug_lines(ir: str) -> dict[str, int]:
    """The source line of each ``!DILocation`` in *ir*, by its metadata id."""
    return {n: int(line) for n, line in _LOCATION.findall(ir)}


def _blocks(body: list[str]) -> dict[str, list[str]]:
    """A function body's basic blocks by label (the first may have none: "")."""
    blocks: dict[str, list[str]] = {"": []}
    current = blocks[""]
    for line in body:
        if line and not line[0].isspace() and (m := _LABEL.match(line)):
            current = blocks.setdefault(m[1], [])
        elif line.strip():
            current.append(line)
    return blocks


def _refs(blocks: dict[str, list[str]], status: bool) -> list[Ref]:
    live = _returning(blocks) if status else set(blocks)
    refs = []
    for label, lines in blocks.items():
        for line in lines:
            if "@" not in line:
                continue
            called = (m := _CALL.search(line)) and m[1]
            dbg = (d := _DBG.search(line)) and d[1]
            refs += [Ref(s, s == called, label in live, dbg) for s in _SYMBOL.findall(line)]
    return refs


def _returning(blocks: dict[str, list[str]]) -> set[str]:
    """The blocks from which a normal return can be reached."""
    live, edges_in = set(), {}  # edges_in: return block -> the predecessors whose phi value is a normal return
    for label, lines in blocks.items():
        if not lines or not (ret := _RET.match(lines[-1])):
            continue
        phi = next((m for line in lines if (m := _PHI.match(line)) and m[1] == ret[1]), None)
        if phi is None:
            if ret[1] in _RETURNED or not ret[1].lstrip("-").isdigit():
                live.add(label)
            continue
        edges_in[label] = {pred for value, pred in _INCOMING.findall(phi[2])
                           if value in _RETURNED or not value.lstrip("-").isdigit()}
        if edges_in[label]:
            live.add(label)
    # (only a terminator names labels; a switch's spreads over lines)
    targets = {label: {t for line in lines for t in _TARGET.findall(line)} for label, lines in blocks.items()}
    grown = True
    while grown:
        before = len(live)
        live |= {label for label, succ in targets.items()
                 if any(s in live and (s not in edges_in or label in edges_in[s]) for s in succ)}
        grown = len(live) > before
    return live
