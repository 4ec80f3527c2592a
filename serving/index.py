"""hnswlib inner-product index (callers pass L2-normalised vectors; nothing is normalised here): one writer, deterministic builds, knn errors handled."""

from __future__ import annotations

import os
import tempfile

import hnswlib
import numpy as np


class ANNIndex:
    """An HNSW index whose labels are dense row numbers. Insertions use one thread (deterministic graph)."""

    def __init__(self, dim: int, m: int = 16, ef_construction: int = 100, ef: int = 200, seed: int = 0,
                 initial_capacity: int = 1024):
        self.dim, self.m, self.ef_construction, self.ef, self.seed = dim, m, ef_construction, ef, seed
        self._new(initial_capacity)

    def _new(self, capacity: int) -> None:
        self.index = hnswlib.Index(space="ip", dim=self.dim)
        self.index.init_index(max_elements=max(capacity, 16), M=self.m, ef_construction=self.ef_construction,
                              random_seed=self.seed, allow_replace_deleted=True)
        self.index.set_ef(self.ef)
        self.index.set_num_threads(1)

    def __len__(self) -> int:
        return self.index.get_current_count()

    def build(self, labels: np.ndarray, vecs: np.ndarray) -> None:
        """Replace the whole index (after a weight update every vector changes)."""
        self._new(max(2 * len(labels), 1024))
        self.add(labels, vecs)

    def add(self, labels: np.ndarray, vecs: np.ndarray) -> None:
        """Insert or replace (same label) vectors; grows the index as needed."""
        if len(labels) == 0:
            return
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if not np.isfinite(vecs).all():
            raise ValueError("ANNIndex.add: NaN or infinite vectors")
        need = len(self) + len(labels)
        if need > self.index.get_max_elements():
            self.index.resize_index(max(2 * need, 1024))
        self.index.add_items(vecs, np.asarray(labels, np.int64), num_threads=1)

    def query(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores) of shape (n, k); missing neighbours are label -1, score -inf."""
        n = len(vecs)
        labels = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float32)
        count = len(self)
        if n == 0 or count == 0 or k == 0:
            return labels, scores
        kk = min(k, count)
        self.index.set_ef(max(self.ef, kk))
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        try:
            lab, dist = self.index.knn_query(vecs, k=kk)
        except RuntimeError:
            # fewer than kk reachable for some rows: query rows one k at a time, shrinking k
            lab = np.full((n, kk), -1, np.int64)
            dist = np.full((n, kk), np.inf, np.float32)
            for kq in range(kk - 1, 0, -1):
                try:
                    l2, d2 = self.index.knn_query(vecs, k=kq)
                    lab[:, :kq], dist[:, :kq] = l2, d2
                    break
                except RuntimeError:
                    continue
        labels[:, :kk] = lab
        scores[:, :kk] = np.where(lab >= 0, 1.0 - dist, -np.inf)
        return labels, scores

    def to_bytes(self) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "index.bin")
            self.index.save_index(p)
            with open(p, "rb") as f:
                return f.read()

    def from_bytes(self, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "index.bin")
            with open(p, "wb") as f:
                f.write(data)
            self.index = hnswlib.Index(space="ip", dim=self.dim)
            self.index.load_index(p, allow_replace_deleted=True)
            self.index.set_ef(self.ef)
            self.index.set_num_threads(1)
