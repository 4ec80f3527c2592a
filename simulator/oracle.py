"""Fit the world's oracle on a whole log: latent factors shared across event types, calibrated base rates."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from simulator.config import WorldConfig
from simulator.response import LatentFactorResponse, _logit
from simulator.schema import RESPONSE_TYPES, Log


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
    logged pairs equals the logged rate (calibration).
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
    )
    # calibration: shift each bias so the mean probability on logged pairs matches the log
    target = y.mean(0)
    for _ in range(20):
        p = model.probs(pairs["user_id"].to_numpy(), pairs["item_id"].to_numpy()).mean(0)
        model.bias = (model.bias + (_logit(target) - _logit(p)) * 0.9).astype(np.float32)
    return model
