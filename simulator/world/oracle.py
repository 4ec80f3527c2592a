"""Fit the world's oracle on a whole log: latent factors shared across event types, calibrated base rates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from simulator.core.config import WorldConfig
from simulator.world.response import (LatentFactorResponse, NewItems, _logit, around_creator, creator_rows,
                                item_specific_share, unit)
from simulator.core.schema import RESPONSE_TYPES, Log


@dataclass
class FittedItemPrior:
    """New items of a fitted oracle, drawn the way its fitted items sit around their creators.

    A fitted item factor is ``norm * direction``. A new item's direction is
    ``unit(sqrt(1 - share) c + sqrt(share) z)`` around ``c``, the unit mean direction of the creator's
    fitted items, with ``share`` the fitted items' pooled within-creator share
    (:func:`~simulator.world.response.item_specific_share`); its log-norm and per-event item biases are the
    creator's mean plus the within-creator residual of one random fitted item (of a creator with at
    least two items, rescaled by sqrt(n_c / (n_c - 1)) so the residuals keep their variance). No
    content: the items keep the log's metadata features (the world copies them from the creator).
    """

    creator_ids: np.ndarray  # (C,) sorted
    creator_dirs: np.ndarray  # (C, d) unit
    share: float
    creator_log_norm: np.ndarray  # (C,)
    creator_bias: np.ndarray  # (C, E)
    residuals: np.ndarray  # (R, 1 + E): log-norm and bias residuals of fitted items
    content_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, vecs: np.ndarray, creators: np.ndarray, bias: np.ndarray) -> "FittedItemPrior":
        vecs, bias = np.asarray(vecs, np.float64), np.asarray(bias, np.float64)
        uc, inv, counts = np.unique(np.asarray(creators, np.int64), return_inverse=True, return_counts=True)
        d = vecs.shape[1]
        per_item = np.concatenate([np.log(np.linalg.norm(vecs, axis=1).clip(1e-9))[:, None], bias], 1)  # (n, 1 + E)
        sums = np.zeros((len(uc), d + per_item.shape[1]))
        np.add.at(sums, inv, np.concatenate([unit(vecs), per_item], 1))
        means = sums / counts[:, None]
        multi = counts[inv] >= 2
        resid = (per_item - means[inv, d:])[multi] * np.sqrt(counts[inv][multi] / (counts[inv][multi] - 1.0))[:, None]
        share = item_specific_share(vecs, creators)
        return cls(creator_ids=uc, creator_dirs=unit(means[:, :d]).astype(np.float32),
                   share=float(np.clip(share if np.isfinite(share) else 1.0, 0.0, 1.0)),
                   creator_log_norm=means[:, d], creator_bias=means[:, d + 1:],
                   residuals=resid if len(resid) else np.zeros((1, per_item.shape[1])))

    def draw(self, creator_ids: np.ndarray, rng: np.random.Generator) -> NewItems:
        rows = creator_rows(self.creator_ids, creator_ids)
        res = self.residuals[rng.integers(0, len(self.residuals), len(rows))]
        norm = np.exp(self.creator_log_norm[rows] + res[:, 0])
        vecs = around_creator(self.creator_dirs[rows], self.share, rng) * norm[:, None].astype(np.float32)
        return NewItems(vecs=vecs, quality=np.zeros(len(rows), np.float32),
                        bias=(self.creator_bias[rows] + res[:, 1:]).astype(np.float32),
                        content=np.zeros((len(rows), 0), np.float32))


def pair_labels(log: Log) -> pl.DataFrame:
    """One row per logged (user, item) pair with a 0/1 column per response type."""
    ev = pl.from_arrow(log.events.select(["user_id", "item_id", "event"]))
    wide = ev.group_by(["user_id", "item_id"]).agg(
        [(pl.col("event") == e).any().cast(pl.Int8).alias(e) for e in RESPONSE_TYPES]
    )
    return wide.sort(["user_id", "item_id"])


def fit_oracle(log: Log, cfg: WorldConfig, seed: int = 0) -> LatentFactorResponse:
    """Logistic matrix factorisation of every response type on the log's (user, item) pairs.

    logit_e(u, i) = b_e + s_e <P_u, V_i> + bu_e[u] + bi_e[i]; unobserved pairs of a sampled
    set of random (user, item) pairs are added as negatives (all zeros) so the oracle does not
    believe that every item is liked; afterwards b_e is shifted so the mean predicted rate on
    logged pairs equals the logged rate (calibration). Items registered later are drawn by
    :class:`FittedItemPrior`; content features stay the log's item metadata.
    """
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 0x0AC1E])
    pairs = pair_labels(log)
    user_ids = np.unique(log.events["user_id"].to_numpy())
    item_ids = log.items["item_id"].to_numpy()
    item_creators = log.items["creator_id"].to_numpy()
    u_rows = np.searchsorted(user_ids, pairs["user_id"].to_numpy())
    i_rows = np.searchsorted(item_ids, pairs["item_id"].to_numpy())
    y = pairs.select(list(RESPONSE_TYPES)).to_numpy().astype(np.float32)
    # random unobserved pairs as weak negatives (a quarter of the logged pairs)
    n_neg = len(u_rows) // 4
    nu = rng.integers(0, len(user_ids), n_neg)
    ni = rng.integers(0, len(item_ids), n_neg)
    u_all = np.concatenate([u_rows, nu])
    i_all = np.concatenate([i_rows, ni])
    y_all = np.concatenate([y, np.zeros((n_neg, y.shape[1]), np.float32)])

    d, E = cfg.oracle_dim, len(RESPONSE_TYPES)
    P = torch.nn.Parameter(0.1 * torch.randn(len(user_ids), d, generator=g))
    V = torch.nn.Parameter(0.1 * torch.randn(len(item_ids), d, generator=g))
    base = torch.tensor(_logit(y.mean(0).clip(1e-4, 1 - 1e-4)), dtype=torch.float32)
    b = torch.nn.Parameter(base.clone())
    s = torch.nn.Parameter(torch.ones(E))
    bu = torch.nn.Parameter(torch.zeros(len(user_ids), E))
    bi = torch.nn.Parameter(torch.zeros(len(item_ids), E))
    opt = torch.optim.Adam([P, V, b, s, bu, bi], lr=0.02)
    U, I, Y = torch.from_numpy(u_all), torch.from_numpy(i_all), torch.from_numpy(y_all)
    bs = 8192
    for _ in range(cfg.oracle_epochs):
        perm = torch.randperm(len(U), generator=g)
        for start in range(0, len(U), bs):
            idx = perm[start : start + bs]
            u, i = U[idx], I[idx]
            z = b + s * (P[u] * V[i]).sum(-1, keepdim=True) + bu[u] + bi[i]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, Y[idx])
            loss = loss + 1e-5 * (P[u].pow(2).sum() + V[i].pow(2).sum() + bu[u].pow(2).sum() + bi[i].pow(2).sum()) / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model = LatentFactorResponse(
        user_ids=user_ids,
        user_vecs=P.detach().numpy(),
        item_ids=item_ids,
        item_vecs=V.detach().numpy(),
        item_creators=item_creators,
        bias=b.detach().numpy(),
        scale=s.detach().numpy(),
        user_bias=bu.detach().numpy(),
        item_bias=bi.detach().numpy(),
        item_prior=FittedItemPrior.of(V.detach().numpy(), item_creators, bi.detach().numpy()),
    )
    # calibration: shift each bias so the mean probability on logged pairs matches the log
    target = y.mean(0)
    for _ in range(20):
        p = model.probs(pairs["user_id"].to_numpy(), pairs["item_id"].to_numpy()).mean(0)
        model.bias = (model.bias + (_logit(target) - _logit(p)) * 0.9).astype(np.float32)
    return model
