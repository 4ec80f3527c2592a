"""Loss objects for the arms' models (the models only return embeddings or logits)."""

from __future__ import annotations

import torch
from torch import nn


def in_batch_softmax(u: torch.Tensor, v: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sampled softmax with in-batch negatives: row b's positive is v[b], the other rows are negatives.

    u, v: (B, d). Returns the mean cross-entropy of logits u @ v.T / temperature against the diagonal.
    """
    logits = u @ v.T / temperature  # (B, B)
    target = torch.arange(u.shape[0], device=u.device)
    return nn.functional.cross_entropy(logits, target)


def multitask_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over tasks of the mean binary cross-entropy. logits, labels: (B, T); weights: (T,)."""
    per = nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(0)  # (T,)
    if weights is not None:
        per = per * weights
    return per.sum()
