"""The positive control: creator-side matching that knows the truth, under DualRec's exposure budget and user cap.

``OracleMatchChannel`` is :class:`~serving.channels.dualrec.channel.DualRecChannel` with its candidate
retrieval and ranking replaced by the world's truth: for each uploaded item the driver sends the arm's users with
the highest true score ``s(u, i) = sum_k w_k p_k(u, i)`` (the world's response probabilities,
DualRec's eq. 10 weights, no user-bias division) and those scores (:mod:`simulator.world.oracle_match`).
Everything else is DualRec's: the activity model and the available-user store with cap N (eq. 12-13),
the result cache with its expiry, the eq. 14 boost and the budget share of slate slots. It is the
one arm that sees the world's truth, on purpose: if even it cannot raise ExpoReach and cold-item
interactions, the world gives creator-side matching no room (docs/world.md, "Positive control").
"""

from __future__ import annotations

import numpy as np

from serving.channels.base import OracleCandidates
from serving.channels.dualrec.channel import DualRecChannel
from serving.channels.dualrec.creator_side import RETRIEVALS
from serving.features import FeatureStore


class OracleMatchChannel(DualRecChannel):
    """DualRec's UAC, result cache and combined ranking over candidate users given by the truth."""

    name = "oracle_match"

    def on_upload(self, policy, rows: np.ndarray, oracle: OracleCandidates | None) -> dict[int, list[int]]:
        """DualRec's upload work, the truth's candidates (``oracle``, aligned with ``rows``) replacing its own."""
        if oracle is not None:
            users, scores = np.asarray(oracle.user_ids), np.asarray(oracle.scores)
            if users.shape != scores.shape or users.shape[0] != len(rows):
                raise ValueError(f"oracle candidates: users {users.shape}, scores {scores.shape} for {len(rows)} items")
        return super().on_upload(policy, rows, oracle)

    def scored_candidates(self, store: FeatureStore, rows: np.ndarray, to_match: np.ndarray, oracle: OracleCandidates | None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The truth's candidates of each item as user rows of the store (-1: a user the arm has not seen), their
        true scores, for selection and for eq. 14 alike, and their source (the oracle)."""
        if oracle is None:
            raise ValueError("oracle_match: items to match without the truth's candidates (upload without oracle=)")
        user_ids = np.asarray(oracle.user_ids, np.int64)
        true_scores = np.where(user_ids >= 0, np.asarray(oracle.scores, np.float32), -np.inf)[to_match]
        user_ids = user_ids[to_match]
        cand = np.full(user_ids.shape, -1, np.int64)
        known = user_ids >= 0
        cand[known] = store.users.rows(user_ids[known], strict=False)
        scores = np.where(cand >= 0, true_scores, -np.inf)
        return cand, scores, scores, np.full(cand.shape, RETRIEVALS.index("oracle"), np.int8)

    def on_weights(self, policy, weights: dict, now: int | None) -> None:
        """No models of its own to load."""
