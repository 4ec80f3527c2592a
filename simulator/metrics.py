"""Per-arm metrics of a co-diverted A/B run (ExpoReach-K, DAC, ...) and bootstrap lifts with CIs.

Pure numpy/polars (plus scipy.sparse for the two-way bootstrap): no Ray or MLflow here. Reads only
an arm's exposures, uploads and visits (:mod:`simulator.core.schema`) plus its bucket of creators and
users and, for CUPED, per-creator pre-treatment covariates. Definitions, the ExpoReach window and
thresholds, the normalisation across arms of different shares, the bootstraps and CUPED are written
up in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from simulator.core.config import MetricsConfig
from simulator.core.schema import (
    EXPOSURES_SCHEMA,
    INTERACTION_TYPES,
    SECONDS_PER_DAY,
    UPLOADS_SCHEMA,
    VISITS_SCHEMA,
)

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

_CELL_VALUES: tuple[str, ...] = ("exposures", "interactions", "shares", "views", "cold", "engaged", "active")
"""Sums over exposures kept per (user, creator) cell for the two-way bootstrap. ``active`` credits each day a user
was served to the creators of that day's exposures, in proportion to them, over the run's days; ``engaged``
does the same for the days the user interacted, in proportion to the interactions. Summed over creators they
are the user's served days and its ``engaged_users`` value."""

_TWO_WAY: dict[str, tuple[str, str]] = {
    "interactions": ("interactions", "exposures"),  # times the users-only replicate of exposures per user
    "interactions_per_exposure": ("interactions", "exposures"),
    "share_rate": ("shares", "exposures"),
    "view_rate": ("views", "exposures"),
    "cold_interactions": ("cold", "per_creator"),
    "engaged_users": ("engaged", "active"),  # times the users-only replicate of served days per user
}
"""Sums over exposures: (numerator cell value, denominator: a cell value or ``per_creator``, the creator count)."""

_RATE_TIMES_EXPOSURES: tuple[str, ...] = ("interactions",)
"""Per-user counts read as a two-way rate times exposures per user: the users' requests fix their exposures,
so only the rate may depend on the bucket's creators."""

TWO_WAY_METRICS: tuple[str, ...] = tuple(_TWO_WAY)
"""Bootstrapped over users and creators together (product weights); the others over their unit only."""

CUPED_METRICS: tuple[str, ...] = ("dac", "publications")
"""Creator metrics that get a CUPED lift. Not ExpoReach nor cold-item interactions: once CUPED removes the
creators' heterogeneity, what is left of their variance is mostly the arm's shared traffic (its users'
supply of slots), which a bootstrap over creators does not see; their CUPED CIs flagged 20% of A/A cells at
tiny scale (docs/metrics.md, "A/A calibration")."""

_BOOTSTRAP_CHUNK_BYTES = 48 * 2**20  # weight-matrix chunk; peak memory is a few times this


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


# --------------------------------------------------------------------------- per-row tables


