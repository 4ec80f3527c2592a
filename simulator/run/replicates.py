"""Seed replicates: the same scenario run with several seeds, lifts pooled across runs.

One run's bootstrap CIs resample creators and users, not the run itself: every arm trains its own
models on its own traffic, and how fast they learn differs from seed to seed (docs/models/dualrec.md,
"Measured"). Replicates put that variance in: each seed is a whole run (its own synthetic platform,
world, model initialisation and bootstrap), and a lift is read from the replicate lifts: their mean,
a Student-t interval over seeds, and how many seeds agree on its sign (their markdown:
:func:`simulator.run.report.format_replicates_markdown`).
"""

from __future__ import annotations

import numpy as np
import polars as pl


def aggregate_lifts(comparisons: list[pl.DataFrame], ci_level: float = 0.95) -> pl.DataFrame:
    """Pool the ``compare_arms`` tables of replicate runs.

    Columns: ``metric, arm, n, mean_lift, ci_low, ci_high, sign_agreement, lifts``: the mean of the
    replicate lifts, its t interval (NaN with fewer than two finite lifts), the share of replicates
    whose lift has the sign of the mean, and the lifts themselves in seed order.
    """
    from scipy.stats import t as student_t

    if not comparisons:
        raise ValueError("aggregate_lifts: no replicate comparisons")
    keys = comparisons[0].select(["metric", "arm"])
    for i, c in enumerate(comparisons[1:], 1):
        if not c.select(["metric", "arm"]).equals(keys):
            raise ValueError(f"replicate {i} compares other metrics or arms than replicate 0")
    lifts = np.stack([c["lift"].to_numpy().astype(np.float64) for c in comparisons], 1)  # (rows, n)
    rows = []
    for j, (metric, arm) in enumerate(keys.iter_rows()):
        v = lifts[j][np.isfinite(lifts[j])]
        n = len(v)
        mean = float(v.mean()) if n else float("nan")
        lo = hi = float("nan")
        if n >= 2:
            half = float(student_t.ppf(0.5 + ci_level / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
            lo, hi = mean - half, mean + half
        agree = float((np.sign(v) == np.sign(mean)).mean()) if n and mean != 0 else float("nan")
        rows.append({"metric": metric, "arm": arm, "n": n, "mean_lift": mean, "ci_low": lo, "ci_high": hi,
                     "sign_agreement": agree, "lifts": lifts[j].tolist()})
    return pl.DataFrame(rows, schema={"metric": pl.String, "arm": pl.String, "n": pl.Int64, "mean_lift": pl.Float64,
                                      "ci_low": pl.Float64, "ci_high": pl.Float64, "sign_agreement": pl.Float64,
                                      "lifts": pl.List(pl.Float64)})


def as_comparison(table: pl.DataFrame) -> pl.DataFrame:
    """The pooled table in :func:`simulator.metrics.comparison.compare_arms`' lift layout (``lift`` = ``mean_lift``), the
    frame :func:`simulator.run.plots.plot_forest` draws."""
    return table.select("metric", "arm", pl.col("mean_lift").alias("lift"), "ci_low", "ci_high")
