"""Poisson-bootstrap replicates of an arm's metrics (one-way and two-way, K re-derived) and percentile lift CIs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.core.config import MetricsConfig
from simulator.metrics.definitions import expo_metric_name
from simulator.metrics.units import CELL_VALUES, RATE_TIMES_EXPOSURES, TWO_WAY_METRICS, ArmTables, two_way_values


_BOOTSTRAP_CHUNK_BYTES = 48 * 2**20  # weight-matrix chunk; peak memory is a few times this


def replicate_k(n_sorted: np.ndarray, cum_w: np.ndarray, q: float, floor: int) -> np.ndarray:
    """(b,) derived K of each replicate: ``max(ceil(quantile_q), floor, 1)`` of the sample in which item ``i``
    (exposures ``n_sorted[i]``, ascending) appears ``w_i`` times, ``cum_w`` (b, n_items) the cumulative weights.

    It is ``np.quantile``'s linear interpolation on that expanded sample, so at unit weights it is the K that
    :func:`resolve_expo_k` derived; NaN for a replicate without items."""
    b, n_items = cum_w.shape
    out = np.full(b, np.nan)
    if n_items == 0:
        return out
    total = cum_w[:, -1]
    h = q * (total - 1.0)
    lo = np.floor(h)
    # the item at position p (0-based) of the expanded sample is the number of cumulative weights <= p
    i_lo = np.minimum((cum_w <= lo[:, None]).sum(1), n_items - 1)
    i_hi = np.minimum((cum_w <= lo[:, None] + 1.0).sum(1), n_items - 1)
    value = n_sorted[i_lo] + (h - lo) * (n_sorted[i_hi] - n_sorted[i_lo])
    k = np.maximum(np.ceil(np.round(value, 9)), max(int(floor), 1))
    return np.where(total > 0, k, out)


def replicate_reach(n_sorted: np.ndarray, cum_w: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(b,) weighted count of items with at least ``k[b]`` exposures (NaN where ``k`` is NaN)."""
    b, n_items = cum_w.shape
    if n_items == 0:
        return np.where(np.isfinite(k), 0.0, np.nan)
    below = np.searchsorted(n_sorted, np.where(np.isfinite(k), k, np.inf), side="left")  # items under K
    under = np.where(below > 0, cum_w[np.arange(b), np.maximum(below - 1, 0)], 0.0)
    return np.where(np.isfinite(k), cum_w[:, -1] - under, np.nan)


@dataclass(frozen=True)
class DerivedK:
    """ExpoReach metrics whose K was derived from the compared arms' pooled items: re-derived in every replicate."""

    names: list[str]
    quantiles: list[float]
    floor: int


def derived_k(cfg: MetricsConfig, arms: list[str], names: list[str]) -> DerivedK | None:
    """The derived ExpoReach metrics of a comparison of ``arms``, when ``cfg``'s K came from exactly these arms
    (a ladder pair of a larger run keeps the run's K fixed: it was not derived from the pair)."""
    if cfg.expo_k is not None or cfg.expo_thresholds is None or sorted(cfg.expo_k_arms or []) != sorted(arms):
        return None
    pairs = [(expo_metric_name(q), q) for q in cfg.expo_quantiles if expo_metric_name(q) in names]
    if not pairs:
        return None
    return DerivedK([n for n, _ in pairs], [q for _, q in pairs], cfg.expo_k_min or 1)


