"""IdMap: vectorised mapping of arbitrary int64 ids to dense rows, growing as new ids arrive."""

from __future__ import annotations

import numpy as np


class UnknownIdError(KeyError):
    """Ids that are not (yet) known to a table; the message lists a few and how many."""

    def __init__(self, what: str, ids: np.ndarray):
        self.what = what
        self.ids = np.asarray(ids)
        super().__init__(f"{len(self.ids)} unknown {what} id(s), e.g. {self.ids[:5].tolist()}")

    def __reduce__(self):  # picklable across processes (Ray Serve replicas)
        return (type(self), (self.what, self.ids))


class IdMap:
    """Ids -> rows 0..n-1 in insertion order. Lookups are one ``searchsorted`` over a sorted copy."""

    def __init__(self, ids: np.ndarray | None = None, what: str = "item"):
        self.what = what
        self._ids = np.empty(0, dtype=np.int64)  # rows -> id (insertion order)
        self._sorted = np.empty(0, dtype=np.int64)
        self._order = np.empty(0, dtype=np.int64)  # sorted position -> row
        if ids is not None and len(ids):
            self.add(ids)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def add(self, ids: np.ndarray) -> np.ndarray:
        """Add ids not already present (in the given order); return the rows of all given ids."""
        ids = np.asarray(ids, dtype=np.int64)
        uniq, first = np.unique(ids, return_index=True)
        uniq = uniq[np.argsort(first)]  # keep first-seen order
        new = uniq[~self.contains(uniq)]
        if len(new):
            self._ids = np.concatenate([self._ids, new])
            self._order = np.argsort(self._ids, kind="stable")
            self._sorted = self._ids[self._order]
        return self.rows(ids)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if len(self._sorted) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return self._sorted[pos] == ids

    def rows(self, ids: np.ndarray, strict: bool = True) -> np.ndarray:
        """Rows of ``ids``; unknown ids raise :class:`UnknownIdError` (or map to -1 if not strict)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self._sorted) == 0:
            if strict and len(ids):
                raise UnknownIdError(self.what, ids)
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        found = self._sorted[pos] == ids
        rows = self._order[pos]
        if not found.all():
            if strict:
                raise UnknownIdError(self.what, np.unique(ids[~found]))
            rows = np.where(found, rows, -1)
        return rows