def _ordered_exposures(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> pl.DataFrame:
    """The run's exposures with ``day``, ``n_prior`` (earlier exposures of the item), ``inter``, ``cold``
    and ``in_window`` (within ``cfg.expo_window_days`` of the item's upload).

    Time order is ``(ts, user_id, position)``; ``n_prior`` counts earlier rows of the same item.
    """
    inter = sum(pl.col(c).cast(pl.Int64) for c in INTERACTION_TYPES)
    cold_age_s = cfg.cold_age_hours * 3600.0
    return (
        arm.exposures.lazy()
        .select("ts", "user_id", "item_id", "creator_id", "upload_ts", "position", *INTERACTION_TYPES, "share", "view")
        .filter((pl.col("ts") >= t0) & (pl.col("ts") < t0 + days * SECONDS_PER_DAY))
        .sort(["item_id", "ts", "user_id", "position"])
        .with_columns(
            day=((pl.col("ts") - t0) // SECONDS_PER_DAY).cast(pl.Int32),
            n_prior=pl.int_range(pl.len()).over("item_id"),
            inter=inter,
        )
        .with_columns(
            cold=((pl.col("ts") - pl.col("upload_ts")) < cold_age_s) | (pl.col("n_prior") < cfg.cold_max_exposures),
            in_window=(pl.col("ts") - pl.col("upload_ts")) < cfg.expo_window_days * SECONDS_PER_DAY,
        )
        .collect()
    )


def _run_uploads(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> pl.DataFrame:
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


def _run_visits(arm: ArmData, days: int) -> pl.DataFrame:
    return arm.visits.filter((pl.col("day") >= 0) & (pl.col("day") < days) & (pl.col("requests") > 0))


def _item_reach(ex: pl.DataFrame, up: pl.DataFrame, ks: list[int]) -> pl.DataFrame:
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


def _window_counts(arm: ArmData, cfg: MetricsConfig, t0: int, days: int, ex: pl.DataFrame) -> pl.DataFrame:
    """``item_id, creator_id, n``: exposures within the ExpoReach window of each eligible (uncensored)
    run-uploaded item, zeros included, from the run's ordered exposures ``ex``."""
    counts = ex.lazy().filter(pl.col("in_window")).group_by("item_id").agg(n=pl.len())
    up = _run_uploads(arm, cfg, t0, days).lazy().filter(pl.col("eligible")).select("item_id", "creator_id")
    return up.join(counts, on="item_id", how="left").with_columns(pl.col("n").fill_null(0).cast(pl.Int64)).collect()


def item_window_exposures(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> np.ndarray:
    """Exposures within the ExpoReach window of each eligible (uncensored) run-uploaded item, zeros included."""
    return _window_counts(arm, cfg, t0, days, _ordered_exposures(arm, cfg, t0, days))["n"].to_numpy()


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
    (:func:`_replicate_k`).
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


# --------------------------------------------------------------------------- daily / overall


def _daily_counts(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> pl.DataFrame:
    """One row per day with the public metrics plus the raw ``shares``/``views`` counts."""
    thresholds = expo_thresholds(cfg)
    ks = sorted(set(thresholds.values()))
    ex = _ordered_exposures(arm, cfg, t0, days)
    up = _run_uploads(arm, cfg, t0, days)
    items = _item_reach(ex, up, ks)
    frame = pl.DataFrame({"day": np.arange(days, dtype=np.int32)})

    def per_day(df: pl.DataFrame, day_col: str, **aggs: pl.Expr) -> None:
        nonlocal frame
        agg = df.lazy().filter(pl.col(day_col).is_not_null()).group_by(day_col).agg(**aggs)
        agg = agg.rename({day_col: "day"}) if day_col != "day" else agg
        frame = frame.join(agg.collect(), on="day", how="left")

    per_day(items, "day", publications=pl.len(), dac=pl.col("creator_id").n_unique())
    per_day(items, "first_day", covered=pl.len())
    for k in ks:
        per_day(items, f"reach_{k}", **{f"reach_new_{k}": pl.len()})
    per_day(
        ex,
        "day",
        exposures=pl.len(),
        interactions=pl.col("inter").sum(),
        cold_interactions=pl.col("inter").filter(pl.col("cold")).sum(),
        shares=pl.col("share").sum(),
        views=pl.col("view").sum(),
        engaged_users=pl.col("user_id").filter(pl.col("inter") > 0).n_unique(),
    )
    per_day(_run_visits(arm, days), "day", dau=pl.col("user_id").n_unique())

    counts = [c for c in frame.columns if c != "day"]
    frame = frame.with_columns(pl.col(counts).fill_null(0).cast(pl.Int64))
    n_exp = pl.col("exposures").cast(pl.Float64)
    cum_pub = pl.col("publications").cum_sum()
    return frame.select(
        "day",
        *[pl.col(f"reach_new_{k}").cum_sum().alias(name) for name, k in thresholds.items()],
        "dac",
        "publications",
        "cold_interactions",
        pl.when(cum_pub > 0).then(pl.col("covered").cum_sum() / cum_pub).otherwise(0.0).alias("new_item_coverage"),
        "exposures",
        "interactions",
        pl.when(n_exp > 0).then(pl.col("interactions") / n_exp).otherwise(0.0).alias("interactions_per_exposure"),
        pl.when(n_exp > 0).then(pl.col("shares") / n_exp).otherwise(0.0).alias("share_rate"),
        pl.when(n_exp > 0).then(pl.col("views") / n_exp).otherwise(0.0).alias("view_rate"),
        "dau",
        "engaged_users",
        "shares",
        "views",
    )


def daily_metrics(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> pl.DataFrame:
    """One row per day ``0..days-1``: ``day`` and every metric of :func:`metric_names` (0 where nothing happened).

    ExpoReach-K and new-item coverage are cumulative up to the end of the day; the others are
    that day's values. ExpoReach counts an eligible item from the day of its K-th exposure within
    the window; items censored at the end of the run (``days``) are not counted on any day.
    """
    return _daily_counts(arm, cfg, t0, days).select("day", *metric_names(cfg))


def overall_metrics(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> dict[str, float]:
    """Run-level values: cumulative metrics at the end, counts summed, rates as ratios of totals,
    ``dac``/``dau``/``engaged_users`` as daily means."""
    d = _daily_counts(arm, cfg, t0, days)
    last = d.row(days - 1, named=True) if days > 0 else {}
    out: dict[str, float] = {}
    for name in expo_thresholds(cfg):
        out[name] = float(last.get(name, 0))
    out["new_item_coverage"] = float(last.get("new_item_coverage", 0.0))
    for name in ("publications", "cold_interactions", "exposures", "interactions"):
        out[name] = float(d[name].sum())
    for name in ("dac", "dau", "engaged_users"):
        out[name] = float(d[name].mean()) if days > 0 else 0.0
    n_exp = float(d["exposures"].sum())
    for name, num in (("interactions_per_exposure", "interactions"), ("share_rate", "shares"), ("view_rate", "views")):
        out[name] = float(d[num].sum()) / n_exp if n_exp > 0 else 0.0
    return {name: out[name] for name in metric_names(cfg)}


def early_exposure(arm: ArmData, t0: int, days: int, hours: float = 24.0) -> dict[str, float]:
    """How scarce early exposure is: run-uploaded items judged by their exposures in the first ``hours``.

    Items too young at the end of the run are left out. ``early.coverage``: share of them exposed at
    least once; ``early.expo_q50/q90/q99``: quantiles of their early exposures (zeros included);
    ``early.top10_share``: share of all their early exposures that went to the top 10% of them;
    ``early.items``: how many were judged. The platform calibration target (docs/world.md,
    "Scarce early exposure") is read on the control arm.
    """
    window = int(hours * 3600)
    end = t0 + days * SECONDS_PER_DAY
    up = arm.uploads.filter((pl.col("upload_ts") >= t0) & (pl.col("upload_ts") + window <= end)).select(
        "item_id", "upload_ts").unique("item_id")
    early = (arm.exposures.lazy().select("item_id", "ts").join(up.lazy(), on="item_id", how="inner")
             .filter(pl.col("ts") - pl.col("upload_ts") < window).group_by("item_id").len().collect())
    n = up.join(early, on="item_id", how="left")["len"].fill_null(0).to_numpy().astype(np.float64)
    if n.size == 0:
        return {"early.items": 0.0}
    top = np.sort(n)[::-1][: max(1, n.size // 10)]
    q50, q90, q99 = np.quantile(n, [0.5, 0.9, 0.99])
    return {"early.items": float(n.size), "early.coverage": float((n > 0).mean()), "early.expo_q50": float(q50),
            "early.expo_q90": float(q90), "early.expo_q99": float(q99),
            "early.top10_share": float(top.sum() / n.sum()) if n.sum() > 0 else float("nan")}


def exposures_by_age(arm: ArmData, t0: int, bins_hours: tuple[float, ...] = (1, 6, 24, 72, 168)) -> pl.DataFrame:
    """Exposures from ``t0`` on, counted per item-age bin (age = ``ts - upload_ts`` at exposure).

    Bins are ``[0, b0), [b0, b1), ..., [b_last, inf)`` hours; columns ``age_bin`` (label),
    ``lo_hours``, ``hi_hours``, ``exposures``, ``interactions`` and ``share`` (of all exposures).
    """
    edges = np.asarray(sorted(bins_hours), dtype=np.float64)
    ex = arm.exposures.filter(pl.col("ts") >= t0)
    age_h = (ex["ts"] - ex["upload_ts"]).to_numpy().astype(np.float64) / 3600.0
    idx = np.searchsorted(edges, age_h, side="right")  # negative ages (should not happen) land in bin 0
    n_bins = len(edges) + 1
    inter = ex.select(sum(pl.col(c).cast(pl.Int64) for c in INTERACTION_TYPES)).to_series().to_numpy()
    n_exp = np.bincount(idx, minlength=n_bins)
    n_int = np.bincount(idx, weights=inter, minlength=n_bins).astype(np.int64)
    lo = np.concatenate([[0.0], edges])
    hi = np.concatenate([edges, [np.inf]])
    labels = [f"{lo[i]:g}-{hi[i]:g}h" if np.isfinite(hi[i]) else f">={lo[i]:g}h" for i in range(n_bins)]
    total = max(int(n_exp.sum()), 1)
    return pl.DataFrame(
        {
            "age_bin": labels,
            "lo_hours": lo,
            "hi_hours": hi,
            "exposures": n_exp.astype(np.int64),
            "interactions": n_int,
            "share": n_exp / total,
        }
    )


# --------------------------------------------------------------------------- per-unit tables


@dataclass(frozen=True)
class _UnitTable:
    """Per randomisation unit numerators and denominators: metric = sum(num) / sum(den)."""

    unit: Literal["creator", "user"]
    names: list[str]
    num: np.ndarray  # (n_units, M)
    den: np.ndarray  # (n_units, M)

    @classmethod
    def from_ratios(cls, unit: Literal["creator", "user"], ratios: dict[str, tuple[np.ndarray, np.ndarray]]) -> _UnitTable:
        names = list(ratios)
        num = np.column_stack([ratios[n][0] for n in names])
        den = np.column_stack([ratios[n][1] for n in names])
        return cls(unit, names, num, den)

    def point(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.num.sum(0) / self.den.sum(0)


def _unit_rows(units: np.ndarray, keys: np.ndarray, key: str, arm: str) -> np.ndarray:
    """Row of each id of ``keys`` in ``units``; ids that are not in ``units`` are an error (an arm's data
    leaking outside its bucket)."""
    if keys.size == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(units)
    sorted_units = units[order]
    pos = np.minimum(np.searchsorted(sorted_units, keys), max(units.size - 1, 0))
    bad = np.ones(keys.size, dtype=bool) if units.size == 0 else sorted_units[pos] != keys
    if bad.any():
        raise ValueError(f"arm '{arm}': {int(bad.sum())} {key} value(s) in the data are not in the arm's bucket")
    return order[pos]


def _scatter(units: np.ndarray, frame: pl.DataFrame, key: str, arm: str) -> dict[str, np.ndarray]:
    """Columns of ``frame`` (one row per unit id in ``key``) as dense float arrays aligned with ``units``.

    Units absent from ``frame`` get 0; ids in ``frame`` that are not in ``units`` are an error.
    """
    cols = [c for c in frame.columns if c != key]
    out = {c: np.zeros(units.size) for c in cols}
    rows = _unit_rows(units, frame[key].to_numpy(), key, arm)  # keys are unique (frame is grouped by key)
    for c in cols:
        out[c][rows] = frame[c].cast(pl.Float64).to_numpy()
    return out


def _creator_table(arm: ArmData, cfg: MetricsConfig, t0: int, days: int, ex: pl.DataFrame) -> _UnitTable:
    thresholds = expo_thresholds(cfg)
    ks = sorted(set(thresholds.values()))
    items = _item_reach(ex, _run_uploads(arm, cfg, t0, days), ks)
    up = _scatter(
        arm.creators,
        items.group_by("creator_id").agg(
            *[pl.col(f"reach_{k}").is_not_null().sum().alias(f"reach_{k}") for k in ks],
            active_days=pl.col("day").n_unique(),
            publications=pl.len(),
            covered=pl.col("first_day").is_not_null().sum(),
        ),
        "creator_id",
        arm.name,
    )
    cold = _scatter(
        arm.creators,
        ex.group_by("creator_id").agg(cold=pl.col("inter").filter(pl.col("cold")).sum()),
        "creator_id",
        arm.name,
    )
    one = np.ones(arm.creators.size)
    ratios = {name: (up[f"reach_{k}"], one) for name, k in thresholds.items()}
    ratios["dac"] = (up["active_days"] / max(days, 1), one)
    ratios["publications"] = (up["publications"], one)
    ratios["cold_interactions"] = (cold["cold"], one)
    ratios["new_item_coverage"] = (up["covered"], up["publications"])
    return _UnitTable.from_ratios("creator", ratios)


def _user_table(arm: ArmData, days: int, ex: pl.DataFrame) -> _UnitTable:
    per_user = _scatter(
        arm.users,
        ex.group_by("user_id").agg(
            exposures=pl.len(),
            interactions=pl.col("inter").sum(),
            shares=pl.col("share").sum(),
            views=pl.col("view").sum(),
            engaged_days=pl.col("day").filter(pl.col("inter") > 0).n_unique(),
        ),
        "user_id",
        arm.name,
    )
    visits = _scatter(
        arm.users, _run_visits(arm, days).group_by("user_id").agg(visit_days=pl.col("day").n_unique()), "user_id", arm.name
    )
    one = np.ones(arm.users.size)
    n_exp = per_user["exposures"]
    ratios = {
        "exposures": (n_exp, one),
        "interactions": (per_user["interactions"], one),
        "interactions_per_exposure": (per_user["interactions"], n_exp),
        "share_rate": (per_user["shares"], n_exp),
        "view_rate": (per_user["views"], n_exp),
        "dau": (visits["visit_days"] / max(days, 1), one),
        "engaged_users": (per_user["engaged_days"] / max(days, 1), one),
    }
    return _UnitTable.from_ratios("user", ratios)


@dataclass(frozen=True)
class _CellTable:
    """An arm's sums over exposures per (user, creator) cell (:data:`_CELL_VALUES`), for the two-way bootstrap.

    ``matrix`` stacks one sparse ``(n_small, n_large)`` matrix per cell value, the small side being the one
    with fewer units, so that a chunk of replicates costs one sparse-dense product.
    """

    matrix: sp.csr_matrix  # (V * n_small, n_large)
    users_small: bool
    n_users: int
    n_creators: int
    active_per_user: np.ndarray  # (n_users,) served days over the run's days: the users-only side of engaged_users

    def sums(self, w_user: np.ndarray, w_creator: np.ndarray) -> np.ndarray:
        """(b, V) replicate sums ``w_u^T X_v w_c`` of every cell value, for weights (b, n_users) and (b, n_creators)."""
        w_small, w_large = (w_user, w_creator) if self.users_small else (w_creator, w_user)
        b, n_small = w_small.shape
        partial = np.asarray(self.matrix @ np.ascontiguousarray(w_large.T))  # (V * n_small, b)
        return np.einsum("vsb,bs->bv", partial.reshape(len(_CELL_VALUES), n_small, b), w_small)


def _cell_table(arm: ArmData, ex: pl.DataFrame, days: int) -> _CellTable:
    # one row per exposure, in the frame's (deterministic) order: scipy sums the duplicates of a cell in that
    # order, so the float sums and the CIs are the same on every run (a polars group-by sums in thread order)
    user_day_inter = pl.col("inter").sum().over("user_id", "day")
    cells = ex.select(
        "user_id", "creator_id",
        exposures=pl.lit(1.0),
        interactions=pl.col("inter"),
        shares=pl.col("share"),
        views=pl.col("view"),
        cold=pl.when(pl.col("cold")).then(pl.col("inter")).otherwise(0),
        engaged=pl.when(user_day_inter > 0).then(pl.col("inter") / user_day_inter).otherwise(0.0) / max(days, 1),
        active=1.0 / pl.len().over("user_id", "day") / max(days, 1),
    )
    user_rows = _unit_rows(arm.users, cells["user_id"].to_numpy(), "user_id", arm.name)
    creator_rows = _unit_rows(arm.creators, cells["creator_id"].to_numpy(), "creator_id", arm.name)
    n_users, n_creators = arm.users.size, arm.creators.size
    users_small = n_users <= n_creators
    small, large = (user_rows, creator_rows) if users_small else (creator_rows, user_rows)
    n_small, n_large = (n_users, n_creators) if users_small else (n_creators, n_users)
    n_values = len(_CELL_VALUES)
    matrix = sp.coo_matrix(
        (
            np.concatenate([cells[v].cast(pl.Float64).to_numpy() for v in _CELL_VALUES]),
            (np.concatenate([v * n_small + small for v in range(n_values)]), np.tile(large, n_values)),
        ),
        shape=(n_values * n_small, n_large),
    ).tocsr()
    active = np.zeros(n_users)
    np.add.at(active, user_rows, cells["active"].to_numpy())
    return _CellTable(matrix, users_small, n_users, n_creators, active)


def _two_way_values(
    sums: np.ndarray, w_user_total: np.ndarray, w_creator_total: np.ndarray, cells: _CellTable
) -> np.ndarray:
    """(b, len(TWO_WAY_METRICS)) replicate ratios from the (b, V) cell sums (before :data:`_RATE_TIMES_EXPOSURES`).

    A rate divides by the replicate's exposures; the per-creator count by the replicate's cell mass
    ``(sum w_u)(sum w_c)`` over the number of users (at unit weights: the number of creators).
    """
    col = {v: i for i, v in enumerate(_CELL_VALUES)}
    out = np.empty((sums.shape[0], len(_TWO_WAY)))
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, (num, den) in enumerate(_TWO_WAY.values()):
            if den == "per_creator":
                d = w_user_total * w_creator_total / cells.n_users if cells.n_users else np.full(sums.shape[0], np.nan)
            else:
                d = sums[:, col[den]]
            out[:, j] = sums[:, col[num]] / d
    return out


@dataclass(frozen=True)
class _ItemExposures:
    """The uncensored run-uploaded items of an arm sorted by their exposures within the window: ``n`` (ascending)
    and the row of each item's creator in the arm's bucket (for a replicate's item weights ``w_c[rows]``)."""

    n: np.ndarray  # (n_items,) int64, ascending
    rows: np.ndarray  # (n_items,) creator rows


def _item_exposures(arm: ArmData, cfg: MetricsConfig, t0: int, days: int, ex: pl.DataFrame) -> _ItemExposures:
    items = _window_counts(arm, cfg, t0, days, ex).sort("n", "item_id")
    rows = _unit_rows(arm.creators, items["creator_id"].to_numpy(), "creator_id", arm.name)
    return _ItemExposures(items["n"].to_numpy(), rows)


def _replicate_k(n_sorted: np.ndarray, cum_w: np.ndarray, q: float, floor: int) -> np.ndarray:
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


def _replicate_reach(n_sorted: np.ndarray, cum_w: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(b,) weighted count of items with at least ``k[b]`` exposures (NaN where ``k`` is NaN)."""
    b, n_items = cum_w.shape
    if n_items == 0:
        return np.where(np.isfinite(k), 0.0, np.nan)
    below = np.searchsorted(n_sorted, np.where(np.isfinite(k), k, np.inf), side="left")  # items under K
    under = np.where(below > 0, cum_w[np.arange(b), np.maximum(below - 1, 0)], 0.0)
    return np.where(np.isfinite(k), cum_w[:, -1] - under, np.nan)


@dataclass(frozen=True)
class _ArmTables:
    """Everything the comparison needs from one arm: the one-way per-unit tables, the two-way cell table and the
    items' window exposures (for the derived K)."""

    creator: _UnitTable
    user: _UnitTable
    cells: _CellTable
    items: _ItemExposures

    @property
    def names(self) -> list[str]:
        return self.creator.names + self.user.names

    def point(self) -> np.ndarray:
        return np.concatenate([self.creator.point(), self.user.point()])


def _unit_tables(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> tuple[_UnitTable, _UnitTable]:
    """Creator-side and user-side per-unit (numerator, denominator) tables of one arm."""
    ex = _ordered_exposures(arm, cfg, t0, days)
    return _creator_table(arm, cfg, t0, days, ex), _user_table(arm, days, ex)


def _arm_tables(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> _ArmTables:
    ex = _ordered_exposures(arm, cfg, t0, days)
    return _ArmTables(_creator_table(arm, cfg, t0, days, ex), _user_table(arm, days, ex), _cell_table(arm, ex, days),
                      _item_exposures(arm, cfg, t0, days, ex))


def normalised_metrics(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> dict[str, float]:
    """Share-invariant run-level values (the ``arm_value`` of :func:`compare_arms`)."""
    out: dict[str, float] = {}
    for table in _unit_tables(arm, cfg, t0, days):
        out.update(zip(table.names, map(float, table.point())))
    return {name: out[name] for name in metric_names(cfg)}


# --------------------------------------------------------------------------- bootstrap and CUPED


@dataclass(frozen=True)
class _DerivedK:
    """ExpoReach metrics whose K was derived from the compared arms' pooled items: re-derived in every replicate."""

    names: list[str]
    quantiles: list[float]
    floor: int


def _derived_k(cfg: MetricsConfig, arms: list[str], names: list[str]) -> _DerivedK | None:
    """The derived ExpoReach metrics of a comparison of ``arms``, when ``cfg``'s K came from exactly these arms
    (a ladder pair of a larger run keeps the run's K fixed: it was not derived from the pair)."""
    if cfg.expo_k is not None or cfg.expo_thresholds is None or sorted(cfg.expo_k_arms or []) != sorted(arms):
        return None
    pairs = [(expo_metric_name(q), q) for q in cfg.expo_quantiles if expo_metric_name(q) in names]
    if not pairs:
        return None
    return _DerivedK([n for n, _ in pairs], [q for _, q in pairs], cfg.expo_k_min or 1)


def _rederived_reach(tables: dict[str, _ArmTables], item_w: dict[str, np.ndarray], w_total: dict[str, np.ndarray],
                     derived: _DerivedK) -> dict[str, np.ndarray]:
    """Per arm, (B, len(quantiles)) replicate ExpoReach values with K re-derived in each replicate.

    ``item_w[a]`` (B, n_items of ``a``) are the replicate weights of the arm's items (their creators' weights),
    ``w_total[a]`` (B,) the replicate's creator count. K_b comes from the pooled, weighted items of all arms
    (:func:`_replicate_k`); each arm's value is its weighted count of items at or above K_b over ``w_total``.
    """
    arms = list(tables)
    n_all = np.concatenate([tables[a].items.n for a in arms])
    order = np.argsort(n_all, kind="stable")
    n_sorted = n_all[order]
    n_samples = next(iter(w_total.values())).shape[0]
    out = {a: np.empty((n_samples, len(derived.quantiles))) for a in arms}
    chunk = max(1, _BOOTSTRAP_CHUNK_BYTES // (8 * max(n_all.size, 1)))
    for start in range(0, n_samples, chunk):
        rows = slice(start, min(start + chunk, n_samples))
        pooled = np.cumsum(np.concatenate([item_w[a][rows] for a in arms], axis=1)[:, order], axis=1, dtype=np.float64)
        k_b = np.column_stack([_replicate_k(n_sorted, pooled, q, derived.floor) for q in derived.quantiles])
        for a in arms:
            cum = np.cumsum(item_w[a][rows], axis=1, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[a][rows] = np.column_stack([_replicate_reach(tables[a].items.n, cum, k_b[:, j])
                                                for j in range(len(derived.quantiles))]) / w_total[a][rows, None]
    return out


def _arm_replicates(
    tables: _ArmTables, extra: np.ndarray, cfg: MetricsConfig, rng_creators: np.random.Generator,
    rng_users: np.random.Generator, keep_item_weights: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """(B, M) Poisson-bootstrap replicates of every metric (``tables.names`` order), (B, k) of ``sum_c w_c * extra_c``
    and, with ``keep_item_weights``, the replicates' item weights (B, n_items) and creator totals (B,) for
    :func:`_rederived_reach`.

    Each replicate draws ``w_c ~ Poisson(1)`` per creator and ``w_u ~ Poisson(1)`` per user, from one stream
    per side (so chunking does not change the draws). One-way metrics are ``sum(w * num) / sum(w * den)`` over
    their unit; :data:`TWO_WAY_METRICS` (with ``cfg.bootstrap_two_way``) weight each exposure by ``w_u * w_c``
    (:func:`_two_way_values`; :data:`_RATE_TIMES_EXPOSURES` then times the replicate's exposures per user);
    ``extra`` (n_creators, k) are per-creator columns whose replicate sums CUPED needs (:func:`_cuped_stats`).
    """
    n_samples = cfg.bootstrap_samples
    c, u = tables.creator, tables.user
    n_c, n_u = c.num.shape[0], u.num.shape[0]
    m_c, m_u, m_adj = len(c.names), len(u.names), extra.shape[1]
    c_values = np.concatenate([c.num, c.den, extra], axis=1)  # (n_c, 2 m_c + k)
    u_values = np.concatenate([u.num, u.den], axis=1)  # (n_u, 2 m_u)
    two_way = [tables.names.index(n) for n in TWO_WAY_METRICS] if cfg.bootstrap_two_way else []
    exposures_col = tables.names.index("exposures")
    width = max(n_c, n_u, len(_CELL_VALUES) * min(n_c, n_u) if two_way else 0, 1)
    chunk = max(1, _BOOTSTRAP_CHUNK_BYTES // (8 * width))
    if keep_item_weights:
        item_w = np.empty((n_samples, tables.items.n.size), np.uint16)  # Poisson(1) counts
        w_total = np.empty(n_samples)
    out = np.empty((n_samples, m_c + m_u))
    adj = np.empty((n_samples, m_adj))
    for start in range(0, n_samples, chunk):
        rows = slice(start, min(start + chunk, n_samples))
        b = rows.stop - rows.start
        w_c = rng_creators.poisson(1.0, size=(b, n_c)).astype(np.float64)  # (b, n_c)
        w_u = rng_users.poisson(1.0, size=(b, n_u)).astype(np.float64)  # (b, n_u)
        sum_c, sum_u = w_c @ c_values, w_u @ u_values
        w_c_total, w_u_total = w_c.sum(1), w_u.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[rows, :m_c] = sum_c[:, :m_c] / sum_c[:, m_c : 2 * m_c]
            out[rows, m_c:] = sum_u[:, :m_u] / sum_u[:, m_u:]
            adj[rows] = sum_c[:, 2 * m_c :]
        if keep_item_weights:
            item_w[rows], w_total[rows] = w_c[:, tables.items.rows], w_c_total
        if two_way:
            values = _two_way_values(tables.cells.sums(w_u, w_c), w_u_total, w_c_total, tables.cells)
            for j, name in enumerate(TWO_WAY_METRICS):
                if name in _RATE_TIMES_EXPOSURES:
                    values[:, j] *= out[rows, exposures_col]  # users-only replicate of exposures per user
                elif name == "engaged_users":  # users-only replicate of served days per user
                    with np.errstate(divide="ignore", invalid="ignore"):
                        values[:, j] *= (w_u @ tables.cells.active_per_user) / w_u_total
            out[rows, two_way] = values
    return out, adj, ((item_w, w_total) if keep_item_weights else None)


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


def _cuped_theta(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(p, m) least-squares slopes of ``y`` (n, m) on ``x`` (n, p), as :func:`compare_arms` computes them."""
    return _theta_from_sums(_cuped_columns(x, y).sum(0), x.shape[1], y.shape[1])


def _cuped_stats(arms: dict[str, ArmData], tables: dict[str, _ArmTables], names: list[str]) -> dict[str, np.ndarray] | None:
    """Per arm, the (n_creators, k) columns ``[1, X, vec(X X^T), Y, vec(X Y^T)]`` whose (weighted) sums give CUPED's
    theta and covariate means (:func:`_cuped_adjustment`); ``Y`` the per-creator numerators of ``names``. None
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


def _cuped_adjustment(sums: dict[str, np.ndarray], p: int, m: int) -> dict[str, np.ndarray]:
    """Per arm, the CUPED term ``(mean_arm(X) - mean_pooled(X)) @ theta`` of each metric, from the sums of
    :func:`_cuped_stats` columns: (..., k) -> (..., m). ``theta`` is the pooled OLS slope of Y on X over the
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


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    samples = np.where(np.isfinite(samples), samples, np.nan)
    lo = np.full(samples.shape[1], np.nan)
    hi = np.full(samples.shape[1], np.nan)
    ok = ~np.all(np.isnan(samples), axis=0)
    if ok.any():
        lo[ok], hi[ok] = np.nanquantile(samples[:, ok], [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def _lift_ci(
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


_COMPARISON_SCHEMA = {
    "metric": pl.String,
    "arm": pl.String,
    "control_value": pl.Float64,
    "arm_value": pl.Float64,
    "lift": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "significant": pl.Boolean,
    "lift_cuped": pl.Float64,
    "ci_low_cuped": pl.Float64,
    "ci_high_cuped": pl.Float64,
    "significant_cuped": pl.Boolean,
}


def compare_arms(
    arms: dict[str, ArmData], control: str, cfg: MetricsConfig, t0: int, days: int, seed: int
) -> pl.DataFrame:
    """Relative lift of every non-control arm over ``control``, per metric, with bootstrap CIs and CUPED lifts.

    Values are share-invariant (per bucket creator / per bucket user / ratios of sums, see
    ``docs/metrics.md``). Each arm is resampled independently with a Poisson bootstrap
    (``cfg.bootstrap_samples`` replicates): creators for creator-side metrics, users for user-side ones,
    both at once for sums over exposures (:data:`TWO_WAY_METRICS`); the CI is the percentile interval of
    ``arm_b / control_b - 1`` at ``cfg.ci_level``. The weights of the arm at position ``i`` of
    ``[control, *others]`` come from ``np.random.default_rng([seed, i, 0])`` (creators) and ``[seed, i, 1]``
    (users). Creator metrics with one unit per creator (:data:`CUPED_METRICS`) also
    get a CUPED lift when the arms carry ``creator_covariates`` (NaN otherwise). Undefined lifts are NaN
    (:func:`_lift_ci`). Columns: ``metric, arm, control_value, arm_value, lift, ci_low, ci_high, significant,
    lift_cuped, ci_low_cuped, ci_high_cuped, significant_cuped``.
    """
    if control not in arms:
        raise ValueError(f"control arm '{control}' is not one of {list(arms)}")
    names = metric_names(cfg)
    order = [control, *[a for a in arms if a != control]]  # fixed positions -> deterministic
    tables = {a: _arm_tables(arms[a], cfg, t0, days) for a in order}
    cuped_names = [n for n in names if n in CUPED_METRICS]
    stats = _cuped_stats(arms, tables, cuped_names)
    point: dict[str, np.ndarray] = {}
    boot: dict[str, np.ndarray] = {}
    stat_point: dict[str, np.ndarray] = {}
    stat_boot: dict[str, np.ndarray] = {}
    derived = _derived_k(cfg, order, names)
    item_w: dict[str, np.ndarray] = {}
    w_total: dict[str, np.ndarray] = {}
    for i, arm_name in enumerate(order):
        t = tables[arm_name]
        idx = [t.names.index(n) for n in names]  # back to metric_names order
        extra = stats[arm_name] if stats is not None else np.zeros((t.creator.num.shape[0], 0))
        rng_c, rng_u = (np.random.default_rng([seed, i, side]) for side in (0, 1))
        replicates, stat_boot[arm_name], kept = _arm_replicates(t, extra, cfg, rng_c, rng_u, derived is not None)
        if kept is not None:
            item_w[arm_name], w_total[arm_name] = kept
        point[arm_name], boot[arm_name] = t.point()[idx], replicates[:, idx]
        stat_point[arm_name] = extra.sum(0)
    if derived is not None:  # K is part of the estimator: every replicate re-derives it from its own pooled items
        reach = _rederived_reach({a: tables[a] for a in order}, item_w, w_total, derived)
        for a in order:
            boot[a][:, [names.index(n) for n in derived.names]] = reach[a]
    terms = stats is not None
    if terms:
        p_cov = next(iter(arms.values())).creator_covariates.shape[1]
        adj_point = _cuped_adjustment(stat_point, p_cov, len(cuped_names))
        adj_boot = _cuped_adjustment(stat_boot, p_cov, len(cuped_names))

    cuped_pos = [names.index(n) for n in cuped_names]
    rows: list[dict] = []
    c_val = point[control]
    for arm_name in order[1:]:
        a_val = point[arm_name]
        lift, lo, hi = _lift_ci(c_val, a_val, boot[control], boot[arm_name], cfg.ci_level, np.ones(len(names), bool))
        cuped = np.full((3, len(names)), np.nan)
        if terms and cuped_pos:
            c_adj, a_adj = c_val[cuped_pos] - adj_point[control], a_val[cuped_pos] - adj_point[arm_name]
            valid = (c_val[cuped_pos] != 0) & (a_val[cuped_pos] != 0) & (c_adj > 0) & (a_adj > 0)
            cuped[:, cuped_pos] = _lift_ci(
                c_adj, a_adj, boot[control][:, cuped_pos] - adj_boot[control],
                boot[arm_name][:, cuped_pos] - adj_boot[arm_name], cfg.ci_level, valid,
            )
        for j, metric in enumerate(names):
            rows.append(
                {
                    "metric": metric,
                    "arm": arm_name,
                    "control_value": float(c_val[j]),
                    "arm_value": float(a_val[j]),
                    "lift": float(lift[j]),
                    "ci_low": float(lo[j]),
                    "ci_high": float(hi[j]),
                    "significant": bool(lo[j] > 0 or hi[j] < 0),
                    "lift_cuped": float(cuped[0, j]),
                    "ci_low_cuped": float(cuped[1, j]),
                    "ci_high_cuped": float(cuped[2, j]),
                    "significant_cuped": bool(cuped[1, j] > 0 or cuped[2, j] < 0),
                }
            )
    return pl.DataFrame(rows, schema=_COMPARISON_SCHEMA)


def ladder_comparison(arms: dict[str, ArmData], order: list[str], cfg: MetricsConfig, t0: int, days: int,
                      seed: int) -> pl.DataFrame:
    """Each arm of ``order`` against the one before it (paper Table 2: every version over the previous one),
    with the same bootstrap CIs and CUPED lifts as :func:`compare_arms` (CUPED's theta pooled over the pair).
    Columns: those of compare_arms plus ``baseline``."""
    missing = [a for a in order if a not in arms]
    if missing:
        raise ValueError(f"ladder arms {missing} are not arms of the run {list(arms)}")
    frames = []
    for prev, cur in zip(order, order[1:]):
        c = compare_arms({prev: arms[prev], cur: arms[cur]}, prev, cfg, t0, days, seed)
        frames.append(c.with_columns(pl.lit(prev).alias("baseline")))
    return pl.concat(frames) if frames else pl.DataFrame()
