"""Response models of the world: the interface, the latent-factor model and how it draws items that the log never had.

A response model gives, for (user, item) pairs, the probability of each event in
:data:`~simulator.core.schema.RESPONSE_TYPES`. It is part of the world and never visible to arms.
Items that creator dynamics add are drawn by an :class:`ItemPrior`: the synthetic platform's
generating distribution (:class:`simulator.sources.synthetic.CreatorItemPrior`) or one estimated
from a fitted oracle (:class:`simulator.world.oracle.FittedItemPrior`). docs/world.md describes both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from simulator.core.ids import IdMap
from simulator.core.schema import RESPONSE_TYPES

N_RESP = len(RESPONSE_TYPES)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay ~0)."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-9)


def around_creator(creator_vecs: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """(n, d) unit item directions ``unit(sqrt(1 - share) * c + sqrt(share) * z)``, z ~ N(0, I/d) (E|z|^2 = 1).

    ``creator_vecs`` (n, d) are the items' creators' unit vectors. The within-creator share that
    :func:`item_specific_share` measures on the result is ``share`` up to O(share / d) (0.344 for 0.35, d = 16).
    """
    n, d = creator_vecs.shape
    z = rng.standard_normal((n, d)) / np.sqrt(d)
    return unit(np.sqrt(1.0 - share) * creator_vecs + np.sqrt(share) * z).astype(np.float32)


def item_specific_share(vecs: np.ndarray, creators: np.ndarray) -> float:
    """Pooled within-creator variance of the items' unit directions, E|u_i - E[u | creator]|^2.

    An item's unit direction has second moment 1; this is the part of it that varies between items
    of one creator (the rest, |E[u | creator]|^2, is the creator's). Estimated over creators with at
    least two items, with n_c - 1 degrees of freedom per creator (unbiased); NaN when there is none.
    """
    u = unit(np.asarray(vecs, np.float64))
    _, inv, counts = np.unique(np.asarray(creators), return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), u.shape[1]))
    np.add.at(sums, inv, u)
    means = sums / counts[:, None]
    multi = counts[inv] >= 2
    dof = (counts[counts >= 2] - 1).sum()
    return float(((u - means[inv]) ** 2).sum(1)[multi].sum() / dof) if dof else float("nan")


def creator_rows(known: np.ndarray, creator_ids: np.ndarray) -> np.ndarray:
    """Rows of ``creator_ids`` in the sorted ids ``known``; a creator not in it maps to row ``id mod len(known)``.

    The world only creates items for creators of its log; the fallback keeps a creator the model never
    saw consistent (always the same existing creator's profile) instead of failing.
    """
    creator_ids = np.asarray(creator_ids, np.int64)
    pos = np.minimum(np.searchsorted(known, creator_ids), len(known) - 1)
    return np.where(known[pos] == creator_ids, pos, np.mod(creator_ids, len(known)))


@dataclass(frozen=True)
class NewItems:
    """What an :class:`ItemPrior` draws for n new items (rows aligned with the creators it was given)."""

    vecs: np.ndarray  # (n, d) latent factors
    quality: np.ndarray  # (n,) quality (standardised units of the model)
    bias: np.ndarray  # (n, E) per-event item biases
    content: np.ndarray  # (n, m) content features, m = len(ItemPrior.content_names) (0 when it has none)


class ItemPrior(Protocol):
    """How a response model draws the truth of a creator's new item."""

    content_names: tuple[str, ...]  # item-table columns of NewItems.content (f_*)

    def draw(self, creator_ids: np.ndarray, rng: np.random.Generator) -> NewItems: ...


class ResponseModel(Protocol):
    """What the world needs from a response model."""

    def probs(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """(n, len(RESPONSE_TYPES)) float32 probabilities for aligned user/item arrays."""
        ...

    def sample(self, user_ids: np.ndarray, item_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, len(RESPONSE_TYPES)) bool events drawn from :meth:`probs`."""
        ...

    def register_items(self, item_ids: np.ndarray, creator_ids: np.ndarray, rng: np.random.Generator) -> None:
        """Make items that the log never had (creator-dynamics uploads) known to the model."""
        ...

    def item_content(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Content features the model holds for known items, by item-table column; {} when it holds none."""
        ...


class LatentFactorResponse:
    """p_e(u, i) = sigmoid(bias_e + a_e * <P_u, V_i> + b_e * q_i + user_e[u] + item_e[i]).

    Used both as the synthetic platform's ground truth and as the oracle fitted on a real log
    (:func:`simulator.world.oracle.fit_oracle`). Items added later are drawn by ``item_prior`` (a creator's
    new items resemble its old ones as much as its logged items resemble each other); it may also give
    them content features, which :meth:`item_content` returns with those of the logged items
    (``item_content``: (n_items, m) rows aligned with ``item_ids``, columns ``item_prior.content_names``).
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
        item_prior: ItemPrior | None = None,
        item_content: np.ndarray | None = None,
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
        self.item_prior = item_prior
        self.content_names: tuple[str, ...] = tuple(item_prior.content_names) if item_prior is not None else ()
        m = len(self.content_names)
        self.content = (np.zeros((n_items, m), np.float32) if item_content is None
                        else np.asarray(item_content, np.float32).reshape(n_items, m))  # (n_items, m)

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
        """Draw the truth of the items in ``item_ids`` the model does not know yet from ``item_prior``."""
        item_ids = np.asarray(item_ids, np.int64)
        creator_ids = np.asarray(creator_ids, np.int64)
        _, first = np.unique(item_ids, return_index=True)
        first = np.sort(first)
        item_ids, creator_ids = item_ids[first], creator_ids[first]
        new = ~self.items.contains(item_ids)
        if not new.any():
            return
        if self.item_prior is None:
            raise ValueError("LatentFactorResponse: no item_prior, cannot register items the log never had")
        item_ids, creator_ids = item_ids[new], creator_ids[new]
        drawn = self.item_prior.draw(creator_ids, rng)
        self.items.add(item_ids)
        self.item_vecs = np.concatenate([self.item_vecs, drawn.vecs.astype(np.float32)])
        self.item_quality = np.concatenate([self.item_quality, drawn.quality.astype(np.float32)])
        self.item_bias = np.concatenate([self.item_bias, drawn.bias.astype(np.float32)])
        self.content = np.concatenate([self.content, drawn.content.astype(np.float32)])
        self.item_creators = np.concatenate([self.item_creators, creator_ids])

    def item_content(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """{column: (n,) float32} content features of known items ({} when the prior gives none)."""
        if not self.content_names:
            return {}
        c = self.content[self.items.rows(item_ids)]
        return {name: c[:, j] for j, name in enumerate(self.content_names)}

    def sample(self, user_ids: np.ndarray, item_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, E) bool events drawn from :meth:`probs`."""
        p = self.probs(user_ids, item_ids)
        return rng.random(p.shape, dtype=np.float32) < p
