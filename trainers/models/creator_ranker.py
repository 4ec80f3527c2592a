"""DualRec's creator-side multi-task ranker: a two-tower backbone predicting each (user, item) response.

papers/dualrec_creator_side.txt 3.3 and 5.1.2: "in the ranking module we also adopt the two-tower
model as a backbone" and predict likes, comments, follows, shares and effective views (the log has
no profile visits, so that task is dropped). The two changes of 3.3.1:

- sample augmentation (SA): every training sample is also fed with the item id dropped
  (``drop_item_id``: its embedding replaced by zeros), so the model learns from side features
  what it cannot learn from the id of a long-tail item;
- extra item features (EF): the item's recent interacted users (mean of their id embeddings) and
  information on content-similar items (their interaction rate and exposures, ``sim_dense``).

Per task k the towers output unit vectors u_k, v_k in R^d and p_k = sigmoid(s * <u_k, v_k> + b_k) (a learnt
scale s: raw dot products of two small MLP outputs start at a saddle and trained far slower), so ranking
many users for one uploaded item is a matrix product over precomputed user vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainers.models.two_tower import HashEmbedding, mlp

N_SIM_DENSE = 2  # content-similar items: smoothed interaction rate, log exposures


@dataclass
class CreatorRankerConfig:
    dim: int = 16
    id_buckets: int = 1 << 15
    n_categories: int = 1024
    n_user_dense: int = 3
    n_item_dense: int = 1
    hidden: int = 64
    n_tasks: int = 5
    extra_features: bool = True  # EF


class CreatorRanker(nn.Module):
    """Two towers with one unit vector per task; logits (B, K) = s_k <u_k, v_k> + b_k."""

    def __init__(self, cfg: CreatorRankerConfig):
        super().__init__()
        self.cfg = cfg
        K, d = cfg.n_tasks, cfg.dim
        self.user_emb = HashEmbedding(cfg.id_buckets, d)
        self.item_emb = HashEmbedding(cfg.id_buckets, d)
        self.creator_emb = HashEmbedding(cfg.id_buckets, d)
        self.cat_emb = HashEmbedding(cfg.n_categories, d)
        self.user_net = mlp(d + cfg.n_user_dense, cfg.hidden, K * d)
        n_item_in = 3 * d + cfg.n_item_dense + ((d + N_SIM_DENSE + 1) if cfg.extra_features else 0)
        self.item_net = mlp(n_item_in, cfg.hidden, K * d)
        self.bias = nn.Parameter(torch.zeros(K))
        self.log_scale = nn.Parameter(torch.full((K,), 1.6))  # s = e^1.6 ~ 5 at init

    def user(self, user_id: torch.Tensor, user_dense: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.user_emb(user_id), user_dense], -1)  # (B, d + Fu)
        return nn.functional.normalize(self.user_net(x).view(-1, self.cfg.n_tasks, self.cfg.dim), dim=-1)  # (B, K, d)

    def item(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Item vectors (B, K, d). ``drop_item_id`` (B,) bool zeroes the id embedding (SA); with EF the batch
        carries ``recent_users`` (B, R) ids, -1 padded, and ``sim_dense`` (B, 2)."""
        e_id = self.item_emb(batch["item_id"])  # (B, d)
        drop = batch.get("drop_item_id")
        if drop is not None:
            e_id = e_id * (~drop).unsqueeze(-1).to(e_id.dtype)
        parts = [e_id, self.creator_emb(batch["creator_id"]), self.cat_emb(batch["category"]), batch["item_dense"]]
        if self.cfg.extra_features:
            ru = batch["recent_users"]  # (B, R)
            valid = (ru >= 0).to(e_id.dtype)  # (B, R)
            n = valid.sum(1, keepdim=True)  # (B, 1)
            pooled = (self.user_emb(ru.clamp(min=0)) * valid.unsqueeze(-1)).sum(1) / n.clamp(min=1)  # (B, d)
            parts += [pooled, batch["sim_dense"], torch.log1p(n)]
        x = torch.cat(parts, -1)
        return nn.functional.normalize(self.item_net(x).view(-1, self.cfg.n_tasks, self.cfg.dim), dim=-1)  # (B, K, d)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        u = self.user(batch["user_id"], batch["user_dense"])  # (B, K, d)
        v = self.item(batch)  # (B, K, d)
        return self.logits((u * v).sum(-1))  # (B, K)

    def logits(self, cos: torch.Tensor) -> torch.Tensor:
        """Cosines (..., K) of user and item vectors -> logits (..., K)."""
        return cos * self.log_scale.exp() + self.bias

    def pair_logits(self, item_vecs: torch.Tensor, user_vecs: torch.Tensor) -> torch.Tensor:
        """Every item against every user: (I, K, d) x (U, K, d) -> (I, U, K) logits."""
        return self.logits(torch.einsum("ikd,ukd->iuk", item_vecs, user_vecs))
