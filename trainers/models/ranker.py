"""Multi-task ranking model: one logit per response type for each (user, item) pair."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainers.models.two_tower import HashEmbedding


@dataclass
class RankerConfig:
    dim: int = 32
    id_buckets: int = 1 << 15
    n_categories: int = 1024
    n_user_dense: int = 3
    n_item_dense: int = 1
    n_pair_dense: int = 3
    hidden: int = 64
    n_tasks: int = 5


class Ranker(nn.Module):
    """Shared bottom MLP over [E(user); E(item); E(creator); E(category); dense] and one head per task."""

    def __init__(self, cfg: RankerConfig):
        super().__init__()
        self.cfg = cfg
        self.user_emb = HashEmbedding(cfg.id_buckets, cfg.dim)
        self.item_emb = HashEmbedding(cfg.id_buckets, cfg.dim)
        self.creator_emb = HashEmbedding(cfg.id_buckets, cfg.dim)
        self.cat_emb = HashEmbedding(cfg.n_categories, cfg.dim)
        n_in = 4 * cfg.dim + cfg.n_user_dense + cfg.n_item_dense + cfg.n_pair_dense
        self.bottom = nn.Sequential(nn.Linear(n_in, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU())
        self.heads = nn.Linear(cfg.hidden, cfg.n_tasks)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        u = self.user_emb(batch["user_id"])  # (B, d)
        i = self.item_emb(batch["item_id"])  # (B, d)
        c = self.creator_emb(batch["creator_id"])  # (B, d)
        k = self.cat_emb(batch["category"])  # (B, d)
        x = torch.cat([u, i, c, k, batch["user_dense"], batch["item_dense"], batch["pair_dense"]], dim=-1)
        u_i = (u * i).sum(-1, keepdim=True)  # (B, 1) a factorisation-machine style interaction term
        return self.heads(self.bottom(x)) + u_i  # (B, n_tasks) logits
