"""A/A calibration: run a scenario of identical arms over seeds and measure how often its CIs exclude 0.

In an A/A run every lift is noise, so a calibrated read-out flags about ``1 - ci_level`` of its
(arm, metric) cells. :func:`aa_comparisons` runs the simulation in-process for each seed (no
checkpoints, no MLflow) and stacks the comparison frames; :func:`false_positive_rate` reads them.
Used by tests/simulator/test_aa.py and benchmarks/bench_aa.py; figures in docs/metrics.md.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import polars as pl

from simulator.core.config import MetricsConfig, Scenario


def aa_comparisons(scenario: Scenario, seeds: list[int], allow_injected: bool = False,
                   read_outs: dict[str, MetricsConfig] | None = None, processes: int = 1,
                   **train_overrides) -> pl.DataFrame:
    """The comparison frame of ``scenario`` for every seed, stacked with ``seed`` and ``read_out`` columns.

    ``train_overrides`` replace fields of ``scenario.train`` (e.g. ``base_models="per_arm"``);
    ``allow_injected`` lets the arms differ in ``injected_upload_factor`` only (a known effect to detect).
    ``read_outs`` (name -> metrics config) read each run out again under other configs, nothing replayed: their
    rows carry that name in a ``read_out`` column, the scenario's own ``"scenario"``.
    ``processes``: the seeds run in that many new processes at a time (spawned: a process that holds threads, as
    one that ran Ray does, cannot safely fork). A seed's run is one process's whatever process plays it (the
    simulation is seeded and its torch on one thread), so the frame is the same; the seeds keep their order."""
    if read_outs and "scenario" in read_outs:
        raise ValueError("read_outs may not be named 'scenario': that name is the scenario's own read-out")
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    ignore = {"name", "injected_upload_factor"} if allow_injected else {"name"}
    if len({a.model_dump_json(exclude=ignore) for a in scenario.arms}) != 1:
        raise ValueError(f"scenario '{scenario.name}' is not an A/A scenario: its arms differ in more than their names")
    calls = [(scenario, seed, read_outs or {}, train_overrides) for seed in seeds]
    if processes > 1 and len(seeds) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(processes, len(seeds)), mp_context=context) as pool:
            per_seed = list(pool.map(_seed_frames, *zip(*calls)))
    else:
        per_seed = [_seed_frames(*call) for call in calls]
    return pl.concat([frame for frames in per_seed for frame in frames], how="diagonal_relaxed")


def _seed_frames(scenario: Scenario, seed: int, read_outs: dict[str, MetricsConfig],
                 train_overrides: dict) -> list[pl.DataFrame]:
    """One seed's run, in-process, read out as the scenario says and under each of ``read_outs``."""
    from simulator.run.loop import Simulation
    from simulator.run.runtime import LocalRuntime
    from simulator.sources.synthetic import generate_synthetic

    # a new randomisation per seed: with a fixed salt every seed would share one draw of the buckets, and
    # the rate would be conditional on how lucky that draw was
    sc = scenario.with_overrides(seed=seed)._revalidated({"salt": f"{scenario.salt}-{seed}"})
    if train_overrides:
        sc = sc._revalidated({"train": sc.train.model_copy(update=train_overrides)})
    log = generate_synthetic(sc.synthetic, sc.seed)
    with tempfile.TemporaryDirectory(prefix="coldsim-aa-") as tmp:
        sim = Simulation(sc, log, LocalRuntime, tmp, progress=False, checkpoints=False)
        comparisons = {"scenario": sim.run().comparison}
        for name, metrics in read_outs.items():
            comparisons[name] = sim.results(metrics).comparison
    return [comp.with_columns(pl.lit(seed).alias("seed"), pl.lit(name).alias("read_out"))
            for name, comp in comparisons.items()]


@dataclass(frozen=True)
class FalsePositives:
    """How many defined (arm, metric, seed) cells exclude 0, overall and per metric."""

    rate: float  # flagged / defined
    flagged: int
    defined: int
    undefined: int
    per_metric: pl.DataFrame  # metric, defined, flagged, rate


def false_positive_rate(comparison: pl.DataFrame, cuped: bool = False) -> FalsePositives:
    """Read the ``significant`` column (``significant_cuped`` with ``cuped``) of defined cells (finite lift)."""
    lift, flag = ("lift_cuped", "significant_cuped") if cuped else ("lift", "significant")
    cells = comparison.filter(pl.col(lift).is_not_nan() & pl.col(lift).is_not_null())
    per_metric = (cells.group_by("metric", maintain_order=True)
                  .agg(defined=pl.len(), flagged=pl.col(flag).sum())
                  .with_columns(rate=pl.col("flagged") / pl.col("defined")))
    n_flagged = int(cells[flag].sum()) if cells.height else 0
    return FalsePositives(rate=n_flagged / cells.height if cells.height else float("nan"), flagged=n_flagged,
                          defined=cells.height, undefined=comparison.height - cells.height, per_metric=per_metric)