def rederived_reach(tables: dict[str, ArmTables], item_w: dict[str, np.ndarray], w_total: dict[str, np.ndarray],
                     derived: DerivedK) -> dict[str, np.ndarray]:
    """Per arm, (B, len(quantiles)) replicate ExpoReach values with K re-derived in each replicate.

    ``item_w[a]`` (B, n_items of ``a``) are the replicate weights of the arm's items (their creators' weights),
    ``w_total[a]`` (B,) the replicate's creator count. K_b comes from the pooled, weighted items of all arms
    (:func:`replicate_k`); each arm's value is its weighted count of items at or above K_b over ``w_total``.
    """
    arms = list(tables)
    n_all = np.concatenate([tables[arm].items.n for arm in arms])
    order = np.argsort(n_all, kind="stable")
    n_sorted = n_all[order]
    n_samples = next(iter(w_total.values())).shape[0]
    out = {arm: np.empty((n_samples, len(derived.quantiles))) for arm in arms}
    chunk = max(1, _BOOTSTRAP_CHUNK_BYTES // (8 * max(n_all.size, 1)))
    for start in range(0, n_samples, chunk):
        rows = slice(start, min(start + chunk, n_samples))
        pooled = np.cumsum(np.concatenate([item_w[arm][rows] for arm in arms], axis=1)[:, order], axis=1,
                           dtype=np.float64)
        k_b = np.column_stack([replicate_k(n_sorted, pooled, q, derived.floor) for q in derived.quantiles])
        for arm in arms:
            cumulative = np.cumsum(item_w[arm][rows], axis=1, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[arm][rows] = np.column_stack([replicate_reach(tables[arm].items.n, cumulative, k_b[:, quantile])
                                                  for quantile in range(len(derived.quantiles))]) / w_total[arm][rows, None]
    return out


def arm_replicates(
    tables: ArmTables, extra: np.ndarray, cfg: MetricsConfig, rng_creators: np.random.Generator,
    rng_users: np.random.Generator, keep_item_weights: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """(B, M) Poisson-bootstrap replicates of every metric (``tables.names`` order), (B, k) of ``sum_c w_c * extra_c``
    and, with ``keep_item_weights``, the replicates' item weights (B, n_items) and creator totals (B,) for
    :func:`rederived_reach`.

    Each replicate draws ``w_c ~ Poisson(1)`` per creator and ``w_u ~ Poisson(1)`` per user, from one stream
    per side (so chunking does not change the draws). One-way metrics are ``sum(w * num) / sum(w * den)`` over
    their unit; :data:`TWO_WAY_METRICS` (with ``cfg.bootstrap_two_way``) weight each exposure by ``w_u * w_c``
    (:func:`two_way_values`; :data:`RATE_TIMES_EXPOSURES` then times the replicate's exposures per user);
    ``extra`` (n_creators, k) are per-creator columns whose replicate sums CUPED needs (:func:`cuped_stats`).
    """
    n_samples = cfg.bootstrap_samples
    creator, user = tables.creator, tables.user
    n_c, n_u = creator.num.shape[0], user.num.shape[0]
    m_c, m_u, m_adj = len(creator.names), len(user.names), extra.shape[1]
    c_values = np.concatenate([creator.num, creator.den, extra], axis=1)  # (n_c, 2 m_c + k)
    u_values = np.concatenate([user.num, user.den], axis=1)  # (n_u, 2 m_u)
    two_way = [tables.names.index(name) for name in TWO_WAY_METRICS] if cfg.bootstrap_two_way else []
    exposures_col = tables.names.index("exposures")
    width = max(n_c, n_u, len(CELL_VALUES) * min(n_c, n_u) if two_way else 0, 1)
    chunk = max(1, _BOOTSTRAP_CHUNK_BYTES // (8 * width))
    if keep_item_weights:
        item_w = np.empty((n_samples, tables.items.n.size), np.uint16)  # Poisson(1) counts
        w_total = np.empty(n_samples)
    out = np.empty((n_samples, m_c + m_u))
    adj = np.empty((n_samples, m_adj))
    for start in range(0, n_samples, chunk):
        rows = slice(start, min(start + chunk, n_samples))
        n_rows = rows.stop - rows.start
        w_c = rng_creators.poisson(1.0, size=(n_rows, n_c)).astype(np.float64)  # (b, n_c)
        w_u = rng_users.poisson(1.0, size=(n_rows, n_u)).astype(np.float64)  # (b, n_u)
        sum_c, sum_u = w_c @ c_values, w_u @ u_values
        w_c_total, w_u_total = w_c.sum(1), w_u.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[rows, :m_c] = sum_c[:, :m_c] / sum_c[:, m_c : 2 * m_c]
            out[rows, m_c:] = sum_u[:, :m_u] / sum_u[:, m_u:]
            adj[rows] = sum_c[:, 2 * m_c :]
        if keep_item_weights:
            item_w[rows], w_total[rows] = w_c[:, tables.items.rows], w_c_total
        if two_way:
            values = two_way_values(tables.cells.sums(w_u, w_c), w_u_total, w_c_total, tables.cells)
            for column, name in enumerate(TWO_WAY_METRICS):
                if name in RATE_TIMES_EXPOSURES:
                    values[:, column] *= out[rows, exposures_col]  # users-only replicate of exposures per user
                elif name == "engaged_users":  # users-only replicate of served days per user
                    with np.errstate(divide="ignore", invalid="ignore"):
                        values[:, column] *= (w_u @ tables.cells.active_per_user) / w_u_total
            out[rows, two_way] = values
    return out, adj, ((item_w, w_total) if keep_item_weights else None)


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    samples = np.where(np.isfinite(samples), samples, np.nan)
    lo = np.full(samples.shape[1], np.nan)
    hi = np.full(samples.shape[1], np.nan)
    ok = ~np.all(np.isnan(samples), axis=0)
    if ok.any():
        lo[ok], hi[ok] = np.nanquantile(samples[:, ok], [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def lift_ci(
    control: np.ndarray, arm: np.ndarray, control_b: np.ndarray, arm_b: np.ndarray, level: float, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lift, ci_low, ci_high) per metric; NaN where the lift is undefined.

    Undefined: not ``valid``, a point value of 0 (or non-finite) in either arm, more than half of the
    replicate lifts non-finite, or all finite replicate lifts equal (a degenerate bootstrap).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = arm / control - 1.0
        lift_b = arm_b / control_b - 1.0
    finite = np.isfinite(lift_b)
    spread = np.where(finite, lift_b, -np.inf).max(0) - np.where(finite, lift_b, np.inf).min(0)
    defined = (
        valid
        & np.isfinite(lift)
        & (control != 0)
        & (arm != 0)
        & (finite.mean(0) >= 0.5)
        & (spread > 1e-12)
    )
    lo, hi = _percentile_ci(lift_b, level)
    nan = np.full(lift.shape, np.nan)
    return np.where(defined, lift, nan), np.where(defined, lo, nan), np.where(defined, hi, nan)
