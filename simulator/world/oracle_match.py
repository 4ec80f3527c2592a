"""The truth's candidate users of new items, for the positive-control arm ``oracle_match``.

For each uploaded item, every user of the arm's bucket is scored by the world's response model,
``s(u, i) = sum_k w_k p_k(u, i)`` with DualRec's eq. 10 weights ``w``, and the ``k`` best go to the
arm with their scores (:class:`serving.channels.dualrec.oracle_match.OracleMatchChannel`). Only the driver
calls this: it is the one place where an arm gets the world's truth, on purpose.
"""

from __future__ import annotations

import numpy as np

from simulator.world.response import ResponseModel
from simulator.core.schema import RESPONSE_TYPES

PAIRS_PER_CHUNK = 1 << 21


def oracle_candidates(response: ResponseModel, item_ids: np.ndarray, user_ids: np.ndarray,
                      rank_weights: dict[str, float], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_items, min(k, n_users)) user ids with the highest true score per item, best first, and those scores."""
    item_ids, user_ids = np.asarray(item_ids, np.int64), np.asarray(user_ids, np.int64)
    w = np.array([rank_weights.get(t, 0.0) for t in RESPONSE_TYPES], np.float32)
    n, m = len(item_ids), len(user_ids)
    k = min(k, m)
    users = np.full((n, k), -1, np.int64)
    scores = np.full((n, k), -np.inf, np.float32)
    if n == 0 or k == 0:
        return users, scores
    step = max(1, PAIRS_PER_CHUNK // m)
    for a in range(0, n, step):
        items = item_ids[a : a + step]
        s = (response.probs(np.tile(user_ids, len(items)), np.repeat(items, m)) @ w).reshape(len(items), m)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        users[a : a + len(items)] = user_ids[top]
        scores[a : a + len(items)] = np.take_along_axis(s, top, 1)
    return users, scores
