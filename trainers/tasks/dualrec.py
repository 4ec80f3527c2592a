"""DualRecTask: online training of DualRec's creator-side models on the arm's own exposures (pure torch).

Two models, trained tick after tick inside the arm's learner (:class:`trainers.learner.OnlineLearner`):

- the creator-side two-tower (papers/dualrec_creator_side.txt 3.2.2, 5.1.2 v1): positives are the
  (user, item) pairs with a like or comment, negatives are users drawn at random from the tick's
  users; the loss is a softmax over one positive and ``negatives`` random users per item (the
  mirrored direction: the item looks for its users);
- the creator-side multi-task ranker (:class:`trainers.models.creator_ranker.CreatorRanker`), on
  every exposure, with sample augmentation (a copy of each sample with its item id dropped) and the
  extra item features when ``sa_ef`` is on.

Progressive validation: before training on a tick, each ranker variant predicts it; the AUC per task
(and on cold items for likes) is reported in the stats. With ``auc_table`` the three other SA/EF
variants train on the same stream too, giving the paper's Table 4 from one run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainers.checkpoint import capture, restore, torch_state
from trainers.learner import as_tensor
from trainers.losses import multitask_bce, sampled_softmax
from trainers.metrics import auc
from trainers.models.creator_ranker import CreatorRanker, CreatorRankerConfig
from trainers.models.two_tower import TwoTower, TwoTowerConfig
from trainers.optim import RowGradAdam
from trainers.tasks.base import Task
from trainers.weights import pack_weights

POSITIVE_COLS = (0, 1)  # like, comment
AUC_TASKS = ("like", "comment", "follow", "share", "view")
COLD_EXPOSURES = 50  # progressive AUC on items with fewer exposures than this at serve time


def variant_name(sa: bool, ef: bool) -> str:
    return f"sa{int(sa)}_ef{int(ef)}"


@dataclass
class DualRecTaskState:
    """What a :class:`DualRecTask` checkpoints (the rankers and their optimisers by variant name)."""

    two_tower: dict = torch_state()
    opt_tt: dict = torch_state()
    rankers: dict = torch_state()
    opt_rk: dict = torch_state()


class DualRecTask(Task):
    """Owns the creator-side two-tower, the ranker (and, for the AUC table, its SA/EF siblings) and their optimisers."""

    name = "dualrec"
    draws_global_rng = False  # every draw from the tick's generator
    NOT_SAVED = ("main", "sa", "batch_size", "negatives", "temperature", "max_samples")

    def __init__(self, tt_cfg: TwoTowerConfig, rk_cfg: CreatorRankerConfig, sa_ef: bool, lr: float, batch_size: int,
                 seed: int, negatives: int = 64, temperature: float = 0.1, max_samples: int = 16_384,
                 auc_table: bool = False):
        torch.manual_seed(seed)
        self.two_tower = TwoTower(tt_cfg)
        self.opt_tt = RowGradAdam([self.two_tower], lr)
        self.main = variant_name(sa_ef, sa_ef)
        combos = [(sa, ef) for sa in (False, True) for ef in (False, True)] if auc_table else [(sa_ef, sa_ef)]
        self.rankers: dict[str, CreatorRanker] = {}
        self.sa: dict[str, bool] = {}
        for sa, ef in combos:
            name = variant_name(sa, ef)
            self.rankers[name] = CreatorRanker(CreatorRankerConfig(**{**rk_cfg.__dict__, "extra_features": ef}))
            self.sa[name] = sa
        self.opt_rk = {k: RowGradAdam([m], lr) for k, m in self.rankers.items()}
        self.batch_size = batch_size
        self.negatives = negatives
        self.temperature = temperature
        self.max_samples = max_samples

    # ------------------------------------------------------------------ training
    def _batch(self, batch: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, torch.Tensor]:
        columns = ("user_id", "item_id", "creator_id", "category", "user_dense", "item_dense", "labels")
        b = {k: as_tensor(batch[k][rows]) for k in columns}
        b["recent_users"] = as_tensor(batch["dr_recent"][rows])
        b["sim_dense"] = as_tensor(batch["dr_sim"][rows])
        b["drop_item_id"] = torch.zeros(len(rows), dtype=torch.bool)
        return b

    @torch.no_grad()
    def _progressive_auc(self, t: dict[str, torch.Tensor], cold: np.ndarray) -> dict[str, float]:
        out = {}
        y = t["labels"].numpy().astype(bool)
        for name, model in self.rankers.items():
            model.eval()
            p = torch.sigmoid(model(t)).numpy()
            for k, task in enumerate(AUC_TASKS):
                out[f"auc.{name}.{task}"] = auc(p[:, k], y[:, k])
            out[f"auc.{name}.like_cold"] = auc(p[cold, 0], y[cold, 0]) if cold.any() else float("nan")
        return out

    def _train_ranker(self, name: str, t: dict[str, torch.Tensor], g: torch.Generator) -> float:
        model, opt = self.rankers[name], self.opt_rk[name]
        if self.sa[name]:  # sample augmentation: each sample once as is and once without its item id
            n = len(t["user_id"])
            t = {k: torch.cat([v, v]) for k, v in t.items()}
            t["drop_item_id"] = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
        model.train()
        n = len(t["user_id"])
        perm = torch.randperm(n, generator=g)
        losses = []
        for a in range(0, n, self.batch_size):
            idx = perm[a : a + self.batch_size]
            mb = {k: v[idx] for k, v in t.items()}
            loss = multitask_bce(model(mb), mb["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return float(np.mean(losses)) if losses else float("nan")

    def _train_two_tower(self, t: dict[str, torch.Tensor], g: torch.Generator) -> float:
        y = t["labels"][:, list(POSITIVE_COLS)].any(1)
        pos = torch.nonzero(y).squeeze(1)
        users, inv = torch.unique(t["user_id"], return_inverse=True)
        if len(pos) == 0 or len(users) < 2:
            return float("nan")
        # one row per distinct user of the tick (its first exposure): the pool of random negatives
        first_row = torch.full((len(users),), len(inv)).scatter_reduce(0, inv, torch.arange(len(inv)), "amin")
        first = {k: t[k][first_row] for k in ("user_id", "user_dense")}
        self.two_tower.train()
        losses = []
        perm = pos[torch.randperm(len(pos), generator=g)]
        for a in range(0, len(perm), self.batch_size):
            idx = perm[a : a + self.batch_size]
            v = self.two_tower.item(t["item_id"][idx], t["creator_id"][idx], t["category"][idx], t["item_dense"][idx])
            u = self.two_tower.user(t["user_id"][idx], t["user_dense"][idx])  # (B, d)
            r = torch.randint(0, len(users), (len(idx), self.negatives), generator=g)  # (B, R) random users
            un = self.two_tower.user(first["user_id"][r.reshape(-1)], first["user_dense"][r.reshape(-1)])
            un = un.view(len(idx), self.negatives, -1)  # (B, R, d)
            valid = first["user_id"][r] != t["user_id"][idx].unsqueeze(1)
            loss = sampled_softmax(v, u, un, self.temperature, valid)
            self.opt_tt.zero_grad()
            loss.backward()
            self.opt_tt.step()
            losses.append(loss.item())
        return float(np.mean(losses)) if losses else float("nan")

    def train(self, batch: dict[str, np.ndarray], tick_seed: int) -> dict[str, float]:
        if not batch or len(batch["user_id"]) == 0 or "dr_recent" not in batch:
            return {"samples": 0.0}
        g = torch.Generator().manual_seed(tick_seed)
        n = len(batch["user_id"])
        rows = np.arange(n)
        if n > self.max_samples:
            rows = np.sort(torch.randperm(n, generator=g)[: self.max_samples].numpy())
        t = self._batch(batch, rows)
        cold = np.expm1(batch["pair_dense"][rows, 1]) < COLD_EXPOSURES
        stats = self._progressive_auc(t, cold)
        for name in self.rankers:
            stats[f"ranker_loss.{name}"] = self._train_ranker(name, t, g)
        stats["two_tower_loss"] = self._train_two_tower(t, g)
        stats["samples"] = float(len(rows))
        return stats

    # ------------------------------------------------------------------ weights and state
    def weights(self) -> dict[str, np.ndarray]:
        """The two-tower's parameters under ``tt.`` and the main ranker's under ``rank.``."""
        return pack_weights({"tt": self.two_tower, "rank": self.rankers[self.main]})

    def state(self) -> DualRecTaskState:
        return capture(self, DualRecTaskState)

    def load_state(self, state: DualRecTaskState) -> None:
        restore(self, state)
