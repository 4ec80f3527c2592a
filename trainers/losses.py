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


def sampled_softmax(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float,
                    neg_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over one positive and sampled negatives per query (random negatives, uniform: no logQ term).

    q, pos: (B, d); neg: (B, R, d); neg_valid: (B, R) bool, False for a negative that is the positive itself
    (an accidental hit, masked out). Returns the mean cross-entropy with the positive at index 0.
    """
    lp = (q * pos).sum(-1, keepdim=True)  # (B, 1)
    ln = torch.einsum("bd,brd->br", q, neg)  # (B, R)
    if neg_valid is not None:
        ln = ln.masked_fill(~neg_valid, float("-inf"))
    logits = torch.cat([lp, ln], 1) / temperature  # (B, 1 + R)
    return nn.functional.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
