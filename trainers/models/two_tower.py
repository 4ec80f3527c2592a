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


class RowLookup(torch.autograd.Function):
    """``weight[rows]`` whose backward gives the gradient by rows: a sparse tensor with one entry per distinct row, the
    row's gradients summed in lookup order (``index_add_`` from zero, as ``embedding_dense_backward`` sums them).

    Densified by :meth:`HashEmbedding.densify_grad` into a dense gradient equal, bit for bit, to the one
    ``nn.Embedding``'s dense backward gives: autograd concatenates the sparse gradients of a table's lookups in the
    order they arrive, the dense backward adds their dense gradients in the same order, and each lookup's entries are
    already summed, so every row adds its lookups' sums in that order either way."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.table_shape = weight.shape
        return weight.index_select(0, rows.reshape(-1)).reshape(*rows.shape, weight.shape[1])  # F.embedding's forward

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        distinct, where = torch.unique(rows.reshape(-1), return_inverse=True)
        sums = grad.new_zeros(len(distinct), grad.shape[-1]).index_add_(0, where, grad.reshape(-1, grad.shape[-1]))
        return torch.sparse_coo_tensor(distinct[None], sums, ctx.table_shape, check_invariants=False), None


class HashEmbedding(nn.Module):
    """An embedding table over ``buckets`` hashed ids: unseen ids (new items, users) need no resize.

    Two buffers travel with the table in its state dict so that a checkpoint can store only the rows that
    training moved (:mod:`trainers.compact`): ``init_rng``, the torch generator state its initial values were
    drawn from (the table is ``N(0, INIT_STD^2)`` drawn from it), and ``touched``, the rows looked up in a
    forward pass with gradients on. A row never looked up with gradients has no gradient and, under Adam without
    weight decay (zero moments), never moves: it equals its initial value exactly.

    ``row_grads`` (set by :class:`trainers.optim.RowGradAdam`): lookups with gradients on go through
    :class:`RowLookup`, whose backward touches only the rows looked up; :meth:`densify_grad` then writes them into a
    dense gradient kept between steps, zeroing only the rows the previous step wrote. ``nn.Embedding``'s dense
    backward instead allocates and zero-fills a gradient of the whole table at every lookup (4 MB for 2^15 rows of
    32), though a minibatch looks up a few hundred rows (docs/performance.md, "Gradients by rows", measures the
    difference). The gradient, and so every weight, is the same bit for bit."""

    def __init__(self, buckets: int, dim: int):
        super().__init__()
        self.buckets = buckets
        self.emb = nn.Embedding(buckets, dim)
        self.register_buffer("init_rng", torch.get_rng_state())  # draws nothing: the metrics do not change
        nn.init.normal_(self.emb.weight, std=INIT_STD)
        self.register_buffer("touched", torch.zeros(buckets, dtype=torch.bool))
        self.row_grads = False
        self._grad: torch.Tensor | None = None  # the dense gradient densify_grad writes (row_grads only)
        self._grad_rows: torch.Tensor | None = None  # its rows written last

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = torch.remainder(ids * _PRIME, self.buckets)
        if torch.is_grad_enabled() and self.emb.weight.requires_grad:
            self.touched[rows] = True
            if self.row_grads:
                return RowLookup.apply(self.emb.weight, rows)
        return self.emb(rows)

    def densify_grad(self) -> None:
        """Turn the table's gradient by rows (:class:`RowLookup`) into its dense gradient, in place of it; a dense
        gradient, or none, is left as it is."""
        weight = self.emb.weight
        grad = weight.grad
        if grad is None or not grad.is_sparse:
            return
        if self._grad is None:
            self._grad = torch.zeros_like(weight)
        else:
            self._grad.index_fill_(0, self._grad_rows, 0.0)  # every other row is still zero
        rows = grad._indices()[0]
        self._grad.index_add_(0, rows, grad._values())
        self._grad_rows = rows
        weight.grad = self._grad


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
