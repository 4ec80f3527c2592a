"""Response models of the world: the interface, the synthetic ground truth and the oracle fitted on a log.

A response model gives, for (user, item) pairs, the probability of each event in
:data:`~simulator.schema.RESPONSE_TYPES`. It is part of the world and never visible to arms.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from simulator.ids import IdMap
from simulator.schema import RESPONSE_TYPES

N_RESP = len(RESPONSE_TYPES)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class ResponseModel(Protocol):
    """What the world needs from a response model."""

    def probs(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """(n, len(RESPONSE_TYPES)) float32 probabilities for aligned user/item arrays."""
        ...

    def register_items(self, item_ids: np.ndarray, creator_ids: np.ndarray, rng: np.random.Generator) -> None:
        """Make items that the log never had (creator-dynamics uploads) known to the model."""
        ...


class LatentFactorResponse:
    """p_e(u, i) = sigmoid(bias_e + a_e * <P_u, V_i> + b_e * q_i + user_e[u] + item_e[i]).

    Used both as the synthetic platform's ground truth and as the oracle fitted on a real log
    (:func:`simulator.oracle.fit_oracle`). Items added later inherit their creator's mean
    factors plus noise, so a creator's new items resemble its old ones.
    """

    def __init__(
        self,
        user_ids: np.ndarray,
        user_vecs: np.ndarray,
        item_ids: np.ndarray,
        item_vecs: np.ndarray,
        item_creators: np.ndarray,
        bias: np.ndarray,
        scale: np.ndarray,
        item_quality: np.ndarray | None = None,
        quality_scale: np.ndarray | None = None,
        user_bias: np.ndarray | None = None,
        item_bias: np.ndarray | None = None,
        new_item_noise: float = 0.3,
    ):
        self.users = IdMap(user_ids, "user")
        self.items = IdMap(item_ids, "item")
        self.user_vecs = np.asarray(user_vecs, np.float32)
        self.item_vecs = np.asarray(item_vecs, np.float32)
        self.item_creators = np.asarray(item_creators, np.int64)
        self.bias = np.asarray(bias, np.float32)  # (E,)
        self.scale = np.asarray(scale, np.float32)  # (E,)
        n_items = len(item_ids)
        self.item_quality = np.zeros(n_items, np.float32) if item_quality is None else np.asarray(item_quality, np.float32)
        self.quality_scale = np.zeros(N_RESP, np.float32) if quality_scale is None else np.asarray(quality_scale, np.float32)
        self.user_bias = np.zeros((len(user_ids), N_RESP), np.float32) if user_bias is None else np.asarray(user_bias, np.float32)
        self.item_bias = np.zeros((n_items, N_RESP), np.float32) if item_bias is None else np.asarray(item_bias, np.float32)
        self.new_item_noise = new_item_noise

    def logits(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        ur = self.users.rows(user_ids)
        ir = self.items.rows(item_ids)
        aff = np.einsum("nd,nd->n", self.user_vecs[ur], self.item_vecs[ir])  # (n,)
        z = (
            self.bias[None, :]
            + self.scale[None, :] * aff[:, None]
            + self.quality_scale[None, :] * self.item_quality[ir, None]
            + self.user_bias[ur]
            + self.item_bias[ir]
        )
        return z.astype(np.float32)  # (n, E)

    def probs(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        return _sigmoid(self.logits(user_ids, item_ids)).astype(np.float32)

    def register_items(self, item_ids: np.ndarray, creator_ids: np.ndarray, rng: np.random.Generator) -> None:
        item_ids = np.asarray(item_ids, np.int64)
        creator_ids = np.asarray(creator_ids, np.int64)
        new = ~self.items.contains(item_ids)
        if not new.any():
            return
        item_ids, creator_ids = item_ids[new], creator_ids[new]
        # creator profile = mean of its items' factors/quality/bias; unknown creators get the global mean
        uc, inv = np.unique(self.item_creators, return_inverse=True)
        counts = np.bincount(inv, minlength=len(uc)).astype(np.float32)
        d = self.item_vecs.shape[1]
        sums = np.zeros((len(uc), d), np.float32)
        np.add.at(sums, inv, self.item_vecs)
        prof_vec = sums / counts[:, None]
        prof_q = np.bincount(inv, weights=self.item_quality, minlength=len(uc)) / counts
        prof_b = np.zeros((len(uc), N_RESP), np.float32)
        np.add.at(prof_b, inv, self.item_bias)
        prof_b /= counts[:, None]
        pos = np.minimum(np.searchsorted(uc, creator_ids), len(uc) - 1)
        known = uc[pos] == creator_ids
        vec = np.where(known[:, None], prof_vec[pos], self.item_vecs.mean(0, keepdims=True))
        vec = vec + self.new_item_noise * rng.standard_normal(vec.shape).astype(np.float32) * np.abs(vec).mean()
        q = np.where(known, prof_q[pos], self.item_quality.mean()) + 0.3 * rng.standard_normal(len(item_ids))
        b = np.where(known[:, None], prof_b[pos], self.item_bias.mean(0, keepdims=True))
        self.items.add(item_ids)
        self.item_vecs = np.concatenate([self.item_vecs, vec.astype(np.float32)])
        self.item_quality = np.concatenate([self.item_quality, q.astype(np.float32)])
        self.item_bias = np.concatenate([self.item_bias, b.astype(np.float32)])
        self.item_creators = np.concatenate([self.item_creators, creator_ids])

    def sample(self, user_ids: np.ndarray, item_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, E) bool events drawn from :meth:`probs`."""
        p = self.probs(user_ids, item_ids)
        return rng.random(p.shape, dtype=np.float32) < p
