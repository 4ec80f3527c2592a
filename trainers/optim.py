"""The base models' optimisers: dense Adam (the default) or a lazy Adam over the hashed-id tables.

The base learner's two-tower and ranker are mostly hashed-id tables (2^15 rows each) of which a minibatch of 256
touches a few hundred rows. Dense Adam (``torch.optim.Adam``, fused) reads and writes every row of every table
and its two moments at every step, and the embedding backward materialises a dense gradient of the whole table:
on the default run that made the Train worker the critical path (docs/performance.md, "Where the time goes").

``lazy_adam`` is what large recommenders use for such tables (TensorFlow's LazyAdam, torch's SparseAdam): the
tables give sparse gradients and :class:`torch.optim.SparseAdam` updates only the rows a minibatch looked up,
with their moments; every other parameter keeps the fused dense Adam. It is a different optimiser, not a faster
implementation of the same one: under dense Adam a row keeps moving on its decaying moments after its last
lookup; under lazy Adam it stops until it is looked up again, and its moments do not decay meanwhile. So the
metrics of a run change (docs/performance.md, "Lazy Adam (opt-in)", measures by how much);
``TrainConfig.optimizer`` chooses.

A row no gradient ever reached keeps its initial value and zero moments under both, so compact checkpoints
(:mod:`trainers.compact`) store the same rows.

Dense Adam is :class:`RowGradAdam` here and in the arms' tasks: ``torch.optim.Adam`` (fused) whose tables take
their gradients by rows (:class:`trainers.models.two_tower.RowLookup`) and densify them in place before each step,
so the backward no longer zero-fills a whole table per lookup. The same optimiser, the same numbers bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from trainers.models.two_tower import HashEmbedding

OPTIMIZERS = ("adam", "lazy_adam")


class LazyAdam:
    """Lazy Adam over ``module``'s :class:`HashEmbedding` tables (switched to sparse gradients) and fused dense
    Adam over its other parameters, with the one-optimiser interface the learner uses."""

    def __init__(self, module: nn.Module, lr: float):
        tables = [m.emb for m in module.modules() if isinstance(m, HashEmbedding)]
        for table in tables:
            table.sparse = True  # the backward gives the looked-up rows only
        in_tables = {id(table.weight) for table in tables}
        self.sparse = torch.optim.SparseAdam([table.weight for table in tables], lr=lr)
        self.dense = torch.optim.Adam([p for p in module.parameters() if id(p) not in in_tables], lr=lr, fused=True)

    def zero_grad(self) -> None:
        self.sparse.zero_grad()
        self.dense.zero_grad()

    def step(self) -> None:
        self.sparse.step()
        self.dense.step()

    def state_dict(self) -> dict[str, Any]:
        return {"sparse": self.sparse.state_dict(), "dense": self.dense.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"sparse", "dense"}:
            raise ValueError(f"LazyAdam.load_state_dict: expected a lazy Adam's state ('sparse', 'dense'), got "
                             f"{sorted(state)} (a checkpoint written with TrainConfig.optimizer='adam'?)")
        self.sparse.load_state_dict(state["sparse"])
        self.dense.load_state_dict(state["dense"])


class RowGradAdam(torch.optim.Adam):
    """Fused dense Adam over the parameters of ``modules`` (each once, in module order: a table two modules share is
    one parameter), their :class:`HashEmbedding` tables taking their gradients by rows (``HashEmbedding.row_grads``):
    :meth:`step` densifies them (``HashEmbedding.densify_grad``) first. The algorithm, its state dict and every number
    are ``torch.optim.Adam(those parameters, lr=lr, fused=True)``'s."""

    def __init__(self, modules: Iterable[nn.Module], lr: float):
        modules = list(modules)
        self.tables = list({id(m): m for module in modules for m in module.modules()
                            if isinstance(m, HashEmbedding)}.values())
        for table in self.tables:
            if table.emb.sparse:
                raise ValueError("RowGradAdam: a table with nn.Embedding's sparse gradients (lazy Adam's) cannot take "
                                 "its gradients by rows")
            table.row_grads = True
        params = {id(p): p for module in modules for p in module.parameters()}
        super().__init__(list(params.values()), lr=lr, fused=True)

    def step(self, closure=None):
        for table in self.tables:
            table.densify_grad()
        return super().step(closure)


def make_optimizer(module: nn.Module, lr: float, kind: str = "adam") -> RowGradAdam | LazyAdam:
    """The optimiser of one base model: ``adam`` (fused dense Adam over every parameter, :class:`RowGradAdam`) or
    ``lazy_adam``."""
    if kind == "adam":
        return RowGradAdam([module], lr)
    if kind == "lazy_adam":
        return LazyAdam(module, lr)
    raise ValueError(f"unknown optimizer {kind!r}: expected one of {OPTIMIZERS}")
