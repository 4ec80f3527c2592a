"""ColdItemIndex: the ANN index of the cold-item channels (Next-User, IHM), with what makes an item cold and the
query for each request's nearest cold items."""

from __future__ import annotations

import numpy as np

from serving.features import FeatureStore
from serving.index import ANNIndex

OVERFETCH = 2  # index neighbours fetched per candidate kept (items that stopped being cold are skipped)


class ColdItemIndex(ANNIndex):
    """An HNSW index of item rows whose items are cold: fewer than ``max_exposures`` exposures in the arm and
    younger than ``max_age_s``. Items that stop being cold may stay in the graph: queries skip them."""

    def __init__(self, dim: int, max_exposures: int, max_age_s: int, m: int, ef_construction: int, ef: int,
                 seed: int):
        super().__init__(dim, m=m, ef_construction=ef_construction, ef=ef, seed=seed)
        self.max_exposures = max_exposures
        self.max_age_s = max_age_s

    def is_cold(self, store: FeatureStore, rows: np.ndarray, now: np.ndarray | int) -> np.ndarray:
        """Bool, shaped like ``rows``: is each item row cold at ``now`` (one time, or times broadcast with rows)?"""
        return (store.item_expo[rows] < self.max_exposures) & (np.asarray(now) - store.item_upload_ts[rows] < self.max_age_s)

    def nearest_cold(self, store: FeatureStore, query: np.ndarray, ts: np.ndarray, k: int) -> np.ndarray:
        """(n, k) item rows: each query vector's first ``k`` cold neighbours at its request time ``ts``, in
        similarity order, -1 padded (``OVERFETCH * k`` neighbours are fetched)."""
        labels, _ = self.query(query, OVERFETCH * k)
        ok = labels >= 0
        ok &= self.is_cold(store, np.maximum(labels, 0), ts[:, None])
        ok &= np.cumsum(ok, axis=1) <= k  # the first k cold hits of each row, in similarity order
        out = np.where(ok, labels, -1)
        order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(out, order, 1)
