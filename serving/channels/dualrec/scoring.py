"""DualRec's scoring equations as vectorised functions (SPEC section 5; papers/dualrec_creator_side.txt).

- eq. 10, score integration on the creator side: s(u, i) = sum_k w_k p_k(u, i) / b_u, with b_u the
  user's average interaction rate (v5); without user bias (v1-v4) b_u = 1;
- eq. 14, combined recommendation on the user side: s'(u, i) = s(u, i) + alpha * s_item(u, i) for items
  that come from the user's matching set M_u (the DualRec result-cache channel), s otherwise;
- the exposure budget: at most ``budget`` of a batch's slate slots may go to DualRec items.

The DualRec channel (:mod:`serving.channels.dualrec.channel`) composes these with the UAC store
(:mod:`serving.channels.dualrec.uac`).
"""

from __future__ import annotations

import numpy as np


def integrate_scores(probs: np.ndarray, weights: np.ndarray, user_bias: np.ndarray | None = None,
                     eps: float = 1e-6) -> np.ndarray:
    """Eq. 10: probs (n, T) task probabilities, weights (T,), user_bias (n,) b_u or None -> (n,) scores."""
    s = np.asarray(probs, np.float64) @ np.asarray(weights, np.float64)
    if user_bias is None:
        return s
    b = np.asarray(user_bias, np.float64)
    if (b < 0).any() or not np.isfinite(b).all():
        raise ValueError("integrate_scores: user bias b_u must be finite and >= 0")
    return s / np.maximum(b, eps)


def combined_scores(s_user: np.ndarray, s_item: np.ndarray, from_cache: np.ndarray, alpha: float) -> np.ndarray:
    """Eq. 14: s' = s + alpha * s_item where the candidate came from M_u; (n, C) arrays."""
    return np.where(from_cache, s_user + alpha * s_item, s_user)


def budget_mask(score: np.ndarray, is_dualrec: np.ndarray, slate_size: int, budget: float) -> np.ndarray:
    """(n, C) bool of candidates allowed to compete: every non-DualRec candidate, and only the
    floor(budget * n * slate_size) best-scoring DualRec candidates of the whole batch, so DualRec
    can never take more than ``budget`` of the batch's slots."""
    n = score.shape[0]
    allowed = ~np.asarray(is_dualrec, bool)
    k = int(np.floor(budget * n * slate_size))
    r, c = np.nonzero(is_dualrec)
    if k > 0 and len(r):
        best = np.argsort(-score[r, c], kind="stable")[:k]
        allowed[r[best], c[best]] = True
    return allowed
