"""Two-tower retrieval model: hashed-id embeddings plus dense features -> L2-normalised user and item vectors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_PRIME = 2_654_435_761


@dataclass
class TwoTowerConfig:
    dim: int = 32
    id_buckets: int = 1 << 15
    n_categories: int = 1024
    n_user_dense: int = 3
    n_item_dense: int = 1
    hidden: int = 64


INIT_STD = 0.05  # the tables' initial values: N(0, INIT_STD^2)


class HashEmbedding(nn.Module):
    """An embedding table over ``buckets`` hashed ids: unseen ids (new items, users) need no resize.

    Two buffers travel with the table in its state dict so that a checkpoint can store only the rows that
    training moved (:mod:`trainers.compact`): ``init_rng``, the torch generator state its initial values were
    drawn from (the table is ``N(0, INIT_STD^2)`` drawn from it), and ``touched``, the rows looked up in a
    forward pass with gradients on. A row never looked up with gradients has no gradient and, under Adam without
    weight decay (zero moments), never moves: it equals its initial value exactly."""

    def __init__(self, buckets: int, dim: int):
        super().__init__()
        self.buckets = buckets
        self.emb = nn.Embedding(buckets, dim)
        self.register_buffer("init_rng", torch.get_rng_state())  # draws nothing: the metrics do not change
        nn.init.normal_(self.emb.weight, std=INIT_STD)
        self.register_buffer("touched", torch.zeros(buckets, dtype=torch.bool))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = torch.remainder(ids * _PRIME, self.buckets)
        if torch.is_grad_enabled() and self.emb.weight.requires_grad:
            self.touched[rows] = True
        return self.emb(rows)


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class UserTower(nn.Module):
    """u = normalize(MLP([E_id(user); dense]))."""

    def __init__(self, cfg: TwoTowerConfig):
        super().__init__()
        self.id_emb = HashEmbedding(cfg.id_buckets, cfg.dim)
        self.net = mlp(cfg.dim + cfg.n_user_dense, cfg.hidden, cfg.dim)

    def forward(self, user_id: torch.Tensor, user_dense: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.id_emb(user_id), user_dense], dim=-1)  # (B, d + Fu)
        return nn.functional.normalize(self.net(x), dim=-1)  # (B, d)


class ItemTower(nn.Module):
    """v = normalize(MLP([E_id(item); E(creator); E(category); dense])): content only, no counters,
    so a new item gets a meaningful vector at upload from its creator and category."""

    def __init__(self, cfg: TwoTowerConfig):
        super().__init__()
        self.id_emb = HashEmbedding(cfg.id_buckets, cfg.dim)
        self.creator_emb = HashEmbedding(cfg.id_buckets, cfg.dim)
        self.cat_emb = HashEmbedding(cfg.n_categories, cfg.dim)
        self.net = mlp(3 * cfg.dim + cfg.n_item_dense, cfg.hidden, cfg.dim)

    def forward(self, item_id, creator_id, category, item_dense) -> torch.Tensor:
        x = torch.cat([self.id_emb(item_id), self.creator_emb(creator_id), self.cat_emb(category), item_dense], -1)
        return nn.functional.normalize(self.net(x), dim=-1)  # (B, d)


class TwoTower(nn.Module):
    """User and item towers; similarity is the dot product of the normalised vectors."""

    def __init__(self, cfg: TwoTowerConfig):
        super().__init__()
        self.cfg = cfg
        self.user = UserTower(cfg)
        self.item = ItemTower(cfg)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.user(batch["user_id"], batch["user_dense"])  # (B, d)
        v = self.item(batch["item_id"], batch["creator_id"], batch["category"], batch["item_dense"])  # (B, d)
        return u, v
