"""Confidence intervals for the offline tables: a paired bootstrap over the held-out events.

Every variant of an offline protocol (Next-User's Table 1, IHM's Table 1 and windows) is scored on the same
held-out events, so a cell's uncertainty and a variant's difference from the control come from resampling those
events jointly: each bootstrap replicate draws the events with replacement once and computes every variant's mean
from that draw. A relative difference is significant when its 95% interval excludes 0.
"""

from __future__ import annotations

import warnings

import numpy as np

N_BOOT = 1000
LEVEL = 0.95
_CHUNK = 50  # replicates drawn at once (memory: chunk x events weights)


def event_bootstrap(values: dict[str, np.ndarray | list[np.ndarray]], control: str, n_boot: int = N_BOOT,
                    seed: int = 0, level: float = LEVEL, replicates: list | None = None) -> dict[str, dict[str, float]]:
    """``values[variant]``: a per-event metric (hit 0/1, NDCG, ...) on the same events for every variant; or a
    list of such arrays, one per training seed (the events of seed ``r`` the same for every variant).

    With several seeds the bootstrap has two levels: each replicate draws the seeds with replacement, then each
    drawn seed's events, and averages the seeds' means, so the interval covers the training seed as well as the
    held-out sample; the point estimate is the mean over seeds.

    Returns per variant: ``mean``, ``lo``, ``hi`` (percentile interval of the mean), and against ``control``:
    ``rel`` (mean / control's mean - 1), ``rel_lo``, ``rel_hi`` and ``significant`` (the interval excludes 0;
    False for the control itself). NaN where there are no events or the control's mean is 0. ``replicates``: a
    list that receives the (n_boot, variants) replicate means (None when there are no events), for statistics of
    several cells (IHM's decay slopes)."""
    names = list(values)
    per_seed = [np.stack([np.asarray(_seeds(values[name])[r], np.float64) for name in names])
                for r in range(len(_seeds(values[names[0]])))]  # R x (V, n_r)
    nan = float("nan")
    if any(block.shape[1] == 0 for block in per_seed):
        if replicates is not None:
            replicates.append(None)
        return {name: {"mean": nan, "lo": nan, "hi": nan, "rel": nan, "rel_lo": nan, "rel_hi": nan,
                       "significant": False} for name in names}
    rng = np.random.default_rng([seed, 0xB007])
    R = len(per_seed)
    means = np.zeros((n_boot, len(names)))
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        drawn = rng.integers(0, R, (b, R)) if R > 1 else np.zeros((b, 1), np.int64)
        for r, block in enumerate(per_seed):
            n = block.shape[1]
            times = (drawn == r).sum(1)  # (b,) how often each replicate drew seed r
            counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(b)]).astype(np.float64)
            means[start:start + b] += times[:, None] * (counts @ block.T / n) / R
    point = np.mean([block.mean(1) for block in per_seed], axis=0)
    if replicates is not None:
        replicates.append(means)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    c = names.index(control)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_boot = means / means[:, [c]] - 1.0
        rel = point / point[c] - 1.0
    rel_boot[~np.isfinite(rel_boot)] = np.nan  # a replicate whose control scored 0: no ratio
    rel_lo, rel_hi = _nanquantiles(rel_boot, alpha)
    out = {}
    for v, name in enumerate(names):
        finite = bool(np.isfinite(rel[v]) and np.isfinite(rel_lo[v]) and np.isfinite(rel_hi[v]))
        out[name] = {"mean": float(point[v]), "lo": float(lo[v]), "hi": float(hi[v]),
                     "rel": float(rel[v]) if finite else nan, "rel_lo": float(rel_lo[v]) if finite else nan,
                     "rel_hi": float(rel_hi[v]) if finite else nan,
                     "significant": bool(v != c and finite and (rel_lo[v] > 0 or rel_hi[v] < 0))}
    return out


def _nanquantiles(samples: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the alpha and 1 - alpha quantiles of the finite replicates (NaN for a column without any)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": that column's answer is NaN
        lo, hi = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def _seeds(value) -> list[np.ndarray]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def format_mean(cell: dict[str, float], digits: int = 4) -> str:
    """``0.2540 [0.2410, 0.2670]``."""
    return f"{cell['mean']:.{digits}f} [{cell['lo']:.{digits}f}, {cell['hi']:.{digits}f}]"


def format_rel(cell: dict[str, float]) -> str:
    """``-2.70% [-5.1, -0.3]*``: the relative difference, its interval in percent, * when significant."""
    if cell["rel"] != cell["rel"]:
        return "n/a"
    star = "*" if cell["significant"] else ""
    return f"{100 * cell['rel']:+.2f}% [{100 * cell['rel_lo']:+.1f}, {100 * cell['rel_hi']:+.1f}]{star}"


def slope_intervals(windows: np.ndarray, replicate_means: list[np.ndarray], names: list[str],
                    level: float = LEVEL) -> dict[str, dict[str, float]]:
    """The least-squares slope over ``windows`` of per-window means, from each window's bootstrap replicates
    ((n_boot, variants) each, drawn with the same seed): per variant ``slope_lo``, ``slope_hi``, ``rel_slope_lo``,
    ``rel_slope_hi`` (slope over the mean of the windows) and ``slope_sig`` (the slope's interval excludes 0)."""
    nan = float("nan")
    if len(windows) < 2:
        return {name: {"slope_lo": nan, "slope_hi": nan, "rel_slope_lo": nan, "rel_slope_hi": nan, "slope_sig": False}
                for name in names}
    y = np.stack(replicate_means, 1)  # (n_boot, W, V)
    x = np.asarray(windows, np.float64) - np.mean(windows)
    slope = np.einsum("w,bwv->bv", x, y - y.mean(1, keepdims=True)) / (x ** 2).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = slope / y.mean(1)
    rel[~np.isfinite(rel)] = np.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(slope, [alpha, 1.0 - alpha], axis=0)
    rel_lo, rel_hi = _nanquantiles(rel, alpha)
    return {name: {"slope_lo": float(lo[v]), "slope_hi": float(hi[v]), "rel_slope_lo": float(rel_lo[v]),
                   "rel_slope_hi": float(rel_hi[v]), "slope_sig": bool(lo[v] > 0 or hi[v] < 0)}
            for v, name in enumerate(names)}
