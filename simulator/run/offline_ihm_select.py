"""Per-model training budgets for the IHM offline protocol, chosen on a validation window that ends at the split.

Every model of the protocol (IHM, the transductive two-tower, SASRec) gets its own number of epochs, picked the
same way and without looking at the test windows (``ihm_offline.epoch_selection = "validation"``):

1. The latest ``validation_share`` of the training positives (by time) is held out: the *validation window*
   [val_ts, split_ts). The rest, the *fit* positives, train a fresh model.
2. After each epoch, up to ``epochs``, the model scores HitRate@K on (a deterministic sample of at most
   ``max_eval_per_window``) validation positives exactly as the test windows are scored (:func:`score`: the same
   candidates, exclusions, histories of known users, refreshes), as of the fit positives only.
3. The chosen budget is the first epoch with the best validation HitRate@K. The model the tables report is then
   trained from scratch on *all* training positives for that many epochs, so that it still sees the days just
   before the split, as the paper's models do.

Why (docs/models/ihm.md, "Why IHM sat at the popularity floor"): IHM's user-id embeddings go on fitting the training
co-occurrences long after the transductive model has stopped improving; at a common fixed budget IHM was scored
past its best point. One budget for all models favoured whichever model it happened to suit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from simulator.core.config import IHMOfflineConfig
from simulator.run.offline_ihm_data import Batches, Chunks, ItemTable, Positives, Split
from simulator.run.offline_ihm_steps import Variant, hit_ndcg, score, train, user_vectors


@dataclass(frozen=True)
class Selection:
    """The validation curve of one model and the budget it gives."""

    epochs: int  # the chosen budget (first best epoch)
    curve: list[float]  # validation HitRate@K after epoch 1, 2, ...
    validation_events: int
    fit_positives: int

    @property
    def best(self) -> float:
        return self.curve[self.epochs - 1]


def log_q_of(split: Split) -> torch.Tensor:
    """logQ correction of the in-batch softmax: each item's share of the split's training positives."""
    return torch.from_numpy(np.log(np.maximum(split.train_count, 1) / max(len(split.train), 1)))


def validation_split(positives: Positives, split: Split, n_items: int, config: IHMOfflineConfig,
                     seed: int) -> Split | None:
    """The validation window as a one-window :class:`Split`: ``train`` = the fit positives (before ``split_ts`` of the
    returned split), ``test`` = a sample of the held-out latest ``validation_share`` of the training positives.
    None when either side would be empty (then the fixed budget is used)."""
    train = split.train
    if len(train) < 4:
        return None
    val_ts = int(np.quantile(positives.ts[train], 1.0 - config.validation_share))
    fit, held = train[positives.ts[train] < val_ts], train[positives.ts[train] >= val_ts]
    if not len(fit) or not len(held):
        return None
    if len(held) > config.max_eval_per_window:
        held = np.sort(np.random.default_rng([seed, 0x5E1]).choice(held, config.max_eval_per_window, replace=False))
    return Split(split_ts=val_ts, end_ts=split.split_ts, edges=np.array([val_ts, split.split_ts], np.float64),
                 train=fit, test=held, window=np.zeros(len(held), np.int64),
                 train_count=np.bincount(positives.item[fit], minlength=n_items))


def select_epochs(build: Callable[[torch.Tensor], object], history: str, positives: Positives, items: ItemTable,
                  split: Split, config: IHMOfflineConfig, seed: int) -> Selection | None:
    """Train a fresh model (``build(log_q)`` -> a :class:`trainers.tasks.ihm_offline.RetrievalTask`) on the fit
    positives, one epoch at a time up to ``config.epochs``, scoring validation HitRate@K after each with item
    histories ``history`` (live / frozen / none, as the variant the model serves). None: no validation window."""
    validation = validation_split(positives, split, len(items), config, seed)
    if validation is None:
        return None
    batches = Batches.of(positives, items, config, validation.train)
    chunks = Chunks.of(positives, validation.train, config.model.seq_len)
    task = build(log_q_of(validation))
    variant = Variant("validation", history)  # type: ignore[arg-type]
    curve = []
    for epoch in range(config.epochs):
        train(task, batches, chunks, 1, config.batch_size, seed + 7919 * (epoch + 1))
        rank = score(task, variant, batches, validation, config, seed, users=user_vectors(task, batches, validation))
        curve.append(float(hit_ndcg(rank, config.k)[0].mean()))
    return Selection(epochs=int(np.argmax(curve)) + 1, curve=curve, validation_events=int(len(validation.test)),
                     fit_positives=int(len(validation.train)))
