"""The IHM offline protocol's steps on one trained model: training passes over the chunks, item and user vectors, and the
rank of each test positive among its candidates (:func:`score`), with HitRate@K / NDCG@K per event. Used by the protocol
(:mod:`simulator.run.offline_ihm`), its epoch selection (:mod:`simulator.run.offline_ihm_select`) and the benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from simulator.core.config import IHMOfflineConfig
from simulator.run.offline_ihm_baselines import sampled_candidates
from simulator.run.offline_ihm_data import Batches, Chunks, Split
from trainers.tasks.ihm_offline import RetrievalTask


@dataclass(frozen=True)
class Variant:
    """A row of the tables: which trained model, and which item histories it reads at test time."""

    model: str  # key of trainers.tasks.ihm_offline.RETRIEVAL_MODELS
    history: Literal["live", "frozen", "none"]


def hit_ndcg(rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per event: HitRate@k (rank < k) and NDCG@k (1 / log2(rank + 2) when hit, one relevant item);
    ``rank`` = candidates scoring strictly higher than the target (0 = first)."""
    hit = rank < k
    return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)


def train(task: RetrievalTask, batches: Batches, chunks: Chunks, epochs: int, batch_size: int, seed: int) -> dict:
    """``epochs`` shuffled passes over the training chunks, ``batch_size`` chunks per step."""
    rng = np.random.default_rng([seed, 0x7A1])
    start = time.perf_counter()
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(chunks))
        for first in range(0, len(order), batch_size):
            minibatch = order[first : first + batch_size]
            if chunks.t_start[minibatch + 1].sum() - chunks.t_start[minibatch].sum() >= 2:
                losses.append(task.step(batches.train_batch(chunks, minibatch)))
    seconds = time.perf_counter() - start
    targets = len(chunks.t_row) * epochs
    return {"train_s": seconds, "train_targets_per_s": targets / max(seconds, 1e-9), "train_steps": float(len(losses)),
            "final_loss": float(np.mean(losses[-20:])) if losses else float("nan")}


@torch.no_grad()
def item_vectors(task: RetrievalTask, batches: Batches, hist_ts: int | None, chunk: int = 4096) -> torch.Tensor:
    """(N, d) every item's vector, histories as of ``hist_ts`` (None: no history)."""
    n_items = len(batches.items)
    out = []
    for first in range(0, n_items, chunk):
        rows = np.arange(first, min(n_items, first + chunk))
        times = None if hist_ts is None else np.full(len(rows), hist_ts)
        out.append(task.items(batches.item_batch(rows, times, test=True)))
    return torch.cat(out)


@torch.no_grad()
def user_vectors(task: RetrievalTask, batches: Batches, split: Split, chunk: int = 2048) -> torch.Tensor:
    """(len(split.test), d) each test positive's user vector: the user's positives strictly before it."""
    positives = batches.positives
    parts = np.array_split(split.test, max(1, -(-len(split.test) // chunk)))
    out = [task.users(batches.seq_batch(positives.user_idx[events], positives.ts[events])) for events in parts]
    return torch.cat(out) if out else torch.zeros(0, 1)


@torch.no_grad()
def score(task: RetrievalTask, variant: Variant, batches: Batches, split: Split, config: IHMOfflineConfig, seed: int,
          users: torch.Tensor | None = None, chunk: int = 1024) -> np.ndarray:
    """Rank of each test positive's item (candidates strictly higher), in ``split.test`` order.
    ``users``: :func:`user_vectors` of the task (computed when not given)."""
    positives, items = batches.positives, batches.items
    test = split.test
    user_vecs = user_vectors(task, batches, split) if users is None else users
    refresh = max(1, int(round(config.refresh_hours * 3600)))
    bucket = ((positives.ts[test] - split.split_ts) // refresh if variant.history == "live"
              else np.zeros(len(test), np.int64))
    by_upload = np.argsort(items.upload_ts, kind="stable")
    upload_sorted = items.upload_ts[by_upload]
    rng = np.random.default_rng([seed, 0x5C0])
    rank = np.zeros(len(test), np.int64)
    item_vecs = None
    for refresh_index in np.unique(bucket):
        in_bucket = np.flatnonzero(bucket == refresh_index)
        hist_ts = {"live": split.split_ts + int(refresh_index) * refresh, "frozen": split.split_ts,
                   "none": None}[variant.history]
        if item_vecs is None or variant.history == "live":
            item_vecs = item_vectors(task, batches, hist_ts)  # (N, d)
        for first in range(0, len(in_bucket), chunk):
            part = in_bucket[first : first + chunk]
            events = test[part]
            n_events, ts, target = len(events), positives.ts[events], positives.item[events]
            query = user_vecs[part]  # (m, d)
            seen_row, seen_item = batches.user_items.pairs(positives.user_idx[events], ts)
            if config.eval_negatives == 0:
                scores = (query @ item_vecs.T).numpy()  # (m, N)
                scores[items.upload_ts[None, :] > ts[:, None]] = -np.inf
                scores[seen_row, seen_item] = -np.inf
                true = scores[np.arange(n_events), target].copy()  # (m,)
                scores[np.arange(n_events), target] = -np.inf  # the target never outranks itself
                rank[part] = (scores > true[:, None]).sum(1)
            else:
                candidates, excluded = sampled_candidates(rng, upload_sorted, by_upload, ts, target, seen_row, seen_item,
                                                          config.eval_negatives, len(items))
                scores = (query[:, None, :] * item_vecs[torch.from_numpy(candidates)]).sum(-1).numpy()  # (m, n)
                scores[excluded] = -np.inf
                true = (query * item_vecs[torch.from_numpy(target)]).sum(-1).numpy()
                rank[part] = (scores > true[:, None]).sum(1)
    return rank
