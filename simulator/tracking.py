"""MLflow tracking of a scenario run: a parent run, one nested child run per arm, tables and plots.

Layout in MLflow (one experiment, one parent run per scenario run)::

    <scenario>                     parent: scenario params, lift.<arm>.<metric> metrics, artifacts
    ├── <arm>                      child: arm params, per-day metrics (step = day), overall.<metric>
    └── ...

Only the :class:`mlflow.MlflowClient` API is used (never the fluent ``mlflow.start_run`` state), so
nothing leaks between runs, tests or threads. No Ray import: the driver calls this from one process.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import polars as pl
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

if TYPE_CHECKING:
    from rich.table import Table

# MLflow's own limits (mlflow.utils.validation), repeated so a batch never trips them.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000

ARM_TAG = "coldsim.arm"
CHILD_TAG_PREFIX = "coldsim.child."
ERROR_TAG = "coldsim.error"
PARENT_TAG = "mlflow.parentRunId"  # what mlflow.start_run(nested=True) sets; the UI nests on it

Scalar = str | int | float


# ---------------------------------------------------------------------------------------------
# Params
# ---------------------------------------------------------------------------------------------


def _compact(value: Any) -> str:
    """A param value as a short string: JSON for lists and dicts, ``str`` otherwise, truncated."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = str(value)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def flatten_params(
    model: BaseModel,
    prefix: str = "",
    named_lists: Mapping[str, str] | None = None,
    exclude: Collection[str] = (),
) -> dict[str, str]:
    """Flatten a nested pydantic config into MLflow params with dotted keys.

    Nested models and dicts of models recurse (``world.creator_elasticity``); lists of models
    named in ``named_lists`` are keyed by each item's ``name`` under the mapped prefix (default:
    a Scenario's ``arms`` become ``arm.<name>.*``); other lists and dicts become compact JSON.
    Values are truncated to MLflow's 6000-character limit. ``exclude`` drops top-level fields.
    """
    named_lists = {"arms": "arm"} if named_lists is None else named_lists
    out: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{key}.{name}" if key else name)
        elif isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
            for k, v in value.items():
                walk(v, f"{key}.{k}")
        else:
            out[key] = _compact(value)

    for name in type(model).model_fields:
        if name in exclude:
            continue
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if (
            name in named_lists
            and isinstance(value, (list, tuple))
            and all(isinstance(v, BaseModel) and hasattr(v, "name") for v in value)
        ):
            for item in value:
                walk(item, f"{prefix}{named_lists[name]}.{item.name}")
        else:
            walk(value, key)
    return out


# ---------------------------------------------------------------------------------------------
# Comparison tables
# ---------------------------------------------------------------------------------------------


def _fmt_value(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.1f}"
    return f"{v:.4g}"


def _fmt_pct(v: float | None, minus: str = "-") -> str:
    if v is None or math.isnan(v) or math.isinf(v):
        return "n/a"
    return f"{v * 100:+.1f}%".replace("-", minus)


