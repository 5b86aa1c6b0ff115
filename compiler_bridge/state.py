"""State layout: one numpy structured record per patch, and carry-over rules.

On a recompile a field keeps its running value when its name, dtype and
shape are unchanged and its default in the source is unchanged; a field whose
default changed takes the new default (so editing ``440.0`` to ``660.0``
changes the sound); new fields start at their default; removed fields vanish.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .abi import carry_state, kind_of
from .files import write_atomic

_ALLOWED = {"f8", "f4", "i8", "i4", "b1"}


@dataclass(frozen=True)
class Field:
    name: str
    dtype: str  # numpy dtype string: f8, f4, i8, i4, b1
    shape: tuple[int, ...]  # () for a scalar
    default: object  # a Python scalar or a list
    range: tuple[float, float, str] | None = None  # (lo, hi, curve) of a param()

    def clamp(self, value: float) -> float:
        """*value* held inside the field's range (itself without one)."""
        return value if self.range is None else min(max(value, self.range[0]), self.range[1])


@dataclass(frozen=True)
class StateLayout:
    fields: tuple[Field, ...]

    @classmethod
    def from_class(cls, state_cls: type | None) -> "StateLayout":
        """Read ``class State:`` attributes in source order."""
        if state_cls is None:
            return cls(())
        fields = []
        for name, value in vars(state_cls).items():
            if name.startswith("_") or callable(value) and not isinstance(value, np.ndarray):
                continue
            fields.append(_field_of(name, value))
        return cls(tuple(fields))

    @property
    def dtype(self) -> np.dtype:
        if not self.fields:
            return np.dtype([("_unused", "f8")], align=True)
        return np.dtype([(f.name, f.dtype, f.shape) for f in self.fields], align=True)

    def with_hidden(self, numbers: tuple[tuple[str, float], ...]) -> "StateLayout":
        """This layout and, after its fields, a float field per live number
        (see :mod:`compiler_bridge.numbers`), its value as its default."""
        return StateLayout(self.fields + tuple(Field(name, "f8", (), value) for name, value in numbers))

    def names(self) -> list[str]:
        """The fields a user named: live numbers' hidden fields (``_...``) are not among them."""
        return [f.name for f in self.fields if not f.name.startswith("_")]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def defaults(self) -> np.ndarray:
        """Return a fresh one-record state array holding every default."""
        state = np.zeros(1, self.dtype)
        for f in self.fields:
            state[f.name] = f.default
        return state

    @functools.cached_property
    def tag(self) -> int:
        """A nonzero 63-bit number naming this layout's byte layout: state writes
        carry it, so a write is never applied to a state of another layout."""
        digest = hashlib.sha256(repr(self.dtype.descr).encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1 or 1

    def target(self, name: str, index: int = 0) -> tuple[int, int, int]:
        """Return ``(layout tag, byte offset, kind)`` of ``name[index]`` for a state write."""
        return (self.tag, *self.offset_of(name, index))

    def offset_of(self, name: str, index: int = 0) -> tuple[int, int]:
        """Return ``(byte offset, ring kind)`` of ``name[index]``."""
        dt, offset = self.dtype.fields[name][:2]
        base = dt.base if dt.shape else dt
        if dt.shape and not 0 <= index < dt.shape[0]:
            raise IndexError(f"{name}[{index}] out of range (size {dt.shape[0]})")
        return offset + index * base.itemsize, kind_of(base)

    def carry_table(self, old: "StateLayout") -> np.ndarray:
        """Return the int64 ``(n, 3)`` copy table from *old* state to this one."""
        rows = []
        old_dt, new_dt = old.dtype, self.dtype
        for f in self.fields:
            try:
                o = old.field(f.name)
            except KeyError:
                continue
            if (o.dtype, o.shape, o.default) != (f.dtype, f.shape, f.default):
                continue
            rows.append((old_dt.fields[f.name][1], new_dt.fields[f.name][1], new_dt.fields[f.name][0].itemsize))
        return np.array(rows, np.int64).reshape(-1, 3)

    def carry(self, old: "StateLayout", old_state: np.ndarray) -> np.ndarray:
        """Return a new state record for this layout, carrying from *old_state*."""
        new_state = self.defaults()
        carry_state(old_state.view(np.uint8), new_state.view(np.uint8), self.carry_table(old))
        return new_state

    def to_json(self) -> list[dict]:
        return [
            {"name": f.name, "dtype": f.dtype, "shape": list(f.shape), "default": f.default,
             "offset": self.dtype.fields[f.name][1], **({"range": list(f.range)} if f.range else {})}
            for f in self.fields
        ]

    @classmethod
    def from_json(cls, items: list[dict]) -> "StateLayout":
        return cls(tuple(Field(d["name"], d["dtype"], tuple(d["shape"]), _freeze(d["default"]),
                               tuple(d["range"]) if d.get("range") else None) for d in items))


def _freeze(value):
    return tuple(value) if isinstance(value, list) else value


def _field_of(name: str, value) -> Field:
    from .api import param

    if isinstance(value, param):
        return Field(name, "f8", (), float(value), (value.lo, value.hi, value.curve))
    if isinstance(value, bool):
        return Field(name, "b1", (), value)
    if isinstance(value, int):
        return Field(name, "i8", (), value)
    if isinstance(value, float):
        return Field(name, "f8", (), value)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        code = f"{value.dtype.kind}{value.dtype.itemsize}"
        if code not in _ALLOWED:
            raise TypeError(f"state field {name!r}: dtype {value.dtype} is not one of f8, f4, i8, i4, b1")
        return Field(name, code, value.shape, tuple(value.tolist()))
    raise TypeError(
        f"state field {name!r} = {value!r}: use a float, int, bool or array([...]) default"
    )


def save_snapshot(path: Path, layout: StateLayout, state: np.ndarray) -> None:
    """Write *state* with its layout to an ``.npz`` file (atomically)."""
    data = io.BytesIO()
    np.savez(data, state=state.view(np.uint8), layout=np.array(json.dumps(layout.to_json())))
    write_atomic(path, data.getvalue())


def load_snapshot(path: Path, layout: StateLayout) -> np.ndarray | None:
    """Return a state for *layout* carried from a snapshot, or None if absent.

    Fields whose default changed since the snapshot take the new default.
    """
    if not path.exists():
        return None
    with np.load(path) as data:
        old = StateLayout.from_json(json.loads(str(data["layout"])))
        old_state = data["state"].copy().view(old.dtype)
    return layout.carry(old, old_state)
