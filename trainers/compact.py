"""Compact model state for checkpoints: an embedding table as the rows training moved, the rest regenerated.

Most of a checkpoint is hashed-id embedding tables (2^15 rows each) and their Adam moments, and most of their
rows never see an id: a row never looked up with gradients on keeps its initial value and zero moments exactly
(:class:`trainers.models.two_tower.HashEmbedding`). :class:`SparseRows` stores a table as the rows that differ
from a reference it can rebuild bit for bit: zeros (optimiser moments), or the initial draw of the table, from
the generator state saved in the table's ``init_rng`` buffer. The functions here turn a module's state dict, an
optimiser's state dict or a tree of published weights (numpy) into that form and back; loading the expanded
state gives exactly the tensors that were saved, so a resumed run's metrics do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from trainers.models.two_tower import INIT_STD
from trainers.optim import LazyAdam

MIN_ROWS = 4096  # smaller tables are stored as they are
MAX_DENSITY = 0.75  # a table with more rows than this share moved is stored as it is
_TOUCHED, _INIT, _WEIGHT = "touched", "init_rng", "emb.weight"


@dataclass(frozen=True)
class SparseRows:
    """A 2-D table as ``values`` at ``rows``; every other row equals the reference: zeros when ``init_rng`` is
    None, else ``N(0, std^2)`` drawn from that torch generator state (the table's initial values)."""

    shape: tuple[int, int]
    dtype: str
    rows: np.ndarray
    values: np.ndarray
    init_rng: np.ndarray | None
    std: float
    as_torch: bool  # the table was a tensor (else a numpy array)

    def dense(self) -> torch.Tensor | np.ndarray:
        if self.init_rng is None:
            table = torch.zeros(self.shape, dtype=getattr(torch, self.dtype))
        else:
            generator = torch.Generator()
            generator.set_state(torch.from_numpy(self.init_rng.copy()))
            table = torch.empty(self.shape, dtype=getattr(torch, self.dtype)).normal_(0.0, self.std, generator=generator)
        table[torch.from_numpy(self.rows)] = torch.from_numpy(self.values)
        return table if self.as_torch else table.numpy()

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.values.nbytes


def _numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    return value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    return value


def _sparse(table: torch.Tensor | np.ndarray, rows: np.ndarray, init_rng: np.ndarray | None) -> SparseRows | None:
    """``table`` as :class:`SparseRows` over ``rows``, or None where that would not save much."""
    if table.ndim != 2 or table.shape[0] < MIN_ROWS or len(rows) > MAX_DENSITY * table.shape[0]:
        return None
    array = _numpy(table)
    return SparseRows(shape=tuple(array.shape), dtype=str(array.dtype), rows=rows.astype(np.int64),
                      values=array[rows].copy(), init_rng=None if init_rng is None else init_rng.copy(), std=INIT_STD,
                      as_torch=isinstance(table, torch.Tensor))


def _is_touched(key: Any) -> bool:
    """A ``HashEmbedding``'s ``touched`` buffer in a (flat, possibly prefixed) state dict."""
    return isinstance(key, str) and (key == _TOUCHED or key.endswith("." + _TOUCHED))


def compact_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A module's state dict (tensors) or its numpy copy, every large :class:`HashEmbedding` table as the rows its
    ``touched`` buffer marks; everything else copied."""
    out = {key: _copy(value) for key, value in state.items()}
    for key in filter(_is_touched, state):
        prefix = key[: -len(_TOUCHED)]
        weight, init = prefix + _WEIGHT, prefix + _INIT
        if weight in state and init in state:
            rows = np.flatnonzero(_numpy(state[key]))
            sparse = _sparse(state[weight], rows, _numpy(state[init]).astype(np.uint8))
            if sparse is not None:
                out[weight] = sparse
    return out


def compact_optimizer(state: Mapping[str, Any]) -> dict[str, Any]:
    """An optimiser's state dict, every large 2-D moment as its non-zero rows (rows no gradient reached are 0)."""
    compact = {}
    for index, slots in state["state"].items():
        compact[index] = {}
        for name, value in slots.items():
            sparse = None
            if isinstance(value, torch.Tensor) and value.ndim == 2:
                sparse = _sparse(value, np.flatnonzero((value != 0).any(1).numpy()), None)
            compact[index][name] = sparse if sparse is not None else _copy(value)
    return {"state": compact, "param_groups": [dict(group) for group in state["param_groups"]]}


def expand(state: Any) -> Any:
    """The inverse of :func:`compact_state`, :func:`compact_optimizer` and :func:`compact_tree`: every
    :class:`SparseRows` in a (nested) dict, list or tuple rebuilt dense."""
    if isinstance(state, SparseRows):
        return state.dense()
    if isinstance(state, dict):
        return {key: expand(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(expand(value) for value in state)
    return state


def compact_torch(obj: torch.nn.Module | torch.optim.Optimizer | LazyAdam) -> dict[str, Any]:
    """A module's or an optimiser's ``state_dict()`` in compact form (a snapshot: later training does not reach it)."""
    if isinstance(obj, torch.optim.Optimizer):
        return compact_optimizer(obj.state_dict())
    if isinstance(obj, LazyAdam):
        return {part: compact_optimizer(state) for part, state in obj.state_dict().items()}
    return compact_state(obj.state_dict())


def compact_tree(tree: Any, memo: dict[int, Any] | None = None) -> Any:
    """Published weights (nested dicts of numpy arrays, as a learner's ``weights()`` and the driver's collected
    weights) with every flat parameter dict compacted (:func:`compact_state`). A dict reached twice (one shared
    base model's weights in every arm's entry) is compacted once and shared."""
    memo = {} if memo is None else memo
    if id(tree) in memo:
        return memo[id(tree)]
    if isinstance(tree, dict):
        if any(map(_is_touched, tree)):
            out = compact_state(tree)
        else:
            out = {key: compact_tree(value, memo) for key, value in tree.items()}
    elif isinstance(tree, (list, tuple)):
        out = type(tree)(compact_tree(value, memo) for value in tree)
    else:
        return tree
    memo[id(tree)] = out
    return out