def _ci_sign(lo: float | None, hi: float | None) -> int:
    """+1 if the CI lies above 0, -1 if below, 0 if it straddles 0 or is missing."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _treatment_rows(comparison: pl.DataFrame, control: str) -> list[dict[str, Any]]:
    return [r for r in comparison.iter_rows(named=True) if r["arm"] != control]


def format_comparison_markdown(comparison: pl.DataFrame, control: str, ci_level: float = 0.95) -> str:
    """The comparison as a markdown table: metric | control | arm | value | lift % | CI."""
    level = f"{ci_level * 100:g}% CI"
    lines = [
        f"Control arm: `{control}`. Lift and CI are relative to control; CI from a bootstrap over the randomisation units (creators for creator-side metrics, users for user-side ones).",
        "",
        f"| metric | control | arm | value | lift % | {level} |",
        "|---|---:|---|---:|---:|---|",
    ]
    for r in _treatment_rows(comparison, control):
        ci = f"[{_fmt_pct(r['ci_low'])}, {_fmt_pct(r['ci_high'])}]"
        sig = {1: " ▲", -1: " ▼", 0: ""}[_ci_sign(r["ci_low"], r["ci_high"])]
        lines.append(
            f"| {r['metric']} | {_fmt_value(r['control_value'])} | {r['arm']} | {_fmt_value(r['arm_value'])} "
            f"| {_fmt_pct(r['lift'])}{sig} | {ci} |"
        )
    return "\n".join(lines) + "\n"


def format_comparison_rich(comparison: pl.DataFrame, control: str, ci_level: float = 0.95) -> Table:
    """The comparison as a rich table; a lift is green when its CI lies above 0, red when below."""
    from rich.table import Table

    table = Table(title=f"Lift over control '{control}' ({ci_level * 100:g}% CI)")
    table.add_column("metric")
    table.add_column("arm")
    table.add_column("control", justify="right")
    table.add_column("value", justify="right")
    table.add_column("lift [CI]", justify="right")
    minus = "\u2212"
    for r in _treatment_rows(comparison, control):
        text = f"{_fmt_pct(r['lift'], minus)} [{_fmt_pct(r['ci_low'], minus)}, {_fmt_pct(r['ci_high'], minus)}]"
        style = {1: "green", -1: "red", 0: ""}[_ci_sign(r["ci_low"], r["ci_high"])]
        table.add_row(
            r["metric"],
            r["arm"],
            _fmt_value(r["control_value"]),
            _fmt_value(r["arm_value"]),
            f"[{style}]{text}[/{style}]" if style else text,
        )
    return table


# ---------------------------------------------------------------------------------------------
# Plots (object-oriented matplotlib on an Agg canvas: no pyplot, no global backend change)
# ---------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _arm_style(arm: str, control: str) -> dict[str, Any]:
    return {"color": "black", "linestyle": "--", "linewidth": 1.8} if arm == control else {"linewidth": 1.6}


def _ordered_arms(arms: Collection[str], control: str) -> list[str]:
    return ([control] if control in arms else []) + [a for a in arms if a != control]


def _expo_columns(daily: Mapping[str, pl.DataFrame]) -> list[str]:
    cols = {c for df in daily.values() for c in df.columns if c.startswith("expo_reach_")}

    def k_of(c: str) -> tuple[float, str]:
        try:
            return float(c.removeprefix("expo_reach_")), c
        except ValueError:
            return math.inf, c

    return sorted(cols, key=k_of)


def plot_expo_reach(daily: Mapping[str, pl.DataFrame], control: str, path: Path) -> Path | None:
    """ExpoReach-K over days, one subplot per ``expo_reach_<K>`` column, one line per arm.

    Returns ``None`` (and writes nothing) when no arm has such a column.
    """
    cols = _expo_columns(daily)
    if not cols:
        return None
    fig = _new_figure(4.2 * len(cols), 3.6)
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    for ax, col in zip(axes, cols, strict=True):
        k = col.removeprefix("expo_reach_")
        for arm in _ordered_arms(daily, control):
            df = daily[arm]
            if col in df.columns:
                ax.plot(df["day"].to_numpy(), df[col].to_numpy(), marker="o", markersize=3, label=arm,
                        **_arm_style(arm, control))
        ax.set_title(f"ExpoReach-{k}")
        ax.set_xlabel("day")
        ax.set_ylabel(f"new items with \u2265 {k} exposures")
        ax.grid(alpha=0.3)
    axes[0].legend(title="arm")
    fig.suptitle("Items uploaded in the run that reached K exposures")
    return _save(fig, path)


def plot_dac(daily: Mapping[str, pl.DataFrame], control: str, path: Path) -> Path | None:
    """Daily active creators per day, one line per arm; ``None`` when no arm has a ``dac`` column."""
    arms = [a for a in _ordered_arms(daily, control) if "dac" in daily[a].columns]
    if not arms:
        return None
    fig = _new_figure(6.4, 3.8)
    ax = fig.subplots()
    for arm in arms:
        df = daily[arm]
        ax.plot(df["day"].to_numpy(), df["dac"].to_numpy(), marker="o", markersize=3, label=arm,
                **_arm_style(arm, control))
    ax.set_title("DAC: creators uploading at least one item")
    ax.set_xlabel("day")
    ax.set_ylabel("daily active creators")
    ax.grid(alpha=0.3)
    ax.legend(title="arm")
    return _save(fig, path)


def plot_exposures_by_age(age: Mapping[str, pl.DataFrame], control: str, path: Path) -> Path | None:
    """Grouped bars of each arm's share of exposures per item-age bin.

    Shares rather than counts, so arms with different traffic shares compare; the bins keep the
    order in which they first appear. ``None`` when there is nothing to plot.
    """
    import numpy as np

    arms = [a for a in _ordered_arms(age, control) if age[a].height]
    if not arms:
        return None
    bins: list[str] = []
    for a in arms:
        for b in age[a]["age_bin"].cast(pl.Utf8).to_list():
            if b not in bins:
                bins.append(b)
    x = np.arange(len(bins))
    width = 0.8 / len(arms)
    fig = _new_figure(max(6.4, 0.9 * len(bins) * max(1, len(arms) / 2)), 3.8)
    ax = fig.subplots()
    for i, arm in enumerate(arms):
        df = age[arm]
        counts = dict(zip(df["age_bin"].cast(pl.Utf8).to_list(), df["exposures"].to_list(), strict=True))
        total = sum(counts.values()) or 1
        share = [counts.get(b, 0) / total for b in bins]
        style = {"color": "0.25", "hatch": "//"} if arm == control else {}
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, share, width, label=f"{arm} (n={total:,})", **style)
    ax.set_xticks(x, bins)
    ax.set_xlabel("item age at exposure")
    ax.set_ylabel("share of the arm's exposures")
    ax.set_title("Exposures by item age")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="arm")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


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


class RunTracker:
    """Records one scenario run in MLflow: a parent run with a nested child run per arm.

    ``start`` (or ``resume`` after a restart), then ``log_day`` once per simulated day, then
    ``finish`` with the metrics module's outputs, or ``fail`` on an error.
    """

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri)
        self.parent_run_id: str | None = None
        self.child_run_ids: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                raise ValueError(f"MLflow experiment '{self.experiment}' is deleted; restore it or pick another name")
            return exp.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment, artifact_location=_sqlite_artifact_location(self.tracking_uri)
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
    ) -> None:
        """Log overall metrics, lifts, tables and plots, then end all runs with ``status``.

        ``extra_artifacts`` maps an artifact path in the parent run (``"config/scenario.json"``)
        to a local file or directory.
        """
        pid = self._require_started()
        if not RunStatus.is_terminated(RunStatus.from_string(status)):
            raise ValueError(f"status must be a terminal MLflow status (FINISHED, FAILED, KILLED), got {status!r}")
        ts = _now_ms()
        for arm, values in overall.items():
            self._log_metrics(self._child(arm), [Metric(f"overall.{k}", float(v), ts, 0) for k, v in values.items() if v is not None])
        lifts = []
        for r in _treatment_rows(comparison, control):
            for suffix, col in (("", "lift"), (".ci_low", "ci_low"), (".ci_high", "ci_high")):
                if r[col] is not None:
                    lifts.append(Metric(f"lift.{r['arm']}.{r['metric']}{suffix}", float(r[col]), ts, 0))
        self._log_metrics(pid, lifts)

        with tempfile.TemporaryDirectory(prefix="coldsim-artifacts-") as tmp:
            root = Path(tmp)
            comparison.write_csv(root / "comparison.csv")
            (root / "comparison.md").write_text(format_comparison_markdown(comparison, control, ci_level))
            for arm, df in daily.items():
                df.write_csv(root / f"daily_{arm}.csv")
            plot_expo_reach(daily, control, root / "plots" / "expo_reach.png")
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
            self._log_metrics(rid, [Metric(k, float(v), ts, int(day)) for k, v in values.items() if v is not None])

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
