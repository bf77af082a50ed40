"""What each series slot means, as growable numpy columns.

A slot is decided once per series key (its entity, signal, role, scale...) and a scrape's samples
are then looked up by slot in whole arrays. Columns grow by doubling, so a new series costs an
amortised constant, and a slot takes ~70 bytes, not a Python object per field (a fleet of
131,072 GPUs has ~1.7 M slots)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_A = TypeVar("_A", IntArray, FloatArray, BoolArray)
_INT_COLUMNS = ("entity", "signal", "role", "code", "note", "field")
_FLOAT_COLUMNS = ("scale", "offset", "window")


@dataclass(frozen=True)
class SlotView:
    """The first ``n`` slots of each column (views, not copies)."""

    entity: IntArray  # -1: skipped (an unknown name or a rejected series)
    signal: IntArray  # -1: an unknown name
    role: IntArray
    code: IntArray  # the XID code of a per-code XID series
    note: IntArray  # index into the table's notes: the unknown name or why the series is skipped
    field: IntArray  # FieldMap.index: copies of one field on one GPU share it
    copy: BoolArray  # a MIG instance's copy of its GPU's own value
    scale: FloatArray
    offset: FloatArray
    window: FloatArray  # the XID window (s) of a windowed-count series


def _grown(a: _A, size: int) -> _A:
    out: _A = np.zeros(size, dtype=a.dtype)
    out[: a.size] = a
    return out


class SlotColumns:
    def __init__(self, capacity: int = 1024) -> None:
        self.n = 0
        self._ints = {k: np.zeros(capacity, dtype=np.int64) for k in _INT_COLUMNS}
        self._floats = {k: np.zeros(capacity) for k in _FLOAT_COLUMNS}
        self._copy = np.zeros(capacity, dtype=bool)

    def append(self, *, entity: int, signal: int, role: int, code: int, note: int, field: int,
               copy: bool, scale: float, offset: float, window: float) -> int:  # fmt: skip
        if self.n == self._copy.size:
            self._grow()
        i = self.n
        for k, v in (("entity", entity), ("signal", signal), ("role", role), ("code", code),
                     ("note", note), ("field", field)):  # fmt: skip
            self._ints[k][i] = v
        for k, x in (("scale", scale), ("offset", offset), ("window", window)):
            self._floats[k][i] = x
        self._copy[i] = copy
        self.n += 1
        return i

    def _grow(self) -> None:
        size = 2 * self._copy.size
        self._ints = {k: _grown(a, size) for k, a in self._ints.items()}
        self._floats = {k: _grown(a, size) for k, a in self._floats.items()}
        self._copy = _grown(self._copy, size)

    def view(self) -> SlotView:
        n = self.n
        i, f = self._ints, self._floats
        return SlotView(
            entity=i["entity"][:n], signal=i["signal"][:n], role=i["role"][:n], code=i["code"][:n],
            note=i["note"][:n], field=i["field"][:n], copy=self._copy[:n],
            scale=f["scale"][:n], offset=f["offset"][:n], window=f["window"][:n],
        )  # fmt: skip
