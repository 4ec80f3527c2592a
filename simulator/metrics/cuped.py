"""CUPED: per-creator pre-treatment covariates, the pooled slope theta and each arm's adjustment."""

from __future__ import annotations

import numpy as np

from simulator.metrics.definitions import ArmData
from simulator.metrics.units import ArmTables


CUPED_METRICS: tuple[str, ...] = ("dac", "publications")
"""Creator metrics that get a CUPED lift. Not ExpoReach nor cold-item interactions: once CUPED removes the
creators' heterogeneity, what is left of their variance is mostly the arm's shared traffic (its users'
supply of slots), which a bootstrap over creators does not see; their CUPED CIs flagged 20% of A/A cells at
tiny scale (docs/metrics.md, "A/A calibration")."""


def _cuped_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, k) per-creator columns ``[1, X, vec(X X^T), Y, vec(X Y^T)]``: their (weighted) sums give theta."""
    n = len(x)
    return np.concatenate([np.ones((n, 1)), x, (x[:, :, None] * x[:, None, :]).reshape(n, -1), y,
                           (x[:, :, None] * y[:, None, :]).reshape(n, -1)], axis=1)


def _split_cuped_sums(z: np.ndarray, p: int, m: int) -> tuple[np.ndarray, ...]:
    """Sums of :func:`_cuped_columns` (..., k) -> (sum 1, sum X, sum XX^T, sum Y, sum XY^T)."""
    s0 = z[..., 0]
    sx = z[..., 1 : 1 + p]
    sxx = z[..., 1 + p : 1 + p + p * p].reshape(*z.shape[:-1], p, p)
    sy = z[..., 1 + p + p * p : 1 + p + p * p + m]
    sxy = z[..., 1 + p + p * p + m :].reshape(*z.shape[:-1], p, m)
    return s0, sx, sxx, sy, sxy


def _theta_from_sums(z: np.ndarray, p: int, m: int) -> np.ndarray:
    """(..., p, m) OLS slopes of Y on X (both centred; minimum-norm if collinear) from summed columns; NaN for a
    replicate that drew no creator."""
    s0, sx, sxx, sy, sxy = _split_cuped_sums(z, p, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        cxx = sxx - sx[..., :, None] * sx[..., None, :] / s0[..., None, None]
        cxy = sxy - sx[..., :, None] * sy[..., None, :] / s0[..., None, None]
    ok = np.isfinite(cxx).all((-2, -1)) & np.isfinite(cxy).all((-2, -1))
    theta = np.linalg.pinv(np.where(ok[..., None, None], cxx, 0.0)) @ np.where(ok[..., None, None], cxy, 0.0)
    return np.where(ok[..., None, None], theta, np.nan)


def cuped_theta(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(p, m) least-squares slopes of ``y`` (n, m) on ``x`` (n, p), as :func:`compare_arms` computes them."""
    return _theta_from_sums(_cuped_columns(x, y).sum(0), x.shape[1], y.shape[1])


def cuped_stats(arms: dict[str, ArmData], tables: dict[str, ArmTables], names: list[str]) -> dict[str, np.ndarray] | None:
    """Per arm, the (n_creators, k) columns ``[1, X, vec(X X^T), Y, vec(X Y^T)]`` whose (weighted) sums give CUPED's
    theta and covariate means (:func:`cuped_adjustment`); ``Y`` the per-creator numerators of ``names``. None
    without covariates."""
    covs = {a: arms[a].creator_covariates for a in tables}
    missing = [a for a, c in covs.items() if c is None]
    if missing:
        if len(missing) < len(covs):
            raise ValueError(f"arms {missing} lack creator_covariates that the other arms have")
        return None
    widths = {c.shape[1] for c in covs.values()}
    if len(widths) != 1:
        raise ValueError(f"creator_covariates of the arms have different widths {sorted(widths)}")
    if not names or widths == {0}:
        return None
    out = {}
    for a, t in tables.items():
        y = t.creator.num[:, [t.creator.names.index(n) for n in names]]
        out[a] = _cuped_columns(np.asarray(covs[a], np.float64), y)
    return out


def cuped_adjustment(sums: dict[str, np.ndarray], p: int, m: int) -> dict[str, np.ndarray]:
    """Per arm, the CUPED term ``(mean_arm(X) - mean_pooled(X)) @ theta`` of each metric, from the sums of
    :func:`cuped_stats` columns: (..., k) -> (..., m). ``theta`` is the pooled OLS slope of Y on X over the
    creators of all arms, recomputed from the same sums, so a bootstrap replicate re-estimates it with its own
    weights (a theta fitted once on the sample would make the CI too narrow when a few creators dominate)."""
    pooled = sum(sums.values())
    theta = _theta_from_sums(pooled, p, m)
    s0, sx = _split_cuped_sums(pooled, p, m)[:2]
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        x_mean = sx / s0[..., None]
        for a, z in sums.items():
            a0, ax = _split_cuped_sums(z, p, m)[:2]
            out[a] = np.einsum("...p,...pm->...m", ax / a0[..., None] - x_mean, theta)
    return out
