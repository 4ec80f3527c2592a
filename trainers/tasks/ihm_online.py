"""IHMTask: the online training step of an IHM arm on its own positives, feature-logged at serve time (pure torch).

A sample is one exposure that got a like or comment. What serving saw is logged with every
exposure by the IHM channel (``serving.channels.ihm.channel.IHMChannel.log_features``): the item's
positive-user history at exposure time (``ihm_hist``, ``ihm_hlen``), the requesting user's last
positive items at request time (``ihm_useq_*``, ``ihm_ulen``; ``ihm_ulen = -1`` marks slots that
are not samples) and the request's day (``ihm_day``).

Loss: the two-tower retrieval loss of the offline protocol (:mod:`trainers.tasks.ihm_offline`), in-batch sampled
softmax with logQ
correction (q = each item's share of the positives trained on), the SASRec user tower over E_S of the
user's items against the IHM item tower on the item's features and history.

A tick holds few positives (tens to a few thousand per arm), so the task keeps the last
``replay_size`` of them and each tick makes ``epochs`` passes over up to ``max_samples`` drawn from
that buffer: by the end of the training days the model has seen them all several times, as a
"train once" checkpoint would.

Early stopping on held-out positives (the online form of the offline protocol's epochs chosen on a validation window,
:mod:`simulator.run.offline_ihm_select`): a ``holdout_share`` of each tick's new positives is never trained on and
joins a held-out set (the latest ``holdout_size``). After each tick's training the current weights (the challenger)
and the best weights so far (the champion) are scored on the same held-out set by the training loss in eval mode (in
chunks of ``batch_size``); the better one becomes the champion. After ``early_stop_ticks`` ticks in which the
challenger lost, the champion's weights are put back and the task freezes; at the end of ``train_days`` the champion's
weights are put back too. Both are scored on the same positives at the same tick, because losses of different ticks
do not compare: each tick's positives are a different draw from a drifting world, with a different number of in-batch
negatives. ``early_stop_ticks = 0`` turns it off; ``periodic_retrain`` never stops.

Inductive serving (paper section 4): the weights train during the arm's first ``train_days`` days
(counted from the first day it logs) and then freeze; after that ``train`` returns at once and
``weights()`` stays the same, so the channel has nothing new to load and later embeddings change
only through new interactions. ``periodic_retrain`` keeps training (the paper's extension).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from trainers.checkpoint import capture, restore, torch_state
from trainers.learner import as_tensor
from trainers.losses import sampled_softmax_logq
from trainers.models.ihm import IHMConfig, ItemHistoryModel
from trainers.models.sasrec import SASRecConfig, SASRecUserTower
from trainers.optim import RowGradAdam
from trainers.tasks.base import Task
from trainers.weights import pack_weights

POSITIVE_COLS = (0, 1)  # like, comment
USER_SEQ_KEYS = {"item_id": "ihm_useq", "creator_id": "ihm_useq_creator", "category": "ihm_useq_cat",
                 "item_dense": "ihm_useq_dense"}
"""User-tower input key -> the logged batch column holding it."""
TRAIN_KEYS = ("item_id", "creator_id", "category", "item_dense", "ihm_hist", "ihm_hlen", *USER_SEQ_KEYS.values(),
              "ihm_ulen")
"""The columns of a positive the task trains on (and keeps in its replay buffer)."""


@dataclass
class IHMTaskState:
    """What an :class:`IHMTask` checkpoints."""

    item_tower: dict = torch_state()
    user_tower: dict = torch_state()
    opt: dict = torch_state()
    first_day: int | None = None
    steps: int = 0
    replay: dict[str, np.ndarray] = field(default_factory=dict)
    best_weights: dict | None = None
    since_best: int = 0
    stopped: bool = False
    holdout: dict[str, np.ndarray] = field(default_factory=dict)


class IHMTask(Task):
    """Owns the IHM item tower, the SASRec user tower (sharing E_S) and their optimiser."""

    name = "ihm"
    draws_global_rng = True  # dropout and history dropout (the global generator, forked and seeded by tick)
    NOT_SAVED = ("tau", "batch_size", "max_samples", "train_days", "periodic_retrain", "epochs", "replay_size",
                 "early_stop_ticks", "holdout_share", "holdout_size", "_scratch")

    def __init__(self, item_cfg: IHMConfig, user_cfg: SASRecConfig, tau: float, lr: float, batch_size: int,
                 seed: int, max_samples: int, train_days: int, periodic_retrain: bool, epochs: int = 1,
                 replay_size: int = 0, early_stop_ticks: int = 0, holdout_share: float = 0.1,
                 holdout_size: int = 1024):
        torch.manual_seed(seed)
        self.item_tower = ItemHistoryModel(item_cfg)
        self.user_tower = SASRecUserTower(user_cfg, self.item_tower.static)
        self.opt = RowGradAdam([self.item_tower, self.user_tower], lr)  # E_S, which both towers hold, once
        self.tau = tau
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.train_days = train_days
        self.periodic_retrain = periodic_retrain
        self.epochs = epochs
        self.replay_size = replay_size
        self.replay: dict[str, np.ndarray] = {}  # the latest logged positives (TRAIN_KEYS), oldest first
        self.first_day: int | None = None
        self.steps = 0  # optimiser steps so far: the weights' version as the channel sees it
        self.early_stop_ticks = early_stop_ticks
        self.holdout_share, self.holdout_size = holdout_share, holdout_size
        self.holdout: dict[str, np.ndarray] = {}  # held-out positives (TRAIN_KEYS), never trained on, latest kept
        self.best_weights: dict | None = None  # the champion: the towers' state with the best held-out loss
        self.since_best = 0  # ticks the challenger has lost since
        self.stopped = False  # early-stopped (or frozen with the champion put back): no more training
        self._scratch: tuple[nn.Module, nn.Module] | None = None  # towers to score the champion's weights in

    @property
    def early_stopping(self) -> bool:
        """Progressive validation is on (not with ``periodic_retrain``, which never stops training)."""
        return self.early_stop_ticks > 0 and not self.periodic_retrain

    def frozen(self, day: int) -> bool:
        return self.stopped or (not self.periodic_retrain and self.first_day is not None
                                and day >= self.first_day + self.train_days)

    @staticmethod
    def select(batch: dict[str, np.ndarray], max_samples: int, g: torch.Generator) -> np.ndarray:
        """Rows to train on: logged positives (like/comment), a random ``max_samples`` of them when more."""
        pos = np.flatnonzero((batch["ihm_ulen"] >= 0) & batch["labels"][:, list(POSITIVE_COLS)].any(1))
        if len(pos) > max_samples:
            pos = np.sort(pos[torch.randperm(len(pos), generator=g)[:max_samples].numpy()])
        return pos

    def _remember(self, batch: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        """The tick's positives joined to the replay buffer (the last ``replay_size`` kept); returns what to train on."""
        new = {k: batch[k][rows] for k in TRAIN_KEYS}
        if self.replay_size <= 0:
            return new
        if self.replay:
            new = {k: np.concatenate([self.replay[k], v]) for k, v in new.items()}
        self.replay = {k: v[-self.replay_size :] for k, v in new.items()}
        return self.replay

    def train(self, batch: dict[str, np.ndarray], tick_seed: int) -> dict[str, float]:
        if "ihm_day" not in batch or len(batch["ihm_day"]) == 0:
            return {"samples": 0.0}
        day = int(batch["ihm_day"].min())
        if self.first_day is None:
            self.first_day = day
        if self.frozen(day):
            if self.early_stopping and not self.stopped:  # the end of train_days: the champion's weights, once
                self._stop()
            return {"samples": 0.0, "frozen": 1.0}
        # dropout and history dropout draw from torch's global generator: seed it by tick (a function of the
        # position in the run, so a resumed run draws the same) and leave the caller's generator as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tick_seed)
            return self._train(batch, torch.Generator().manual_seed(tick_seed))

    @staticmethod
    def tensors(data: dict[str, np.ndarray], rows: np.ndarray) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
        """The towers' inputs for ``rows`` of logged positives (user sequences, items with their histories), each row's
        item identity (P,) for the accidental-hit mask and log q (P,), q = the item's share of these rows."""
        seq = {k: as_tensor(data[col][rows]) for k, col in USER_SEQ_KEYS.items()}
        seq["seq_len"] = as_tensor(data["ihm_ulen"][rows])
        item = {k: as_tensor(data[k][rows]) for k in ("item_id", "creator_id", "category", "item_dense")}
        item["hist_users"] = as_tensor(data["ihm_hist"][rows])
        item["hist_len"] = as_tensor(np.maximum(data["ihm_hlen"][rows], 0))
        _, inv, counts = np.unique(data["item_id"][rows], return_inverse=True, return_counts=True)
        return (seq, item, torch.from_numpy(inv.astype(np.int64)),
                torch.from_numpy(np.log(counts[inv] / len(rows)).astype(np.float32)))

    @torch.no_grad()
    def holdout_loss(self, item_tower: nn.Module, user_tower: nn.Module) -> float:
        """The training loss of the given towers, in eval mode, on the held-out positives, in chunks of ``batch_size``
        (the in-batch negatives of a training step) in a fixed order; NaN when fewer than 2 are held out."""
        data, losses, weights = self.holdout, [], []
        n = len(data.get("item_id", ()))
        item_tower.eval()
        user_tower.eval()
        for s in range(0, n - 1, self.batch_size):
            part = np.arange(s, min(n, s + self.batch_size))
            if len(part) < 2:
                continue
            seq, item, key, log_q = self.tensors(data, part)
            loss = sampled_softmax_logq(user_tower(seq), item_tower(item), key, log_q, self.tau)
            losses.append(float(loss))
            weights.append(len(part))
        return float(np.average(losses, weights=weights)) if losses else float("nan")

    def _hold_out(self, batch: dict[str, np.ndarray], rows: np.ndarray, g: torch.Generator) -> np.ndarray:
        """Moves a ``holdout_share`` of ``rows`` (the tick's new positives) to the held-out set; returns the rest."""
        held = (torch.rand(len(rows), generator=g) < self.holdout_share).numpy()
        if held.any():
            new = {k: batch[k][rows[held]] for k in TRAIN_KEYS}
            if self.holdout:
                new = {k: np.concatenate([self.holdout[k], v]) for k, v in new.items()}
            self.holdout = {k: v[-self.holdout_size :] for k, v in new.items()}
        return rows[~held]

    def _champion(self) -> dict[str, float]:
        """Challenger (current weights) against champion (best so far) on the same held-out positives."""
        current = self.holdout_loss(self.item_tower, self.user_tower)
        if current != current:  # nothing held out yet
            return {}
        best = float("inf")
        if self.best_weights is not None:
            if self._scratch is None:
                self._scratch = (copy.deepcopy(self.item_tower), copy.deepcopy(self.user_tower))
            self._scratch[0].load_state_dict(self.best_weights["item"])
            self._scratch[1].load_state_dict(self.best_weights["user"])
            best = self.holdout_loss(*self._scratch)
        if current < best:
            self.best_weights = {"item": copy.deepcopy(self.item_tower.state_dict()),
                                 "user": copy.deepcopy(self.user_tower.state_dict())}
            self.since_best = 0
        else:
            self.since_best += 1
        out = {"holdout_loss": current, "holdout_loss_best": min(current, best)}
        if self.since_best >= self.early_stop_ticks:
            self._stop()
            out |= {"early_stopped": 1.0, "frozen": 1.0}
        return out

    def _stop(self) -> None:
        """Freeze with the champion's weights (a new weights version when they differ from the current ones)."""
        self.stopped = True
        if self.best_weights is not None and self.since_best > 0:
            self.item_tower.load_state_dict(self.best_weights["item"])
            self.user_tower.load_state_dict(self.best_weights["user"])
            self.steps += 1  # the channel loads weights by version

    def _train(self, batch: dict[str, np.ndarray], g: torch.Generator) -> dict[str, float]:
        new = self.select(batch, self.max_samples, g)
        if not self.early_stopping:
            return self._fit(batch, new, g)
        stats = self._fit(batch, self._hold_out(batch, new, g), g)
        held = float(len(self.holdout.get("item_id", ())))
        return stats | {"samples": float(len(new)), "held_out": held} | self._champion()

    def _fit(self, batch: dict[str, np.ndarray], new: np.ndarray, g: torch.Generator) -> dict[str, float]:
        data = self._remember(batch, new)
        n = len(data["item_id"])
        rows = np.arange(n)
        if n > self.max_samples:
            rows = np.sort(torch.randperm(n, generator=g)[: self.max_samples].numpy())
        if len(rows) < 2:
            return {"samples": float(len(new)), "trained": float(len(rows)), "frozen": 0.0}
        seq, item, key, log_q = self.tensors(data, rows)
        self.item_tower.train()
        self.user_tower.train()
        losses = []
        for _ in range(self.epochs):
            perm = torch.randperm(len(rows), generator=g)
            for s in range(0, len(rows), self.batch_size):
                idx = perm[s : s + self.batch_size]
                if len(idx) < 2:
                    continue
                u = self.user_tower({k: v[idx] for k, v in seq.items()})  # (B, d)
                v = self.item_tower({k: t[idx] for k, t in item.items()})  # (B, d)
                loss = sampled_softmax_logq(u, v, key[idx], log_q[idx], self.tau)
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.steps += 1
                losses.append(float(loss.detach()))
        return {"loss": float(np.mean(losses)) if losses else float("nan"), "samples": float(len(new)),
                "trained": float(len(rows)), "frozen": 0.0}

    def weights(self) -> dict[str, np.ndarray]:
        """The towers' parameters under ``item.`` and ``user.``, and the optimiser steps as ``meta.steps``."""
        packed = pack_weights({"item": self.item_tower, "user": self.user_tower})
        return packed | {"meta.steps": np.array(self.steps, np.int64)}

    def state(self) -> IHMTaskState:
        return capture(self, IHMTaskState)

    def load_state(self, state: IHMTaskState) -> None:
        restore(self, state)

