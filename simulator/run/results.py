"""What a run measured: each arm's record in the driver (``ArmRun``), the end-of-run metrics and ``SimulationResult``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from simulator.core.config import Scenario
from simulator.core.schema import EXPOSURES_SCHEMA, UPLOADS_SCHEMA, VISITS_SCHEMA, Log
from simulator.diagnostics import summarise
from simulator.metrics.comparison import compare_arms, ladder_comparison
from simulator.metrics.daily import daily_metrics, early_exposure, exposures_by_age, overall_metrics
from simulator.metrics.definitions import ArmData, expo_thresholds
from simulator.metrics.expo_reach import resolve_expo_k
from simulator.world.creators import CreatorDynamics
from simulator.world.platform import creator_covariates


def _concat(frames: list[pl.DataFrame], schema: pa.Schema) -> pl.DataFrame:
    return pl.concat(frames) if frames else pl.from_arrow(schema.empty_table())


@dataclass
class ArmRun:
    """The driver's view of one arm: its bucket, creator dynamics and what happened so far."""

    name: str
    index: int
    creators: np.ndarray
    users: np.ndarray
    dynamics: CreatorDynamics
    exposures: list[pl.DataFrame] = field(default_factory=list)
    uploads: list[pl.DataFrame] = field(default_factory=list)
    visits: list[pl.DataFrame] = field(default_factory=list)
    ats: list[np.ndarray] = field(default_factory=list)

    def exposures_of_day(self, day: int) -> list[pl.DataFrame]:
        return [frame for frame in self.exposures if frame.height and int(frame["day"][0]) == day]

    def data(self, share: float, covariates: tuple[np.ndarray, np.ndarray] | None = None) -> ArmData:
        """What the arm produced so far; ``covariates`` = (creator ids, (C, p) matrix) of
        :func:`~simulator.world.platform.creator_covariates`, aligned here to the arm's creators (0 for unknown ones)."""
        own_covariates = None
        if covariates is not None:
            creator_ids, matrix = covariates
            position = np.minimum(np.searchsorted(creator_ids, self.creators), max(len(creator_ids) - 1, 0))
            found = (creator_ids[position] == self.creators) if len(creator_ids) else np.zeros(len(self.creators), bool)
            own_covariates = np.zeros((len(self.creators), matrix.shape[1]))
            own_covariates[found] = matrix[position[found]]
        return ArmData(name=self.name, exposures=_concat(self.exposures, EXPOSURES_SCHEMA),
                       uploads=_concat(self.uploads, UPLOADS_SCHEMA), visits=_concat(self.visits, VISITS_SCHEMA),
                       creators=self.creators, users=self.users, share=share, creator_covariates=own_covariates)


@dataclass
class SimulationResult:
    """What a finished run measured: per-arm daily and overall metrics, the lifts over control, and how long it took."""

    scenario: Scenario
    days: int
    t0: int
    daily: dict[str, pl.DataFrame]
    overall: dict[str, dict[str, float]]
    comparison: pl.DataFrame
    age: dict[str, pl.DataFrame]
    timings: dict[str, float]  # seconds per stage of the driver (Simulation.timings)
    events: int
    run_dir: Path | str  # a local directory, or the URI of the run's storage
    diagnostics: dict[str, pl.DataFrame] = field(default_factory=dict)  # per arm, per day: strategy diagnostics, train.*
    ladder: pl.DataFrame | None = None  # each ladder arm over the one before it (scenario.ladder)
    expo_k: dict[str, int] = field(default_factory=dict)  # ExpoReach metric name -> the K it used (derived or fixed)


def measure(scenario: Scenario, log: Log, arms: list[ArmRun], t0: int, days: int,
            diagnostics: dict[str, list[dict[str, float]]], events: int, run_dir: Path | str) -> SimulationResult:
    """Every metric of the arms over ``days`` (:mod:`simulator.metrics`): daily and overall values, ATS, early
    exposure and the summarised strategy diagnostics per arm, the lifts over control and the ladder. The
    result's ``timings`` are left empty for the driver, which times this too."""
    specs = {spec.name: spec for spec in scenario.arms}
    covariates = creator_covariates(log, t0)
    data = {arm.name: arm.data(specs[arm.name].share, covariates) for arm in arms}
    targets = [spec.dualrec.targets for spec in scenario.arms if spec.dualrec is not None]
    # derived K: from all arms' items, above the creator-side push (docs/metrics.md); a fixed expo_k is itself
    metrics = resolve_expo_k(list(data.values()), scenario.metrics, t0, days, k_min=max(targets, default=0) + 1)
    daily = {name: daily_metrics(arm, metrics, t0, days) for name, arm in data.items()}
    overall = {name: overall_metrics(arm, metrics, t0, days) for name, arm in data.items()}
    for arm in arms:
        latency = np.concatenate(arm.ats) if arm.ats else np.empty(0)
        if len(latency):
            overall[arm.name]["ats_model_p50_min"] = float(np.percentile(latency, 50) / 60)
            overall[arm.name]["ats_model_p95_min"] = float(np.percentile(latency, 95) / 60)
    comparison = compare_arms(data, scenario.control, metrics, t0, days, scenario.seed)
    ladder = ladder_comparison(data, scenario.ladder, metrics, t0, days, scenario.seed) if scenario.ladder else None
    age = {name: exposures_by_age(arm, t0) for name, arm in data.items()}
    for name, arm in data.items():
        overall[name].update(early_exposure(arm, t0, days))
    tables = {name: pl.DataFrame(rows, infer_schema_length=None) for name, rows in diagnostics.items() if rows}
    for name, table in tables.items():
        overall[name].update({column: value for column, value in summarise(table).items()
                              if not column.startswith("train.") or ".auc." in column})
    return SimulationResult(scenario=scenario, days=days, t0=t0, daily=daily, overall=overall, comparison=comparison,
                            age=age, timings={}, events=events, run_dir=run_dir, diagnostics=tables, ladder=ladder,
                            expo_k=expo_thresholds(metrics))
