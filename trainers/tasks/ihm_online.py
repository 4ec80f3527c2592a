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

Inductive serving (paper section 4): the weights train during the arm's first ``train_days`` days
(counted from the first day it logs) and then freeze; after that ``train`` returns at once and
``weights()`` stays the same, so the channel has nothing new to load and later embeddings change
only through new interactions. ``periodic_retrain`` keeps training (the paper's extension).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from trainers.checkpoint import capture, restore, torch_state
from trainers.learner import as_tensor
from trainers.losses import sampled_softmax_logq
from trainers.models.ihm import IHMConfig, ItemHistoryModel
from trainers.models.sasrec import SASRecConfig, SASRecUserTower
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


class IHMTask(Task):
    """Owns the IHM item tower, the SASRec user tower (sharing E_S) and their optimiser."""

    name = "ihm"
    NOT_SAVED = ("tau", "batch_size", "max_samples", "train_days", "periodic_retrain", "epochs", "replay_size")

    def __init__(self, item_cfg: IHMConfig, user_cfg: SASRecConfig, tau: float, lr: float, batch_size: int,
                 seed: int, max_samples: int, train_days: int, periodic_retrain: bool, epochs: int = 1,
                 replay_size: int = 0):
        torch.manual_seed(seed)
        self.item_tower = ItemHistoryModel(item_cfg)
        self.user_tower = SASRecUserTower(user_cfg, self.item_tower.static)
        params = {id(p): p for m in (self.item_tower, self.user_tower) for p in m.parameters()}  # E_S once
        self.opt = torch.optim.Adam(list(params.values()), lr=lr, fused=True)  # as the base learners (one kernel)
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

    def frozen(self, day: int) -> bool:
        return (not self.periodic_retrain and self.first_day is not None
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
            return {"samples": 0.0, "frozen": 1.0}
        # dropout and history dropout draw from torch's global generator: seed it by tick (a function of the
        # position in the run, so a resumed run draws the same) and leave the caller's generator as it was
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tick_seed)
            return self._train(batch, torch.Generator().manual_seed(tick_seed))

    def _train(self, batch: dict[str, np.ndarray], g: torch.Generator) -> dict[str, float]:
        new = self.select(batch, self.max_samples, g)
        data = self._remember(batch, new)
        n = len(data["item_id"])
        rows = np.arange(n)
        if n > self.max_samples:
            rows = np.sort(torch.randperm(n, generator=g)[: self.max_samples].numpy())
        if len(rows) < 2:
            return {"samples": float(len(new)), "trained": float(len(rows)), "frozen": 0.0}
        seq = {k: as_tensor(data[col][rows]) for k, col in USER_SEQ_KEYS.items()}
        seq["seq_len"] = as_tensor(data["ihm_ulen"][rows])
        item = {k: as_tensor(data[k][rows]) for k in ("item_id", "creator_id", "category", "item_dense")}
        item["hist_users"] = as_tensor(data["ihm_hist"][rows])
        item["hist_len"] = as_tensor(np.maximum(data["ihm_hlen"][rows], 0))
        _, inv, counts = np.unique(data["item_id"][rows], return_inverse=True, return_counts=True)
        key = torch.from_numpy(inv.astype(np.int64))  # (P,) item identity for the accidental-hit mask
        log_q = torch.from_numpy(np.log(counts[inv] / len(rows)).astype(np.float32))  # (P,)
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

