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
so the backward no longer zero-fills a whole table per lookup, and keeps a table's moments by rows while few of its
rows have moved (most tables of the arms' strategy models end a default run with 1-14 % of their rows moved). The
same optimiser, the same numbers bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.adam import adam

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


class _Rows:
    """One table's Adam moments for the rows a gradient has reached, in the order they first did (``rows``); every
    other row has zero moments, so dense Adam leaves it where it is (no weight decay)."""

    def __init__(self, n_rows: int, dim: int):
        self.slot = torch.full((n_rows,), -1, dtype=torch.long)  # a row's position in rows/m/v, -1: none yet
        self.rows = torch.empty(0, dtype=torch.long)
        self.m, self.v = torch.zeros(0, dim), torch.zeros(0, dim)  # capacity; the first k are in use
        self.k = 0
        self.step = torch.zeros((), dtype=torch.float32)  # as fused Adam's state["step"]

    def take(self, rows: torch.Tensor) -> None:
        fresh = rows[self.slot[rows] < 0]
        if len(fresh) == 0:
            return
        fresh = torch.unique(fresh)
        k, n = self.k, self.k + len(fresh)
        if n > len(self.rows):
            cap = max(2 * len(self.rows), n, 64)
            self.rows = torch.cat([self.rows[:k], torch.empty(cap - k, dtype=torch.long)])
            self.m = torch.cat([self.m[:k], self.m.new_zeros(cap - k, self.m.shape[1])])
            self.v = torch.cat([self.v[:k], self.v.new_zeros(cap - k, self.v.shape[1])])
        self.rows[k:n] = fresh
        self.slot[fresh] = torch.arange(k, n)
        self.k = n

    def dense(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dense Adam's ``state`` of the table: the same step, the moments at their rows, zero elsewhere."""
        rows = self.rows[: self.k]
        return {"step": self.step, "exp_avg": torch.zeros_like(weight).index_copy_(0, rows, self.m[: self.k]),
                "exp_avg_sq": torch.zeros_like(weight).index_copy_(0, rows, self.v[: self.k])}


class RowGradAdam(torch.optim.Adam):
    """Fused dense Adam over the parameters of ``modules`` (each once, in module order: a table two modules share is
    one parameter), their :class:`HashEmbedding` tables taking their gradients by rows (``HashEmbedding.row_grads``):
    :meth:`step` densifies them (``HashEmbedding.densify_grad``) first. The algorithm, its state dict and every number
    are ``torch.optim.Adam(those parameters, lr=lr, fused=True)``'s.

    Moments by rows: a row no gradient has reached has zero moments, and dense Adam (no weight decay) leaves it
    exactly where it is, yet reads and writes it and its moments at every step. While at most ``rows_below`` of a
    table's rows have had a gradient, the table's moments are kept for those rows only (:class:`_Rows`) and the step
    runs fused Adam over them (the same elementwise kernel, the same step count): the same numbers bit for bit, a
    fraction of the memory traffic. Past that share the table goes back to dense Adam for good (gathering and
    scattering many rows costs more than the dense pass). :meth:`state_dict` gives dense Adam's state dict;
    :meth:`load_state_dict` takes one and keeps by rows the tables with few moving rows."""

    def __init__(self, modules: Iterable[nn.Module], lr: float, rows_below: float = 0.2):
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
        self.rows_below = rows_below
        self._rows = {id(t): _Rows(*t.emb.weight.shape) for t in self.tables}

    def _limit(self, table: HashEmbedding) -> float:
        return self.rows_below * table.emb.weight.shape[0]

    def _to_dense(self, table: HashEmbedding) -> None:
        rows = self._rows.pop(id(table))
        if rows.step > 0:  # dense Adam has a state for a parameter once it has stepped it
            self.state[table.emb.weight] = rows.dense(table.emb.weight)

    @torch.no_grad()
    def step(self, closure=None):
        held = []
        for table in self.tables:
            weight, rows = table.emb.weight, self._rows.get(id(table))
            if rows is not None and weight.grad is not None:
                if weight.grad.is_sparse:
                    rows.take(weight.grad._indices()[0])
                    if rows.k <= self._limit(table):
                        held.append((weight, rows, weight.grad))
                        weight.grad = None  # dense Adam skips it
                        continue
                self._to_dense(table)
            table.densify_grad()
        out = super().step(closure)
        group = self.param_groups[0]
        for weight, rows, grad in held:
            where = rows.rows[: rows.k]
            dense_grad = grad._values().new_zeros(rows.k, weight.shape[1])
            dense_grad.index_add_(0, rows.slot[grad._indices()[0]], grad._values())  # in order, as densify_grad
            param = weight.index_select(0, where)
            adam([param], [dense_grad], [rows.m[: rows.k]], [rows.v[: rows.k]], [], [rows.step], fused=True,
                 amsgrad=False, beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"],
                 weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])
            weight.index_copy_(0, where, param)
            weight.grad = grad
        return out

    def state_dict(self) -> dict[str, Any]:
        tables = [t for t in self.tables if id(t) in self._rows and self._rows[id(t)].step > 0]
        for table in tables:
            self.state[table.emb.weight] = self._rows[id(table)].dense(table.emb.weight)
        try:
            return super().state_dict()
        finally:
            for table in tables:
                del self.state[table.emb.weight]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._rows = {}
        for table in self.tables:
            weight = table.emb.weight
            rows = _Rows(*weight.shape)
            state = self.state.get(weight)
            if state:
                moving = torch.nonzero((state["exp_avg"] != 0).any(1) | (state["exp_avg_sq"] != 0).any(1))[:, 0]
                if len(moving) > self._limit(table):
                    continue  # stays dense
                rows.take(moving)
                rows.m[: rows.k] = state["exp_avg"][moving]
                rows.v[: rows.k] = state["exp_avg_sq"][moving]
                rows.step = state["step"]
                del self.state[weight]
            self._rows[id(table)] = rows


def make_optimizer(module: nn.Module, lr: float, kind: str = "adam") -> RowGradAdam | LazyAdam:
    """The optimiser of one base model: ``adam`` (fused dense Adam over every parameter, :class:`RowGradAdam`) or
    ``lazy_adam``."""
    if kind == "adam":
        return RowGradAdam([module], lr)
    if kind == "lazy_adam":
        return LazyAdam(module, lr)
    raise ValueError(f"unknown optimizer {kind!r}: expected one of {OPTIMIZERS}")
