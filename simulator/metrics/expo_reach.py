"""The run's exposures in time order, items reaching K exposures within their window, and derived K."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from simulator.core.config import MetricsConfig
from simulator.core.schema import INTERACTION_TYPES, SECONDS_PER_DAY
from simulator.metrics.definitions import ArmData, expo_metric_name


def ordered_exposures(arm: ArmData, cfg: MetricsConfig, t0: int, days: int, first_day: int = 0,
                      prior: pl.DataFrame | None = None) -> pl.DataFrame:
    """The run's exposures with ``day``, ``n_prior`` (earlier exposures of the item), ``inter``, ``cold``
    and ``in_window`` (within ``cfg.expo_window_days`` of the item's upload).

    Time order is ``(ts, user_id, position)``; ``n_prior`` counts earlier rows of the same item. With
    ``first_day`` only the exposures of days ``first_day..days-1``; ``prior`` (``item_id``, ``n``) then counts
    each item's exposures before them, which ``n_prior`` adds (:class:`simulator.metrics.daily.LiveDaily`).
    """
    inter = sum(pl.col(c).cast(pl.Int64) for c in INTERACTION_TYPES)
    cold_age_s = cfg.cold_age_hours * 3600.0
    frame = (
        arm.exposures.lazy()
        .select("ts", "user_id", "item_id", "creator_id", "upload_ts", "position", *INTERACTION_TYPES, "share", "view")
        .filter((pl.col("ts") >= t0 + first_day * SECONDS_PER_DAY) & (pl.col("ts") < t0 + days * SECONDS_PER_DAY))
        .sort(["item_id", "ts", "user_id", "position"])
        .with_columns(
            day=((pl.col("ts") - t0) // SECONDS_PER_DAY).cast(pl.Int32),
            n_prior=pl.int_range(pl.len(), dtype=pl.Int64).over("item_id"),
            inter=inter,
        )
    )
    if prior is not None:
        columns = frame.collect_schema().names()
        frame = (frame.join(prior.lazy().select("item_id", pl.col("n").cast(pl.Int64)), on="item_id", how="left")
                 .with_columns(n_prior=pl.col("n_prior") + pl.col("n").fill_null(0)).select(columns))
    return frame.with_columns(
        cold=((pl.col("ts") - pl.col("upload_ts")) < cold_age_s) | (pl.col("n_prior") < cfg.cold_max_exposures),
        in_window=(pl.col("ts") - pl.col("upload_ts")) < cfg.expo_window_days * SECONDS_PER_DAY,
    ).collect()


def run_uploads(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> pl.DataFrame:
    """Items uploaded in days ``0..days-1``, with ``day`` taken from ``upload_ts`` and ``eligible`` (not
    censored: the item's ExpoReach window ends by the end of the run)."""
    window_s = cfg.expo_window_days * SECONDS_PER_DAY
    return (
        arm.uploads.lazy()
        .select("item_id", "creator_id", "upload_ts")
        .with_columns(day=((pl.col("upload_ts") - t0) // SECONDS_PER_DAY).cast(pl.Int32))
        .filter((pl.col("day") >= 0) & (pl.col("day") < days))
        .unique("item_id", keep="first", maintain_order=True)
        .with_columns(eligible=pl.col("upload_ts") + window_s <= t0 + days * SECONDS_PER_DAY)
        .collect()
    )


def run_visits(arm: ArmData, days: int) -> pl.DataFrame:
    return arm.visits.filter((pl.col("day") >= 0) & (pl.col("day") < days) & (pl.col("requests") > 0))


def item_reach(ex: pl.DataFrame, up: pl.DataFrame, ks: list[int]) -> pl.DataFrame:
    """Per run-uploaded item: its creator, upload day, first-exposure day and, for each K, the day of its K-th
    exposure if that exposure is within the window and the item is not censored (null otherwise)."""
    marks = sorted({0, *(k - 1 for k in ks)})  # n_prior of the first and of each K-th exposure
    hits = (
        ex.lazy()
        .filter(pl.col("n_prior").is_in(marks))
        .group_by("item_id")
        .agg(
            first_day=pl.col("day").filter(pl.col("n_prior") == 0).first(),
            **{
                f"reach_{k}": pl.col("day").filter((pl.col("n_prior") == k - 1) & pl.col("in_window")).first()
                for k in ks
            },
        )
    )
    return (
        up.lazy()
        .join(hits, on="item_id", how="left")
        .with_columns(*[pl.when(pl.col("eligible")).then(pl.col(f"reach_{k}")).alias(f"reach_{k}") for k in ks])
        .collect()
    )


def window_counts(arm: ArmData, cfg: MetricsConfig, t0: int, days: int, ex: pl.DataFrame) -> pl.DataFrame:
    """``item_id, creator_id, n``: exposures within the ExpoReach window of each eligible (uncensored)
    run-uploaded item, zeros included, from the run's ordered exposures ``ex``."""
    counts = ex.lazy().filter(pl.col("in_window")).group_by("item_id").agg(n=pl.len())
    up = run_uploads(arm, cfg, t0, days).lazy().filter(pl.col("eligible")).select("item_id", "creator_id")
    return up.join(counts, on="item_id", how="left").with_columns(pl.col("n").fill_null(0).cast(pl.Int64)).collect()


def item_window_exposures(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> np.ndarray:
    """Exposures within the ExpoReach window of each eligible (uncensored) run-uploaded item, zeros included."""
    return window_counts(arm, cfg, t0, days, ordered_exposures(arm, cfg, t0, days))["n"].to_numpy()


def resolve_expo_k(arms: ArmData | Sequence[ArmData], cfg: MetricsConfig, t0: int, days: int,
                   k_min: int = 1) -> MetricsConfig:
    """``cfg`` with its ExpoReach thresholds fixed; a fixed ``expo_k`` (or a resolved config) is returned as is.

    Derived thresholds: for each ``q`` of ``cfg.expo_quantiles``, ``K_q = max(ceil(quantile_q(n)), floor, 1)`` where
    ``n`` are the :func:`item_window_exposures` of every item of ``arms`` pooled (``np.quantile``, linear
    interpolation) and ``floor`` is ``cfg.expo_k_min``, or ``k_min`` when that is None. The metrics are named by
    quantile (:func:`expo_metric_name`). Pooling treats the arms alike: a K taken from one arm's own items sits at
    that arm's quantile by construction, which biases every lift against it when the arms have few items
    (docs/metrics.md, "A/A calibration"). The resolved config records the floor (``expo_k_min``) and the arms
    (``expo_k_arms``), so that a comparison of those arms re-derives K in every bootstrap replicate
    (:func:`replicate_k`).
    """
    if cfg.expo_k is not None or cfg.expo_thresholds is not None:
        return cfg
    arms = [arms] if isinstance(arms, ArmData) else list(arms)
    floor = max(cfg.expo_k_min if cfg.expo_k_min is not None else int(k_min), 1)
    counts = np.concatenate([item_window_exposures(a, cfg, t0, days) for a in arms]) if arms else np.empty(0, np.int64)
    thresholds = {}
    for q in cfg.expo_quantiles:
        k = math.ceil(round(float(np.quantile(counts, q)), 9)) if counts.size else 0
        thresholds[expo_metric_name(q)] = max(k, floor)
    return MetricsConfig.model_validate({**cfg.model_dump(), "expo_thresholds": thresholds, "expo_k_min": floor,
                                         "expo_k_arms": [a.name for a in arms]})
