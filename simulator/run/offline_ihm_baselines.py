"""Baselines of the IHM decay protocol: what a model has to beat, scored on the same test positives, candidates and
exclusions as the variants (:func:`simulator.run.offline_ihm.score`) and reported in the same tables with the same
intervals.

- ``most_popular``: items by their training positives;
- ``recent_popular``: items by their positives in the ``recent_days`` before the scoring time, the test period's
  included, refreshed every ``refresh_hours`` as the live IHM histories are;
- ``item_knn``: each item's co-like cosine (over the training positives) summed over the user's earlier positives.

Ties are broken by a seeded jitter far below one count, so a tie never counts as a hit by luck of order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import sparse

from simulator.core.config import IHMOfflineConfig
from simulator.run.offline_ihm_data import Batches, Split

BASELINES = {
    "most_popular": "items by training positives",
    "recent_popular": "items by positives in the last days before the scoring time (test period included)",
    "item_knn": "co-like cosine to the user's earlier positives (training positives)",
}
RECENT_DAYS = 7.0

ScoresOf = Callable[[np.ndarray, np.ndarray, int | None], np.ndarray]  # (test positions, their events, hist_ts) -> (m, N)


def sampled_candidates(rng: np.random.Generator, upload_sorted: np.ndarray, by_upload: np.ndarray, ts: np.ndarray,
                       target: np.ndarray, seen_row: np.ndarray, seen_item: np.ndarray, n: int,
                       n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """((m, n) uniform draws among the items uploaded by each event's time; (m, n) which of them are excluded: the
    target itself and the user's earlier positives). The protocol's sampled negatives, drawn in event order."""
    available = np.searchsorted(upload_sorted, ts, side="right")  # (m,) items uploaded by ts
    candidates = by_upload[(rng.random((len(ts), n)) * available[:, None]).astype(np.int64)]
    excluded = candidates == target[:, None]
    if len(seen_row):
        seen = np.zeros((len(ts), n_items), bool)
        seen[seen_row, seen_item] = True
        excluded |= seen[np.arange(len(ts))[:, None], candidates]
    return candidates, excluded


def rank_by(scores_of: ScoresOf, batches: Batches, split: Split, config: IHMOfflineConfig, seed: int, live: bool,
            chunk: int = 1024) -> np.ndarray:
    """Rank of each test positive's item (candidates scoring strictly higher), in ``split.test`` order, for a
    scorer of whole (events x items) matrices: the candidates, exclusions and sampled negatives of
    :func:`simulator.run.offline_ihm.score` (the same seeded draws in the same event order). ``live``: refresh
    every ``refresh_hours`` (``hist_ts`` = the refresh time), else ``hist_ts`` is None."""
    positives, items = batches.positives, batches.items
    test = split.test
    refresh = max(1, int(round(config.refresh_hours * 3600)))
    bucket = (positives.ts[test] - split.split_ts) // refresh if live else np.zeros(len(test), np.int64)
    by_upload = np.argsort(items.upload_ts, kind="stable")
    upload_sorted = items.upload_ts[by_upload]
    rng = np.random.default_rng([seed, 0x5C0])
    rank = np.zeros(len(test), np.int64)
    for refresh_index in np.unique(bucket):
        in_bucket = np.flatnonzero(bucket == refresh_index)
        hist_ts = split.split_ts + int(refresh_index) * refresh if live else None
        for first in range(0, len(in_bucket), chunk):
            part = in_bucket[first : first + chunk]
            events = test[part]
            n_events, ts, target = len(events), positives.ts[events], positives.item[events]
            full = np.array(scores_of(part, events, hist_ts), np.float64)  # (m, N)
            seen_row, seen_item = batches.user_items.pairs(positives.user_idx[events], ts)
            true = full[np.arange(n_events), target].copy()
            if config.eval_negatives == 0:
                full[items.upload_ts[None, :] > ts[:, None]] = -np.inf
                full[seen_row, seen_item] = -np.inf
                full[np.arange(n_events), target] = -np.inf
                rank[part] = (full > true[:, None]).sum(1)
            else:
                candidates, excluded = sampled_candidates(rng, upload_sorted, by_upload, ts, target, seen_row, seen_item,
                                                          config.eval_negatives, len(items))
                scores = full[np.arange(n_events)[:, None], candidates]
                scores[excluded] = -np.inf
                rank[part] = (scores > true[:, None]).sum(1)
    return rank


def recent_counts(batches: Batches, start_ts: int, end_ts: int) -> np.ndarray:
    """(N,) each item's positives with ``start_ts <= ts < end_ts`` (training and test alike)."""
    positives = batches.positives  # sorted by ts
    lo, hi = np.searchsorted(positives.ts, [start_ts, end_ts], side="left")
    return np.bincount(positives.item[lo:hi], minlength=len(batches.items)).astype(np.float64)


def baseline_ranks(name: str, batches: Batches, split: Split, config: IHMOfflineConfig, seed: int) -> np.ndarray:
    """The test positives' ranks under baseline ``name`` (:data:`BASELINES`)."""
    positives = batches.positives
    n_items = len(batches.items)
    jitter = np.random.default_rng([seed, 0xBA5E]).random(n_items) * 1e-3  # below one count
    popular = split.train_count.astype(np.float64)
    if name == "most_popular":
        row = (popular + jitter)[None, :]
        return rank_by(lambda part, events, hist_ts: np.repeat(row, len(events), 0), batches, split, config, seed, False)
    if name == "recent_popular":
        recent = int(RECENT_DAYS * 86_400)

        def recent_scores(part, events, hist_ts):
            counts = recent_counts(batches, hist_ts - recent, hist_ts)
            row = counts + 1e-3 * popular / max(popular.max(), 1.0) + jitter * 1e-3  # then all-time, then jitter
            return np.repeat(row[None, :], len(events), 0)

        return rank_by(recent_scores, batches, split, config, seed, True)
    if name == "item_knn":
        train = split.train
        users = int(positives.user_idx.max()) + 1
        x = sparse.csr_matrix((np.ones(len(train)), (positives.user_idx[train], positives.item[train])),
                              shape=(users, n_items))
        x.data[:] = 1.0
        norm = np.sqrt(np.asarray(x.sum(0)).ravel())
        xn = x @ sparse.diags(1.0 / np.maximum(norm, 1.0))
        tie = 1e-6 * (popular + jitter) / max(popular.max() + 1.0, 1.0)

        def knn(part, events, hist_ts):
            rows, seen = batches.user_items.pairs(positives.user_idx[events], positives.ts[events])
            history = sparse.csr_matrix((np.ones(len(rows)), (rows, seen)), shape=(len(events), n_items))
            return np.asarray(((history @ xn.T) @ xn).todense()) + tie[None, :]

        return rank_by(knn, batches, split, config, seed, False)
    raise ValueError(f"unknown IHM baseline '{name}'; known: {sorted(BASELINES)}")
