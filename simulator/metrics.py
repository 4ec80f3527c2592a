"""Per-arm metrics of a co-diverted A/B run (ExpoReach-K, DAC, ...) and bootstrap lifts with CIs.

Pure numpy/polars: no Ray or MLflow here. Reads only an arm's exposures, uploads and visits
(:mod:`simulator.schema`) plus its bucket of creators and users. Definitions, the normalisation
across arms of different shares and the bootstrap are written up in ``docs/metrics.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from simulator.config import MetricsConfig
from simulator.schema import (
    EXPOSURES_SCHEMA,
    INTERACTION_TYPES,
    SECONDS_PER_DAY,
    UPLOADS_SCHEMA,
    VISITS_SCHEMA,
)

CREATOR_METRICS: tuple[str, ...] = ("dac", "publications", "cold_interactions", "new_item_coverage")
"""Creator-side metrics besides ``expo_reach_<K>`` (bootstrapped over creators)."""

USER_METRICS: tuple[str, ...] = (
    "exposures",
    "interactions",
    "interactions_per_exposure",
    "share_rate",
    "view_rate",
    "dau",
    "engaged_users",
)
"""User-side guard-rails (bootstrapped over users)."""

_BOOTSTRAP_CHUNK_BYTES = 48 * 2**20  # weight-matrix chunk; peak memory is about 2x this


def metric_names(cfg: MetricsConfig) -> list[str]:
    """All metric names, in the column order of :func:`daily_metrics`."""
    return [f"expo_reach_{k}" for k in cfg.expo_k] + list(CREATOR_METRICS) + list(USER_METRICS)


@dataclass(frozen=True)
class ArmData:
    """What one arm produced over a run, plus its randomisation buckets.

    ``exposures``/``uploads``/``visits`` follow :data:`~simulator.schema.EXPOSURES_SCHEMA`,
    :data:`~simulator.schema.UPLOADS_SCHEMA` and :data:`~simulator.schema.VISITS_SCHEMA`;
    ``uploads`` holds only items uploaded during the run. ``creators``/``users`` are all ids of
    the arm's buckets, including creators that never upload and users that never visit.
    """

    name: str
    exposures: pl.DataFrame
    uploads: pl.DataFrame
    visits: pl.DataFrame
    creators: np.ndarray
    users: np.ndarray
    share: float

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


# --------------------------------------------------------------------------- per-row tables


def _ordered_exposures(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> pl.DataFrame:
    """The run's exposures with ``day``, ``n_prior`` (earlier exposures of the item), ``inter`` and ``cold``.

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
            cold=((pl.col("ts") - pl.col("upload_ts")) < cold_age_s) | (pl.col("n_prior") < cfg.cold_max_exposures)
        )
        .collect()
    )


