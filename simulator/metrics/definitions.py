"""Metric names, ExpoReach thresholds and ``ArmData``, what one arm of a run hands to the metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simulator.core.config import MetricsConfig
from simulator.core.schema import EXPOSURES_SCHEMA, UPLOADS_SCHEMA, VISITS_SCHEMA


CREATOR_METRICS: tuple[str, ...] = ("dac", "publications", "cold_interactions", "new_item_coverage")
"""Creator-side metrics besides ``expo_reach_*`` (per bucket creator)."""


USER_METRICS: tuple[str, ...] = (
    "exposures",
    "interactions",
    "interactions_per_exposure",
    "share_rate",
    "view_rate",
    "dau",
    "engaged_users",
)
"""User-side guard-rails (per bucket user)."""


def expo_metric_name(q: float) -> str:
    """Name of the ExpoReach metric whose K derives from the ``q``-quantile.

    0.9 -> ``expo_reach_q90``, 0.995 -> ``expo_reach_q99.5`` (percent, no trailing zeros).
    """
    return f"expo_reach_q{round(q * 100, 6):g}"


def expo_thresholds(cfg: MetricsConfig) -> dict[str, int]:
    """ExpoReach metric name -> K of a resolved config (fixed ``expo_k``, or fixed by :func:`resolve_expo_k`).

    Raises ``ValueError`` for derived thresholds that were not resolved yet.
    """
    if cfg.expo_thresholds is not None:
        return dict(cfg.expo_thresholds)
    if cfg.expo_k is not None:
        return {f"expo_reach_{k}": int(k) for k in cfg.expo_k}
    raise ValueError(
        "ExpoReach thresholds are derived from the arms (MetricsConfig.expo_k is None) and not resolved: "
        "pass the config returned by resolve_expo_k(arms, cfg, t0, days, k_min) to the metric functions"
    )


def metric_names(cfg: MetricsConfig) -> list[str]:
    """All metric names, in the column order of :func:`daily_metrics` (``cfg`` must be resolved)."""
    return list(expo_thresholds(cfg)) + list(CREATOR_METRICS) + list(USER_METRICS)


@dataclass(frozen=True)
class ArmData:
    """What one arm produced over a run, plus its randomisation buckets.

    ``exposures``/``uploads``/``visits`` follow :data:`~simulator.core.schema.EXPOSURES_SCHEMA`,
    :data:`~simulator.core.schema.UPLOADS_SCHEMA` and :data:`~simulator.core.schema.VISITS_SCHEMA`;
    ``uploads`` holds only items uploaded during the run. ``creators``/``users`` are all ids of
    the arm's buckets, including creators that never upload and users that never visit.
    ``creator_covariates`` (optional, ``(n_creators, p)``, rows aligned with ``creators``) are
    pre-treatment covariates for CUPED (:func:`simulator.world.platform.creator_covariates`).
    """

    name: str
    exposures: pl.DataFrame
    uploads: pl.DataFrame
    visits: pl.DataFrame
    creators: np.ndarray
    users: np.ndarray
    share: float
    creator_covariates: np.ndarray | None = None

    def __post_init__(self) -> None:
        for label, frame, schema in (
            ("exposures", self.exposures, EXPOSURES_SCHEMA),
            ("uploads", self.uploads, UPLOADS_SCHEMA),
            ("visits", self.visits, VISITS_SCHEMA),
        ):
            missing = [c for c in schema.names if c not in frame.columns]
            if missing:
                raise ValueError(f"arm '{self.name}': {label} lacks columns {missing}")
        for label in ("creators", "users"):
            ids = np.asarray(getattr(self, label), dtype=np.int64)
            if np.unique(ids).size != ids.size:
                raise ValueError(f"arm '{self.name}': duplicated ids in {label}")
            object.__setattr__(self, label, ids)
        if self.creator_covariates is not None:
            cov = np.asarray(self.creator_covariates, dtype=np.float64)
            if cov.ndim != 2 or cov.shape[0] != self.creators.size:
                raise ValueError(
                    f"arm '{self.name}': creator_covariates has shape {cov.shape}, expected ({self.creators.size}, p)"
                )
            object.__setattr__(self, "creator_covariates", cov)
