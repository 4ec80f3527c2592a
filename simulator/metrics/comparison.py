"""Lifts of every arm over control (and of each ladder arm over the one before it) with bootstrap CIs and CUPED."""

from __future__ import annotations

import numpy as np
import polars as pl

from simulator.core.config import MetricsConfig
from simulator.metrics.bootstrap import arm_replicates, derived_k, lift_ci, rederived_reach
from simulator.metrics.cuped import CUPED_METRICS, cuped_adjustment, cuped_stats
from simulator.metrics.definitions import ArmData, metric_names
from simulator.metrics.units import arm_tables


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
    (:func:`lift_ci`). Columns: ``metric, arm, control_value, arm_value, lift, ci_low, ci_high, significant,
    lift_cuped, ci_low_cuped, ci_high_cuped, significant_cuped``.
    """
    if control not in arms:
        raise ValueError(f"control arm '{control}' is not one of {list(arms)}")
    names = metric_names(cfg)
    order = [control, *[arm for arm in arms if arm != control]]  # fixed positions -> deterministic
    tables = {arm: arm_tables(arms[arm], cfg, t0, days) for arm in order}
    cuped_names = [name for name in names if name in CUPED_METRICS]
    stats = cuped_stats(arms, tables, cuped_names)
    point: dict[str, np.ndarray] = {}
    boot: dict[str, np.ndarray] = {}
    stat_point: dict[str, np.ndarray] = {}
    stat_boot: dict[str, np.ndarray] = {}
    derived = derived_k(cfg, order, names)
    item_w: dict[str, np.ndarray] = {}
    w_total: dict[str, np.ndarray] = {}
    for position, arm_name in enumerate(order):
        table = tables[arm_name]
        columns = [table.names.index(name) for name in names]  # back to metric_names order
        extra = stats[arm_name] if stats is not None else np.zeros((table.creator.num.shape[0], 0))
        rng_creators, rng_users = (np.random.default_rng([seed, position, side]) for side in (0, 1))
        replicates, stat_boot[arm_name], kept = arm_replicates(table, extra, cfg, rng_creators, rng_users,
                                                               derived is not None)
        if kept is not None:
            item_w[arm_name], w_total[arm_name] = kept
        point[arm_name], boot[arm_name] = table.point()[columns], replicates[:, columns]
        stat_point[arm_name] = extra.sum(0)
    if derived is not None:  # K is part of the estimator: every replicate re-derives it from its own pooled items
        reach = rederived_reach({arm: tables[arm] for arm in order}, item_w, w_total, derived)
        for arm in order:
            boot[arm][:, [names.index(name) for name in derived.names]] = reach[arm]
    terms = stats is not None
    if terms:
        p_cov = next(iter(arms.values())).creator_covariates.shape[1]
        adj_point = cuped_adjustment(stat_point, p_cov, len(cuped_names))
        adj_boot = cuped_adjustment(stat_boot, p_cov, len(cuped_names))

    cuped_columns = [names.index(name) for name in cuped_names]
    rows: list[dict] = []
    control_value = point[control]
    for arm_name in order[1:]:
        arm_value = point[arm_name]
        lift, low, high = lift_ci(control_value, arm_value, boot[control], boot[arm_name], cfg.ci_level,
                                  np.ones(len(names), bool))
        cuped = np.full((3, len(names)), np.nan)
        if terms and cuped_columns:
            control_adjusted = control_value[cuped_columns] - adj_point[control]
            arm_adjusted = arm_value[cuped_columns] - adj_point[arm_name]
            valid = ((control_value[cuped_columns] != 0) & (arm_value[cuped_columns] != 0) & (control_adjusted > 0)
                     & (arm_adjusted > 0))
            cuped[:, cuped_columns] = lift_ci(
                control_adjusted, arm_adjusted, boot[control][:, cuped_columns] - adj_boot[control],
                boot[arm_name][:, cuped_columns] - adj_boot[arm_name], cfg.ci_level, valid,
            )
        for column, metric in enumerate(names):
            rows.append(
                {
                    "metric": metric,
                    "arm": arm_name,
                    "control_value": float(control_value[column]),
                    "arm_value": float(arm_value[column]),
                    "lift": float(lift[column]),
                    "ci_low": float(low[column]),
                    "ci_high": float(high[column]),
                    "significant": bool(low[column] > 0 or high[column] < 0),
                    "lift_cuped": float(cuped[0, column]),
                    "ci_low_cuped": float(cuped[1, column]),
                    "ci_high_cuped": float(cuped[2, column]),
                    "significant_cuped": bool(cuped[1, column] > 0 or cuped[2, column] < 0),
                }
            )
    return pl.DataFrame(rows, schema=_COMPARISON_SCHEMA)


def ladder_comparison(arms: dict[str, ArmData], order: list[str], cfg: MetricsConfig, t0: int, days: int,
                      seed: int) -> pl.DataFrame:
    """Each arm of ``order`` against the one before it (paper Table 2: every version over the previous one),
    with the same bootstrap CIs and CUPED lifts as :func:`compare_arms` (CUPED's theta pooled over the pair).
    Columns: those of compare_arms plus ``baseline``."""
    missing = [arm for arm in order if arm not in arms]
    if missing:
        raise ValueError(f"ladder arms {missing} are not arms of the run {list(arms)}")
    frames = []
    for previous, current in zip(order, order[1:]):
        pair = compare_arms({previous: arms[previous], current: arms[current]}, previous, cfg, t0, days, seed)
        frames.append(pair.with_columns(pl.lit(previous).alias("baseline")))
    return pl.concat(frames) if frames else pl.DataFrame()