def _run_uploads(arm: ArmData, t0: int, days: int) -> pl.DataFrame:
    """Items uploaded in days ``0..days-1``, with ``day`` taken from ``upload_ts``."""
    return (
        arm.uploads.lazy()
        .select("item_id", "creator_id", "upload_ts")
        .with_columns(day=((pl.col("upload_ts") - t0) // SECONDS_PER_DAY).cast(pl.Int32))
        .filter((pl.col("day") >= 0) & (pl.col("day") < days))
        .unique("item_id", keep="first", maintain_order=True)
        .collect()
    )


def _run_visits(arm: ArmData, days: int) -> pl.DataFrame:
    return arm.visits.filter((pl.col("day") >= 0) & (pl.col("day") < days) & (pl.col("requests") > 0))


def _item_reach(ex: pl.DataFrame, up: pl.DataFrame, ks: list[int]) -> pl.DataFrame:
    """Per run-uploaded item: its creator, upload day, first-exposure day and the day it reached each K."""
    marks = sorted({0, *(k - 1 for k in ks)})  # n_prior of the first and of each K-th exposure
    hits = (
        ex.lazy()
        .filter(pl.col("n_prior").is_in(marks))
        .group_by("item_id")
        .agg(
            first_day=pl.col("day").filter(pl.col("n_prior") == 0).first(),
            **{f"reach_{k}": pl.col("day").filter(pl.col("n_prior") == k - 1).first() for k in ks},
        )
    )
    return up.lazy().join(hits, on="item_id", how="left").collect()


# --------------------------------------------------------------------------- daily / overall


def _daily_counts(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> pl.DataFrame:
    """One row per day with the public metrics plus the raw ``shares``/``views`` counts."""
    ks = list(cfg.expo_k)
    ex = _ordered_exposures(arm, cfg, t0, days)
    up = _run_uploads(arm, t0, days)
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
        *[pl.col(f"reach_new_{k}").cum_sum().alias(f"expo_reach_{k}") for k in ks],
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
    that day's values.
    """
    return _daily_counts(arm, cfg, t0, days).select("day", *metric_names(cfg))


def overall_metrics(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> dict[str, float]:
    """Run-level values: cumulative metrics at the end, counts summed, rates as ratios of totals,
    ``dac``/``dau``/``engaged_users`` as daily means."""
    d = _daily_counts(arm, cfg, t0, days)
    last = d.row(days - 1, named=True) if days > 0 else {}
    out: dict[str, float] = {}
    for k in cfg.expo_k:
        out[f"expo_reach_{k}"] = float(last.get(f"expo_reach_{k}", 0))
    out["new_item_coverage"] = float(last.get("new_item_coverage", 0.0))
    for name in ("publications", "cold_interactions", "exposures", "interactions"):
        out[name] = float(d[name].sum())
    for name in ("dac", "dau", "engaged_users"):
        out[name] = float(d[name].mean()) if days > 0 else 0.0
    n_exp = float(d["exposures"].sum())
    for name, num in (("interactions_per_exposure", "interactions"), ("share_rate", "shares"), ("view_rate", "views")):
        out[name] = float(d[num].sum()) / n_exp if n_exp > 0 else 0.0
    return {name: out[name] for name in metric_names(cfg)}


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


def _scatter(units: np.ndarray, frame: pl.DataFrame, key: str, arm: str) -> dict[str, np.ndarray]:
    """Columns of ``frame`` (one row per unit id in ``key``) as dense float arrays aligned with ``units``.

    Units absent from ``frame`` get 0; ids in ``frame`` that are not in ``units`` are an error
    (an arm's data leaking outside its bucket).
    """
    cols = [c for c in frame.columns if c != key]
    out = {c: np.zeros(units.size) for c in cols}
    keys = frame[key].to_numpy()
    if keys.size == 0:
        return out
    order = np.argsort(units)
    sorted_units = units[order]
    pos = np.minimum(np.searchsorted(sorted_units, keys), max(units.size - 1, 0))
    bad = np.ones(keys.size, dtype=bool) if units.size == 0 else sorted_units[pos] != keys
    if bad.any():
        raise ValueError(f"arm '{arm}': {int(bad.sum())} {key} value(s) in the data are not in the arm's bucket")
    rows = order[pos]  # keys are unique (frame is grouped by key)
    for c in cols:
        out[c][rows] = frame[c].cast(pl.Float64).to_numpy()
    return out


def _creator_table(arm: ArmData, cfg: MetricsConfig, t0: int, days: int, ex: pl.DataFrame) -> _UnitTable:
    ks = list(cfg.expo_k)
    items = _item_reach(ex, _run_uploads(arm, t0, days), ks)
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
    ratios = {f"expo_reach_{k}": (up[f"reach_{k}"], one) for k in ks}
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


def _unit_tables(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> tuple[_UnitTable, _UnitTable]:
    """Creator-side and user-side per-unit (numerator, denominator) tables of one arm."""
    ex = _ordered_exposures(arm, cfg, t0, days)
    return _creator_table(arm, cfg, t0, days, ex), _user_table(arm, days, ex)


def normalised_metrics(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> dict[str, float]:
    """Share-invariant run-level values (the ``arm_value`` of :func:`compare_arms`)."""
    out: dict[str, float] = {}
    for table in _unit_tables(arm, cfg, t0, days):
        out.update(zip(table.names, map(float, table.point())))
    return {name: out[name] for name in metric_names(cfg)}


# --------------------------------------------------------------------------- bootstrap


def _bootstrap(table: _UnitTable, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, M) Poisson-bootstrap replicates of sum(w * num) / sum(w * den), w ~ Poisson(1) per unit."""
    n, m = table.num.shape
    if n == 0:
        return np.full((n_samples, m), np.nan)
    values = np.concatenate([table.num, table.den], axis=1)  # (n, 2M)
    sums = np.empty((n_samples, 2 * m))
    chunk = max(1, _BOOTSTRAP_CHUNK_BYTES // (8 * n))
    for start in range(0, n_samples, chunk):
        b = min(chunk, n_samples - start)
        w = rng.poisson(1.0, size=(b, n)).astype(np.float64)  # (b, n)
        sums[start : start + b] = w @ values
    with np.errstate(divide="ignore", invalid="ignore"):
        return sums[:, :m] / sums[:, m:]


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    samples = np.where(np.isfinite(samples), samples, np.nan)
    lo = np.full(samples.shape[1], np.nan)
    hi = np.full(samples.shape[1], np.nan)
    ok = ~np.all(np.isnan(samples), axis=0)
    if ok.any():
        lo[ok], hi[ok] = np.nanquantile(samples[:, ok], [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def compare_arms(
    arms: dict[str, ArmData], control: str, cfg: MetricsConfig, t0: int, days: int, seed: int
) -> pl.DataFrame:
    """Relative lift of every non-control arm over ``control``, per metric, with bootstrap CIs.

    Values are share-invariant (per bucket creator / per bucket user / ratios of sums, see
    ``docs/metrics.md``). Creators are resampled for creator-side metrics and users for
    user-side ones, each arm independently (Poisson bootstrap, ``cfg.bootstrap_samples``
    replicates, ``np.random.default_rng(seed)``); the CI is the percentile interval of
    ``arm_b / control_b - 1`` at ``cfg.ci_level``. Columns: ``metric, arm, control_value,
    arm_value, lift, ci_low, ci_high``.
    """
    if control not in arms:
        raise ValueError(f"control arm '{control}' is not one of {list(arms)}")
    names = metric_names(cfg)
    rng = np.random.default_rng(seed)
    order = [control, *[a for a in arms if a != control]]  # fixed draw order -> deterministic
    point: dict[str, np.ndarray] = {}
    boot: dict[str, np.ndarray] = {}
    for arm_name in order:
        tables = _unit_tables(arms[arm_name], cfg, t0, days)
        pos = {n: i for i, n in enumerate(n for t in tables for n in t.names)}
        idx = [pos[n] for n in names]  # back to metric_names order
        point[arm_name] = np.concatenate([t.point() for t in tables])[idx]
        boot[arm_name] = np.concatenate([_bootstrap(t, cfg.bootstrap_samples, rng) for t in tables], axis=1)[:, idx]

    rows: list[dict] = []
    c_val = point[control]
    for arm_name in order[1:]:
        a_val = point[arm_name]
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(c_val != 0, a_val / c_val - 1.0, np.nan)
            lift_b = boot[arm_name] / boot[control] - 1.0
        lo, hi = _percentile_ci(lift_b, cfg.ci_level)
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
                }
            )
    schema = {
        "metric": pl.String,
        "arm": pl.String,
        "control_value": pl.Float64,
        "arm_value": pl.Float64,
        "lift": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def ladder_comparison(arms: dict[str, ArmData], order: list[str], cfg: MetricsConfig, t0: int, days: int,
                      seed: int) -> pl.DataFrame:
    """Each arm of ``order`` against the one before it (paper Table 2: every version over the previous one),
    with the same bootstrap CIs as :func:`compare_arms`. Columns: those of compare_arms plus ``baseline``."""
    missing = [a for a in order if a not in arms]
    if missing:
        raise ValueError(f"ladder arms {missing} are not arms of the run {list(arms)}")
    frames = []
    for prev, cur in zip(order, order[1:]):
        c = compare_arms({prev: arms[prev], cur: arms[cur]}, prev, cfg, t0, days, seed)
        frames.append(c.with_columns(pl.lit(prev).alias("baseline")))
    return pl.concat(frames) if frames else pl.DataFrame()
