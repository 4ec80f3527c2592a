"""The positive control: creator-side matching that knows the truth, under DualRec's exposure budget and user cap.

``OracleMatchChannel`` is :class:`~serving.channels.dualrec.DualRecChannel` with its retrieval and
ranking replaced by the world's truth: for each uploaded item the driver sends the arm's users with
the highest true score ``s(u, i) = sum_k w_k p_k(u, i)`` (the world's response probabilities,
DualRec's eq. 10 weights, no user-bias division) and those scores (:mod:`simulator.world.oracle_match`).
Everything else is DualRec's: the activity model and the available-user store with cap N (eq. 12-13),
the result cache with its expiry, the eq. 14 boost and the budget share of slate slots. It is the
one arm that sees the world's truth, on purpose: if even it cannot raise ExpoReach and cold-item
interactions, the world gives creator-side matching no room (docs/world.md, "Positive control").
"""

from __future__ import annotations

import numpy as np

from serving.channels.dualrec import DualRecChannel


class OracleMatchChannel(DualRecChannel):
    """DualRec's UAC, result cache and combined ranking over candidate users given by the truth."""

    name = "oracle_match"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the truth's candidates of the upload batch being matched (on_oracle runs just before on_upload)
        self.batch_rows = np.zeros(0, np.int64)  # sorted item rows
        self.batch_users = np.full((0, 0), -1, np.int64)  # candidate user ids per row, best first, -1 padded
        self.batch_scores = np.zeros((0, 0), np.float32)  # ... and their true scores

    def on_oracle(self, policy, rows: np.ndarray, user_ids: np.ndarray, scores: np.ndarray) -> None:
        """The truth's candidates for the uploaded item ``rows``: (n, C) user ids (-1 padded) and scores."""
        user_ids, scores = np.asarray(user_ids, np.int64), np.asarray(scores, np.float32)
        if user_ids.shape != scores.shape or user_ids.shape[0] != len(rows):
            raise ValueError(f"oracle candidates: users {user_ids.shape}, scores {scores.shape} for {len(rows)} items")
        order = np.argsort(rows, kind="stable")
        self.batch_rows, self.batch_users = np.asarray(rows, np.int64)[order], user_ids[order]
        self.batch_scores = np.where(user_ids >= 0, scores, -np.inf)[order]

    def _batch(self, rows: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.batch_rows, rows), max(len(self.batch_rows) - 1, 0))
        if len(self.batch_rows) == 0 or (self.batch_rows[pos] != rows).any():
            raise ValueError("oracle_match: items to match without the truth's candidates (upload without oracle=)")
        return pos

    def candidates(self, policy, rows: np.ndarray) -> np.ndarray:
        """The truth's candidates of each item as user rows of the store (-1: a user the arm has not seen)."""
        if len(rows) == 0:
            return np.full((0, 0), -1, np.int64)
        ids = self.batch_users[self._batch(rows)]
        out = np.full(ids.shape, -1, np.int64)
        known = ids >= 0
        out[known] = policy.store.users.rows(ids[known], strict=False)
        return out

    def rank(self, policy, rows: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The true scores, for selection and for eq. 14 alike."""
        sc = np.where(cand >= 0, self.batch_scores[self._batch(rows)], -np.inf)
        return sc, sc

    def on_weights(self, policy, weights: dict, now: int | None) -> None:
        """No models of its own to load."""
