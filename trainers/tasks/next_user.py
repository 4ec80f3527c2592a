"""NextUserTask: the online training step of Next-User Retrieval on an arm's own cold-item exposures (pure torch).

A training sample is one exposure of a cold item, feature-logged at serve time: the item's
prefix features, its positive-user sequence *before* the exposure (``nu_seq``, ``nu_len``;
``nu_len = -1`` marks exposures that are not of cold items), the requesting user's id and
dense features, and the world's response. Like/comment = interacted (R = 1).

Loss (paper eq. 4-7, :mod:`trainers.losses`):
  contrastive on interacted samples: u^_next vs the requesting user's user-tower vector, negatives
  = the other interacted samples' users and random exposed users of the tick;
  CE on every sample: sigmoid(u^_next . u) against R;
  auxiliary on interacted samples: sum_j ||sg(u_j) - u^_j||^2, u_j the sequence users' ID
  embeddings and u_{n+1} the requesting user's ID embedding (the UID domain, paper 2.3-2.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainers.checkpoint import capture, restore, torch_state
from trainers.learner import as_tensor
from trainers.losses import NextUserLossConfig, auxiliary_loss, contrastive_loss, exposure_ce_loss
from trainers.models.next_user import NextUserConfig, NextUserModel
from trainers.models.two_tower import TwoTowerConfig, UserTower
from trainers.optim import RowGradAdam
from trainers.tasks.base import Task
from trainers.weights import pack_weights

POSITIVE_COLS = (0, 1)  # like, comment


@dataclass
class NextUserTaskState:
    """What a :class:`NextUserTask` checkpoints."""

    model: dict = torch_state()
    user_tower: dict = torch_state()
    opt: dict = torch_state()


class NextUserTask(Task):
    """Owns the Next-User model, the requesting-user tower and their optimiser."""

    name = "next_user"
    NOT_SAVED = ("loss_cfg", "batch_size", "max_samples")

    def __init__(self, cfg: NextUserConfig, loss_cfg: NextUserLossConfig, tt_cfg: TwoTowerConfig, lr: float,
                 batch_size: int, seed: int, max_samples: int = 8192):
        torch.manual_seed(seed)
        self.model = NextUserModel(cfg)
        self.user_tower = UserTower(tt_cfg)
        self.loss_cfg = loss_cfg
        # fused: one kernel over every parameter (8x faster steps than the per-tensor loop over the 2^15-row tables;
        # the same algorithm, float rounding apart; docs/performance.md, "Training")
        self.opt = RowGradAdam([self.model, self.user_tower], lr)
        self.batch_size = batch_size
        self.max_samples = max_samples

    @property
    def draws_global_rng(self) -> bool:
        """Only the transformer layers' dropout draws from torch's global generator (every other draw comes from
        the tick's generator); it is 0 unless configured."""
        return self.model.cfg.dropout > 0

    @staticmethod
    def select(batch: dict[str, np.ndarray], max_samples: int, g: torch.Generator) -> np.ndarray:
        """Rows to train on: every interacted cold-item exposure, then non-interacted ones up to ``max_samples``."""
        if "nu_len" not in batch:
            return np.empty(0, np.int64)
        cold = batch["nu_len"] >= 0
        pos = cold & batch["labels"][:, list(POSITIVE_COLS)].any(1)
        neg = np.flatnonzero(cold & ~pos)
        keep_neg = max(0, max_samples - int(pos.sum()))
        if len(neg) > keep_neg:
            neg = np.sort(neg[torch.randperm(len(neg), generator=g)[:keep_neg].numpy()])
        return np.sort(np.concatenate([np.flatnonzero(pos), neg]))

    def losses(self, mb: dict[str, torch.Tensor], random_users: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(mb)
        u = self.user_tower(mb["user_id"], mb["user_dense"])  # (B, d) requesting users, full features
        y = mb["labels"][:, list(POSITIVE_COLS)].any(1)  # (B,) R = 1
        ce = exposure_ce_loss(out.u_next, u[:, None, :], y[:, None].float(), torch.ones_like(y)[:, None],
                              self.loss_cfg.ce_temperature)
        zero = out.u_next.new_zeros(())
        con, aux = zero, zero
        if y.any():
            con = contrastive_loss(out.u_next[y], u[y], random_users, self.loss_cfg.tau)
            seq, n = self.model.visible_sequence(mb)
            seq_emb = self.model.user_emb(seq.clamp(min=0))  # (B, L, d) UID embeddings (targets, detached in the loss)
            next_uid = self.model.user_emb(mb["user_id"])  # (B, d) u_{n+1}: the next user's UID embedding
            aux = auxiliary_loss(out.u_hat[y], seq_emb[y], n[y], next_uid[y])
        c = self.loss_cfg
        return {"total": c.l1 * con + c.l2 * ce + c.l3 * aux, "contrastive": con, "ce": ce, "aux": aux}

    def train(self, batch: dict[str, np.ndarray], tick_seed: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(tick_seed)
        rows = self.select(batch, self.max_samples, g)
        if len(rows) == 0:
            return {"samples": 0.0}
        t = {
            "item_id": as_tensor(batch["item_id"][rows]), "category": as_tensor(batch["category"][rows]),
            "creator_id": as_tensor(batch["creator_id"][rows]), "item_dense": as_tensor(batch["item_dense"][rows]),
            "seq_users": as_tensor(batch["nu_seq"][rows]), "seq_len": as_tensor(np.maximum(batch["nu_len"][rows], 0)),
            "user_id": as_tensor(batch["user_id"][rows]), "user_dense": as_tensor(batch["user_dense"][rows]),
            "labels": as_tensor(batch["labels"][rows]),
        }
        self.model.train()
        self.user_tower.train()
        sums: dict[str, float] = {}
        steps = 0
        perm = torch.randperm(len(rows), generator=g)
        for s in range(0, len(rows), self.batch_size):
            idx = perm[s : s + self.batch_size]
            mb = {k: v[idx] for k, v in t.items()}
            r = torch.randint(0, len(rows), (self.loss_cfg.n_random_negatives,), generator=g)
            random_users = self.user_tower(t["user_id"][r], t["user_dense"][r])
            ls = self.losses(mb, random_users)
            self.opt.zero_grad()
            ls["total"].backward()
            self.opt.step()
            for k, v in ls.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            steps += 1
        return {**{k: v / steps for k, v in sums.items()}, "samples": float(len(rows))}

    def weights(self) -> dict[str, np.ndarray]:
        """The model's and the user tower's parameters under ``model.`` and ``user_tower.``."""
        return pack_weights({"model": self.model, "user_tower": self.user_tower})

    def state(self) -> NextUserTaskState:
        return capture(self, NextUserTaskState)

    def load_state(self, state: NextUserTaskState) -> None:
        restore(self, state)
