"""MLflow tracking of a scenario run: a parent run, one nested child run per arm, their metrics, tables and plots.

Layout in MLflow (one experiment, one parent run per scenario run; the names: :mod:`simulator.run.tracking_names`)::

    <scenario>                     parent: scenario params, the answer as its description, lift/<arm>/<metric>, artifacts
    ├── <arm>                      child: arm params, kpi/ guard/ lift/ (the run), daily/ diag/ (step = day)
    └── ...

Only the :class:`mlflow.MlflowClient` API is used (never the fluent ``mlflow.start_run`` state), so
nothing leaks between runs, tests or threads. No Ray import: the driver calls this from one process.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

import polars as pl
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from simulator.run.offline import OfflineOutcome
from simulator.run.plots import plot_dac, plot_expo_reach, plot_exposures_by_age, plot_forest
from simulator.run.replicates import as_comparison
from simulator.run.report import CUPED_SUFFIX, EXPO_PREFIX, finite_or_none, format_comparison_markdown, treatment_rows, undefined_reason
from simulator.run.results import SimulationResult
from simulator.run.tracking_names import (EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, MAX_PARAM_VALUE, NOTE_TAG,  # noqa: F401
                                          _compact, ab_description, daily_name, flatten_params, lift_name, overall_name,
                                          run_url, table_description)

# MLflow's own limits (mlflow.utils.validation), repeated so a batch never trips them.
MAX_TAG_VALUE = 8000
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000

ARM_TAG = "coldsim.arm"
CHILD_TAG_PREFIX = "coldsim.child."
ERROR_TAG = "coldsim.error"
PARENT_TAG = "mlflow.parentRunId"  # what mlflow.start_run(nested=True) sets; the UI nests on it

Scalar = str | int | float


# ---------------------------------------------------------------------------------------------
# The tracker
# ---------------------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _sqlite_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts next to a sqlite db, in ``<db dir>/mlruns/<run id>/artifacts``.

    Without it MLflow's client default is ``./mlruns`` under whatever the cwd happens to be when
    the store is first opened, so a db's artifacts could scatter over several directories.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = unquote(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not db or db == ":memory:":
        return None
    return (Path(db).resolve().parent / "mlruns").as_uri()


def parent_url(tracking_uri: str, run_id: str, ui: str | None = None) -> str:
    """The page of run ``run_id`` in ``mlflow ui`` (default http://127.0.0.1:5000) over ``tracking_uri``."""
    experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    return run_url(experiment_id, run_id, *([ui] if ui else []))


class RunTracker:
    """Records one scenario run in MLflow: a parent run with a nested child run per arm.

    ``start`` (or ``resume`` after a restart), then ``log_day`` once per simulated day, then
    ``finish`` with the metrics module's outputs, or ``fail`` on an error.
    """

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        try:  # MLflow resolves its store here: a bad URI fails before anything is computed
            self.client = MlflowClient(tracking_uri)
        except MlflowException as exc:
            raise ValueError(f"MLflow tracking URI '{tracking_uri}' cannot be used: {exc.message.split('. ')[0]} "
                             "(a database URI such as sqlite:///mlflow.db works, or an MLflow server's http:// URI)"
                             ) from None
        self.parent_run_id: str | None = None
        self.child_run_ids: dict[str, str] = {}
        self.experiment_id: str | None = None
        self.params: dict[str, Scalar] = {}  # the parent's (for its description)
        self.name = ""  # the parent run's
        self._logged_days: dict[str, set[int]] = {}  # per arm: days already logged (a replayed day is not logged twice)

    # -- lifecycle ---------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                raise ValueError(f"MLflow experiment '{self.experiment}' is deleted; restore it or pick another name")
            if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older coldsim: open it on the runs table too
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return exp.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment, artifact_location=_sqlite_artifact_location(self.tracking_uri),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},  # MLflow 3 opens it on the runs table, not GenAI traces
            )
        except MlflowException:  # created concurrently by another process
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    def start(
        self,
        scenario_name: str,
        params: Mapping[str, Scalar],
        arms: list[str],
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Create the parent run and a child run per arm; returns the parent run id.

        ``params`` go to the parent; params under ``arm.<name>.`` (see :func:`flatten_params`)
        also go, without that prefix, to the arm's child run.
        """
        if self.parent_run_id is not None:
            raise RuntimeError(f"this tracker already holds run {self.parent_run_id}")
        if len(set(arms)) != len(arms) or not arms:
            raise ValueError(f"arms must be unique and non-empty, got {arms}")
        exp_id = self._experiment_id()
        self.experiment_id, self.params, self.name = exp_id, dict(params), scenario_name
        tags = dict(tags or {})
        parent = self.client.create_run(exp_id, run_name=scenario_name, tags=tags)
        pid = parent.info.run_id
        self.parent_run_id = pid
        self._log_params(pid, params)
        for arm in arms:
            child = self.client.create_run(
                exp_id, run_name=arm, tags={**tags, PARENT_TAG: pid, ARM_TAG: arm}
            )
            self.child_run_ids[arm] = child.info.run_id
            prefix = f"arm.{arm}."
            self._log_params(child.info.run_id, {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)})
        self.client.log_batch(
            pid, tags=[RunTag(f"{CHILD_TAG_PREFIX}{a}", rid) for a, rid in self.child_run_ids.items()]
        )
        return pid

    def resume(self, parent_run_id: str) -> None:
        """Reattach to an existing parent run and its children, marking them RUNNING again."""
        if self.parent_run_id is not None:
            raise RuntimeError(f"this tracker already holds run {self.parent_run_id}")
        try:
            parent = self.client.get_run(parent_run_id)
        except MlflowException as e:
            raise ValueError(f"no MLflow run '{parent_run_id}' at {self.tracking_uri}: {e.message}") from e
        if parent.info.lifecycle_stage != "active":
            raise ValueError(f"MLflow run '{parent_run_id}' is deleted")
        children = {
            k.removeprefix(CHILD_TAG_PREFIX): v for k, v in parent.data.tags.items() if k.startswith(CHILD_TAG_PREFIX)
        }
        if not children:
            raise ValueError(f"MLflow run '{parent_run_id}' has no '{CHILD_TAG_PREFIX}<arm>' tags: not a coldsim parent run")
        for arm, rid in children.items():
            try:
                self.client.get_run(rid)
            except MlflowException as e:
                raise ValueError(f"child run '{rid}' of arm '{arm}' (parent {parent_run_id}) is missing") from e
        self.parent_run_id, self.child_run_ids = parent_run_id, dict(sorted(children.items()))
        self.experiment_id, self.params = parent.info.experiment_id, dict(parent.data.params)
        for arm, rid in self.child_run_ids.items():  # the days logged before the interruption
            daily = next((k for k in self.client.get_run(rid).data.metrics if k.startswith("daily/")), None)
            self._logged_days[arm] = {m.step for m in self.client.get_metric_history(rid, daily)} if daily else set()
        for rid in self._all_runs():
            self.client.update_run(rid, status="RUNNING")

    def finish(
        self,
        daily: Mapping[str, pl.DataFrame],
        overall: Mapping[str, Mapping[str, float]],
        comparison: pl.DataFrame,
        age: Mapping[str, pl.DataFrame],
        control: str,
        extra_artifacts: Mapping[str, Path] | None = None,
        status: str = "FINISHED",
        ci_level: float = 0.95,
        expo_k: Mapping[str, int] | None = None,
    ) -> None:
        """Log overall metrics, lifts, ExpoReach histories, tables and plots, then end all runs with ``status``.

        Lifts go to the parent as ``lift.<arm>.<metric>`` (``.ci_low``, ``.ci_high``; CUPED ones under
        ``.cuped``), undefined ones (:func:`undefined_reason`) not at all. Each arm's daily
        ``expo_reach_*`` values go to its child run with ``step = day`` for the days :meth:`log_day`
        did not log (derived thresholds are known only after the run). ``expo_k`` (metric name ->
        resolved K) becomes parent params ``expo_k.<name>``. ``extra_artifacts`` maps an artifact
        path in the parent run (``"config/scenario.json"``) to a local file or directory.
        """
        pid = self._require_started()
        if not RunStatus.is_terminated(RunStatus.from_string(status)):
            raise ValueError(f"status must be a terminal MLflow status (FINISHED, FAILED, KILLED), got {status!r}")
        ts = _now_ms()
        for arm, values in overall.items():
            self._log_metrics(self._child(arm), [Metric(overall_name(k), float(v), ts, 0) for k, v in values.items()
                                                 if v is not None])
        lifts, per_arm = [], {}
        for row in treatment_rows(comparison, control):
            for suffix in ("", CUPED_SUFFIX):
                if undefined_reason(row, suffix) is not None:
                    continue
                for col, bound in (("lift", None), ("ci_low", "ci_low"), ("ci_high", "ci_high")):
                    value = finite_or_none(row.get(f"{col}{suffix}"))
                    if value is not None:
                        cuped = suffix == CUPED_SUFFIX
                        lifts.append(Metric(lift_name(row["metric"], cuped, bound, arm=row["arm"]), value, ts, 0))
                        per_arm.setdefault(row["arm"], []).append(Metric(lift_name(row["metric"], cuped, bound), value,
                                                                         ts, 0))
        self._log_metrics(pid, lifts)
        for arm, metrics in per_arm.items():  # each treatment arm's child run: its lifts, under the same names
            if arm in self.child_run_ids:
                self._log_metrics(self._child(arm), metrics)
        self._log_params(pid, {f"expo_k.{name}": int(k) for name, k in (expo_k or {}).items()})
        self._log_expo_history(daily)

        with tempfile.TemporaryDirectory(prefix="coldsim-artifacts-") as tmp:
            root = Path(tmp)
            comparison.write_csv(root / "comparison.csv")
            (root / "comparison.md").write_text(format_comparison_markdown(comparison, control, ci_level, expo_k))
            for arm, df in daily.items():
                df.write_csv(root / f"daily_{arm}.csv")
            plot_forest(comparison, control, root / "plots" / "forest.png", ci_level, expo_k)
            plot_expo_reach(daily, control, root / "plots" / "expo_reach.png", expo_k)
            plot_dac(daily, control, root / "plots" / "dac.png")
            plot_exposures_by_age(age, control, root / "plots" / "exposures_by_age.png")
            for dest, src in (extra_artifacts or {}).items():
                target = root / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                if Path(src).is_dir():
                    shutil.copytree(src, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, target)
            self.client.log_artifacts(pid, str(root))
        self._terminate(status)

    def finish_tables(self, per_arm: Mapping[str, Mapping[str, float]], parent: Mapping[str, float],
                      tables: Mapping[str, str], plots: Mapping[str, Path] | None = None, status: str = "FINISHED") -> None:
        """End an offline-protocol run: metrics per arm (child runs), summary metrics and text tables
        (``{"table.md": text}``) plus plot files on the parent, then terminate every run."""
        pid = self._require_started()
        ts = _now_ms()
        for arm, values in per_arm.items():
            self._log_metrics(self._child(arm), [Metric(k, float(v), ts, 0) for k, v in values.items() if v is not None])
        self._log_metrics(pid, [Metric(k, float(v), ts, 0) for k, v in parent.items() if v is not None])
        with tempfile.TemporaryDirectory(prefix="coldsim-artifacts-") as tmp:
            root = Path(tmp)
            for name, text in tables.items():
                (root / name).write_text(text)
            for name, src in (plots or {}).items():
                (root / "plots").mkdir(exist_ok=True)
                shutil.copy2(src, root / "plots" / name)
            self.client.log_artifacts(pid, str(root))
        self._terminate(status)

    def finish_result(self, result: SimulationResult, extra_artifacts: Mapping[str, Path]) -> None:
        """End an A/B run from its result: the stage timings and exposure count, the ladder's lifts (``ladder.<arm>.
        <metric>``, with ``.ci_low``/``.ci_high``) on the parent, then :meth:`finish`."""
        self.log_parent_metrics({f"time/{stage}_s": seconds for stage, seconds in result.timings.items()}
                                | {"run/simulated_exposures": float(result.events)})
        if result.ladder is not None:
            self.log_parent_metrics({f"ladder/{row['arm']}/{row['metric']}{suffix}": row[column]
                                     for row in result.ladder.iter_rows(named=True)
                                     for suffix, column in (("", "lift"), ("/ci_low", "ci_low"), ("/ci_high", "ci_high"))
                                     if row[column] is not None and row[column] == row[column]})
        self.describe(ab_description(result, self.params, self.experiment_id or "0", self._require_started()))
        self.finish(result.daily, result.overall, result.comparison, result.age, result.scenario.control,
                    extra_artifacts=extra_artifacts, ci_level=result.scenario.metrics.ci_level, expo_k=result.expo_k)

    def finish_offline(self, outcome: OfflineOutcome) -> None:
        """End an offline-protocol run: its per-arm figures, scalar meta, Table 1 (markdown and CSV), extra tables
        and plots (:meth:`finish_tables`)."""
        scalars = {name: value for name, value in outcome.meta.items() if isinstance(value, (int, float))}
        self.describe(table_description(f"{self.name}: the offline protocol's table", outcome.markdown, outcome.summary))
        self.finish_tables(outcome.meta["figures"], scalars,
                           {"table1.md": outcome.markdown, "table1.csv": outcome.table.write_csv(), **outcome.tables},
                           plots=outcome.plots)

    def finish_replicates(self, table: pl.DataFrame, markdown: str, replicates: int, control: str,
                          ci_level: float) -> None:
        """End a replicates run: per arm the pooled lift as ``lift/<metric>`` (the mean over seeds; ``/ci_low``,
        ``/ci_high``: the t interval; ``/sign_agreement``), the replicate count, the table (markdown and CSV), its
        forest plot, and the table as the run's description."""
        per_arm: dict[str, dict[str, float]] = {arm: {} for arm in sorted(set(table["arm"].to_list()))}
        for row in table.iter_rows(named=True):
            for name, bound in (("mean_lift", None), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                                ("sign_agreement", "sign_agreement")):
                if finite_or_none(row[name]) is not None:
                    per_arm[row["arm"]][lift_name(row["metric"], bound=bound)] = row[name]
        self.describe(table_description(f"Lifts over control pooled over {replicates} seeds", markdown))
        lifts_as_text = pl.col("lifts").list.eval(pl.element().round(6)).cast(pl.List(pl.String)).list.join(" ")
        with tempfile.TemporaryDirectory(prefix="coldsim-replicates-") as tmp:
            forest = plot_forest(as_comparison(table), control, Path(tmp) / "forest.png", ci_level)
            self.finish_tables(per_arm, {"replicates": float(replicates)},
                               {"replicates.md": markdown, "replicates.csv": table.with_columns(lifts_as_text).write_csv()},
                               plots={"forest.png": forest} if forest is not None else None)

    def describe(self, markdown: str) -> None:
        """The parent run's description (what its page shows first)."""
        self.client.set_tag(self._require_started(), NOTE_TAG, markdown[:MAX_TAG_VALUE])

    def url(self, ui: str | None = None) -> str:
        """The parent run's page in ``mlflow ui``."""
        return run_url(self.experiment_id or "0", self._require_started(), *([ui] if ui else []))

    def fail(self, message: str) -> None:
        """End all runs as FAILED with the message in a ``coldsim.error`` tag; a no-op before start."""
        if self.parent_run_id is None:
            return
        tag = [RunTag(ERROR_TAG, str(message)[:MAX_TAG_VALUE])]
        for rid in self._all_runs():
            self.client.log_batch(rid, tags=tag)
        self._terminate("FAILED")

    # -- metrics -----------------------------------------------------------------------------

    def log_day(self, day: int, per_arm: Mapping[str, Mapping[str, float]]) -> None:
        """Log one day's metrics to each arm's child run with ``step=day`` (one batch per arm)."""
        self._require_started()
        ts = _now_ms()
        for arm, values in per_arm.items():
            rid = self._child(arm)
            logged = self._logged_days.setdefault(arm, set())
            if int(day) in logged:  # a day played again after a recovery or a resume: the same values
                continue
            self._log_metrics(rid, [Metric(daily_name(k), float(v), ts, int(day)) for k, v in values.items()
                                    if v is not None])
            logged.add(int(day))

    def log_parent_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics (e.g. driver timings) to the parent run; ``step=None`` logs at step 0."""
        pid = self._require_started()
        ts = _now_ms()
        self._log_metrics(pid, [Metric(k, float(v), ts, int(step or 0)) for k, v in metrics.items() if v is not None])

    # -- helpers -----------------------------------------------------------------------------

    def _require_started(self) -> str:
        if self.parent_run_id is None:
            raise RuntimeError("RunTracker: call start() or resume() first")
        return self.parent_run_id

    def _child(self, arm: str) -> str:
        try:
            return self.child_run_ids[arm]
        except KeyError:
            raise KeyError(f"arm '{arm}' has no child run; known arms: {sorted(self.child_run_ids)}") from None

    def _all_runs(self) -> list[str]:
        return [*self.child_run_ids.values(), self._require_started()]

    def _log_expo_history(self, daily: Mapping[str, pl.DataFrame]) -> None:
        """Each arm's daily ``expo_reach_*`` values as metric history (step = day), skipping days already logged."""
        ts = _now_ms()
        for arm, df in daily.items():
            rid = self._child(arm)
            for col in (c for c in df.columns if c.startswith(EXPO_PREFIX)):
                logged = {m.step for m in self.client.get_metric_history(rid, daily_name(col))}
                self._log_metrics(rid, [Metric(daily_name(col), value, ts, int(day))
                                        for day, v in df.select("day", col).iter_rows()
                                        if int(day) not in logged and (value := finite_or_none(v)) is not None])

    def _log_params(self, run_id: str, params: Mapping[str, Scalar]) -> None:
        items = [Param(k, _compact(v)) for k, v in params.items()]
        for chunk in _chunks(items, _MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)

    def _log_metrics(self, run_id: str, metrics: list[Metric]) -> None:
        for chunk in _chunks(metrics, _MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def _terminate(self, status: str) -> None:
        for rid in self._all_runs():  # children first, the parent last
            self.client.set_terminated(rid, status=status)
