"""Model calls whose every output row depends on its input row alone, not on how many rows came with it.

Two things on a CPU make a row's bits depend on its batch: BLAS kernels pick another code path for very short
matrices (on the pinned torch build a linear layer rounds the rows of a batch of up to 5 rows differently), and
vectorised element-wise functions (``torch.sigmoid``, ``exp``) compute the tail of a tensor that does not fill a
vector register with scalar code that rounds differently. A sharded arm (:mod:`serving.shards`) splits a batch of
requests between shards, so every per-request model call at serving time goes through :func:`row_invariant`, which
pads the batch to a multiple of :data:`ROW_BLOCK` rows (copies of its first row) and cuts the output back: one shard
or several, a request gets the same bits (tests/serving/test_shards.py checks it on the installed build).
"""

from __future__ import annotations

from typing import Callable

import torch

ROW_BLOCK = 32  # rows: whole vector registers for any width up to 32 floats per row and AVX-512 unrolled twice


def _pad(value, n: int):
    if isinstance(value, dict):
        return {key: _pad(v, n) for key, v in value.items()}
    return torch.cat([value, value[:1].expand(n - len(value), *value.shape[1:])])


def row_invariant(fn: Callable[..., torch.Tensor], *inputs) -> torch.Tensor:
    """``fn(*inputs)`` with the inputs (tensors, or dicts of tensors, with rows along dim 0) padded to a multiple of
    :data:`ROW_BLOCK` rows; the output's first ``n`` rows."""
    first = inputs[0]
    n = len(next(iter(first.values()))) if isinstance(first, dict) else len(first)
    padded = -(-n // ROW_BLOCK) * ROW_BLOCK
    if n == padded:
        return fn(*inputs)
    return fn(*(_pad(value, padded) for value in inputs))[:n]
