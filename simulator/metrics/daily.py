"""Per-arm values: the daily metrics, their run-level totals, early exposure and exposures by item age."""

from __future__ import annotations

import numpy as np
import polars as pl

from simulator.core.config import MetricsConfig
from simulator.core.schema import INTERACTION_TYPES, SECONDS_PER_DAY
from simulator.metrics.definitions import ArmData, expo_thresholds, metric_names
from simulator.metrics.expo_reach import item_reach, ordered_exposures, run_uploads, run_visits


def _daily_counts(arm: ArmData, cfg: MetricsConfig, t0: int, days: int, ex: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per day with the public metrics plus the raw ``shares``/``views`` counts; ``ex``: the ordered
    exposures when the caller has them (:class:`LiveDaily`)."""
    thresholds = expo_thresholds(cfg)
    ks = sorted(set(thresholds.values()))
    ex = ordered_exposures(arm, cfg, t0, days) if ex is None else ex
    up = run_uploads(arm, cfg, t0, days)
    items = item_reach(ex, up, ks)
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
    per_day(run_visits(arm, days), "day", dau=pl.col("user_id").n_unique())

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


class LiveDaily:
    """One arm's metrics of each day as the run goes: :meth:`row` for ``day`` is the last row of
    ``daily_metrics(arm, cfg, t0, day + 1)`` (the value live at the end of that day), without sorting every earlier
    day's exposures again each day (which made the daily MLflow logging quadratic in the run's length).

    A day's row reads that day's exposures and, of the earlier ones, only what the cumulative metrics count: each
    item's exposures so far (its next ``n_prior``) and the exposures whose ``n_prior`` is a mark of
    :func:`~simulator.metrics.expo_reach.item_reach` (an item's first and K-th). The rows of earlier days computed
    from that are not their values and are dropped. A day that does not follow the last one (a resumed run) orders
    the earlier days once. Tested equal to :func:`daily_metrics` day by day (tests/simulator/test_metrics.py).
    """

    def __init__(self, cfg: MetricsConfig, t0: int):
        self.cfg, self.t0 = cfg, t0
        self._marks = sorted({0, *(k - 1 for k in expo_thresholds(cfg).values())})
        self._reset()

    def _reset(self) -> None:
        self._history: pl.DataFrame | None = None  # earlier days' exposures at a mark
        self._counts = pl.DataFrame(schema={"item_id": pl.Int64, "n": pl.Int64})  # exposures so far by item
        self._days = 0  # days taken in

    def _take(self, ordered: pl.DataFrame) -> None:
        at_mark = ordered.filter(pl.col("n_prior").is_in(self._marks))
        self._history = at_mark if self._history is None else pl.concat([self._history, at_mark])
        self._counts = (pl.concat([self._counts, ordered.group_by("item_id").agg(n=pl.len().cast(pl.Int64))])
                        .group_by("item_id").agg(pl.col("n").sum()))

    def row(self, arm: ArmData, day: int) -> dict[str, float]:
        """The metrics of ``day`` (every :func:`metric_names` name), ``arm`` holding the run up to its end."""
        if day != self._days:
            self._reset()
            if day > 0:
                self._take(ordered_exposures(arm, self.cfg, self.t0, day))
        today = ordered_exposures(arm, self.cfg, self.t0, day + 1, first_day=day, prior=self._counts)
        ex = today if self._history is None else pl.concat([self._history, today])
        counts = _daily_counts(arm, self.cfg, self.t0, day + 1, ex=ex)
        self._take(today)
        self._days = day + 1
        row = counts.filter(pl.col("day") == day).select(metric_names(self.cfg)).row(0, named=True)
        return {name: float(value) for name, value in row.items()}


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
