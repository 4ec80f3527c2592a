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

READ_ORDER: tuple[str, ...] = (
    "dac",
    "publications",
    "cold_interactions",
    "interactions_per_exposure",
    "engaged_users",
    "dau",
    "view_rate",
    "share_rate",
    "exposures",
    "interactions",
    "new_item_coverage",
)
"""How a read-out lists metrics: ``expo_reach_*`` (ascending K, then ascending quantile), these, then the rest."""

EXPO_PREFIX = "expo_reach_"
CUPED_SUFFIX = "_cuped"  # lift_cuped, ci_low_cuped, ci_high_cuped, significant_cuped
_CI_ZERO_WIDTH = 1e-12


def metric_sort_key(metric: str) -> tuple[int, int, float, str]:
    """Sort key of a metric name in the read-out order (:data:`READ_ORDER`).

    ``expo_reach_<K>`` sort by K, then ``expo_reach_q<pct>`` by quantile; metrics not named in the
    order all share the last key, so a stable sort keeps them in their input order.
    """
    if metric.startswith(EXPO_PREFIX):
        suffix = metric.removeprefix(EXPO_PREFIX)
        if suffix.isdigit():
            return 0, 0, float(suffix), ""
        try:
            return 0, 1, float(suffix.removeprefix("q")), ""
        except ValueError:
            return 0, 2, 0.0, suffix
    if metric in READ_ORDER:
        return 1 + READ_ORDER.index(metric), 0, 0.0, ""
    return 1 + len(READ_ORDER), 0, 0.0, ""


def metric_label(metric: str, expo_k: Mapping[str, int] | None = None) -> str:
    """The metric's name, with its threshold when ``expo_k`` has one the name does not say: ``expo_reach_q90 (K=37)``."""
    if not expo_k or metric not in expo_k or metric == f"{EXPO_PREFIX}{expo_k[metric]}":
        return metric
    return f"{metric} (K={expo_k[metric]})"


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


def _finite(v: Any) -> float | None:
    """``v`` as a float, or ``None`` when it is missing, NaN or infinite."""
    return float(v) if v is not None and math.isfinite(v) else None


def _ci_sign(lo: float | None, hi: float | None) -> int:
    """+1 if the CI lies above 0, -1 if below, 0 if it straddles 0 or is missing."""
    lo, hi = _finite(lo), _finite(hi)
    if lo is None or hi is None:
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def undefined_reason(row: Mapping[str, Any], suffix: str = "") -> str | None:
    """Why a comparison row's lift (``suffix="_cuped"``: its CUPED lift) has no reading; ``None`` when it has one.

    A lift is undefined when it is missing or not finite, when the control or the treatment value is 0
    (a division by 0, or a lift of -100% whose bootstrap collapses with it) or when its CI has zero
    width (a degenerate bootstrap, e.g. ``[-100%, -100%]``). Rows without ``control_value``/``arm_value``
    (pooled replicates) are judged on the lift and CI alone.
    """
    if row.get("control_value") == 0:
        return "control is 0"
    if row.get("arm_value") == 0:
        return "treatment is 0"
    if _finite(row.get(f"lift{suffix}")) is None:
        return "no lift"
    lo, hi = _finite(row.get(f"ci_low{suffix}")), _finite(row.get(f"ci_high{suffix}"))
    if lo is not None and hi is not None and hi - lo <= _CI_ZERO_WIDTH:
        return "degenerate CI"
    return None


def significance(row: Mapping[str, Any], suffix: str = "") -> int:
    """+1 / -1 when the lift is defined and its CI lies above / below 0, else 0.

    When the comparison has a ``significant`` (``significant_cuped``) column, a row it marks False
    is 0 as well.
    """
    if undefined_reason(row, suffix) is not None or row.get(f"significant{suffix}") is False:
        return 0
    return _ci_sign(row.get(f"ci_low{suffix}"), row.get(f"ci_high{suffix}"))


def has_cuped(comparison: pl.DataFrame, control: str) -> bool:
    """Whether the comparison carries CUPED lifts with at least one finite value among the treatment arms."""
    if f"lift{CUPED_SUFFIX}" not in comparison.columns:
        return False
    return any(_finite(r[f"lift{CUPED_SUFFIX}"]) is not None for r in _treatment_rows(comparison, control))


def in_read_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``metric`` and ``arm`` keys grouped by metric in read-out order, then by arm in first-seen order."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    return sorted(rows, key=lambda r: (metric_sort_key(r["metric"]), metrics.index(r["metric"]), arms.index(r["arm"])))


def _treatment_rows(comparison: pl.DataFrame, control: str) -> list[dict[str, Any]]:
    """The rows of the treatment arms, in read order."""
    return in_read_order([r for r in comparison.iter_rows(named=True) if r["arm"] != control])


def _lift_parts(row: Mapping[str, Any], suffix: str = "", minus: str = "-") -> tuple[str, str, int]:
    """A lift as ``(lift text, CI text, significance)``; an undefined one reads ``("undefined", "(<reason>)", 0)``."""
    reason = undefined_reason(row, suffix)
    if reason is not None:
        return "undefined", f"({reason})", 0
    ci = f"[{_fmt_pct(row.get(f'ci_low{suffix}'), minus)}, {_fmt_pct(row.get(f'ci_high{suffix}'), minus)}]"
    return _fmt_pct(row[f"lift{suffix}"], minus), ci, significance(row, suffix)


def format_comparison_markdown(
    comparison: pl.DataFrame, control: str, ci_level: float = 0.95, expo_k: Mapping[str, int] | None = None
) -> str:
    """The comparison as a markdown table: metric | control | arm | value | lift % | CI [| CUPED lift % | CUPED CI].

    Rows are grouped by metric in read-out order (:func:`metric_sort_key`), then by arm; ``expo_k``
    (resolved thresholds, metric name -> K) adds the K to derived ExpoReach names. The CUPED columns
    appear when the comparison has finite CUPED lifts.
    """
    level = f"{ci_level * 100:g}% CI"
    cuped = has_cuped(comparison, control)
    lines = [
        f"Control arm: `{control}`. Lift and CI are relative to control; CI from a bootstrap over the randomisation "
        "units (creators for creator-side metrics, users for user-side ones). ▲/▼: the CI lies above/below 0. "
        "`undefined`: no lift to read (a zero control or treatment value, or a degenerate bootstrap)."
        + (" CUPED: the variance-reduced lift and CI (n/a where CUPED does not apply)." if cuped else ""),
        "",
        f"| metric | control | arm | value | lift % | {level} |" + (f" CUPED lift % | CUPED {level} |" if cuped else ""),
        "|---|---:|---|---:|---:|---|" + ("---:|---|" if cuped else ""),
    ]
    arrow = {1: " ▲", -1: " ▼", 0: ""}
    for r in _treatment_rows(comparison, control):
        lift, ci, sign = _lift_parts(r)
        line = (f"| {metric_label(r['metric'], expo_k)} | {_fmt_value(r['control_value'])} | {r['arm']} "
                f"| {_fmt_value(r['arm_value'])} | {lift}{arrow[sign]} | {ci} |")
        if cuped:
            if _finite(r.get(f"lift{CUPED_SUFFIX}")) is None:
                line += " n/a | |"
            else:
                c_lift, c_ci, c_sign = _lift_parts(r, CUPED_SUFFIX)
                line += f" {c_lift}{arrow[c_sign]} | {c_ci} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def format_comparison_rich(
    comparison: pl.DataFrame, control: str, ci_level: float = 0.95, expo_k: Mapping[str, int] | None = None
) -> Table:
    """The comparison as a rich table for an 80-column terminal: a lift is green when its CI lies above 0, red below.

    One group per metric in read-out order: the metric's row holds the control's value, one row per
    treatment arm below it. An undefined lift reads ``undefined`` with its reason, never a collapsed
    CI. A ``CUPED lift [CI]`` column appears when the comparison has finite CUPED lifts; the lift
    cells then put the CI on a second line so both columns fit.
    """
    from rich import box
    from rich.table import Table

    cuped = has_cuped(comparison, control)
    table = Table(title=f"Lift over control '{control}' ({ci_level * 100:g}% CI)", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
    table.add_column("metric / arm")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column(f"lift [{ci_level * 100:g}% CI]", justify="right")
    if cuped:
        table.add_column("CUPED lift [CI]", justify="right")
    minus = "\u2212"
    sep = "\n" if cuped else " "

    def cell(r: Mapping[str, Any], suffix: str) -> str:
        if suffix and _finite(r.get(f"lift{suffix}")) is None:
            return "[dim]n/a[/dim]"
        lift, ci, sign = _lift_parts(r, suffix, minus)
        if lift == "undefined":
            return f"[dim]{lift}{sep}{ci}[/dim]"
        style = {1: "green", -1: "red", 0: ""}[sign]
        return f"[{style}]{lift}{sep}{ci}[/{style}]" if style else f"{lift}{sep}{ci}"

    metric = None
    for r in _treatment_rows(comparison, control):
        if r["metric"] != metric:
            metric = r["metric"]
            header = [f"[bold]{metric_label(metric, expo_k)}[/bold]", _fmt_value(r["control_value"]), "[dim]control[/dim]"]
            table.add_row(*header, *([""] if cuped else []))
        table.add_row(f"  {r['arm']}", _fmt_value(r["arm_value"]), cell(r, ""), *([cell(r, CUPED_SUFFIX)] if cuped else []))
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


def _day_axis(ax) -> None:
    """Whole days on the x axis (no 0.5-day ticks on short runs)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("day")


def _legend_outside(fig, axes, title: str = "arm") -> None:
    """One legend for the figure, right of the axes, so it never covers a line or a bar."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), title=title, loc="outside right upper")


def _expo_columns(daily: Mapping[str, pl.DataFrame]) -> list[str]:
    cols = {c for df in daily.values() for c in df.columns if c.startswith(EXPO_PREFIX)}
    return sorted(cols, key=metric_sort_key)


def plot_expo_reach(daily: Mapping[str, pl.DataFrame], control: str, path: Path,
                    expo_k: Mapping[str, int] | None = None) -> Path | None:
    """ExpoReach-K over days, one subplot per ``expo_reach_*`` column, one line per arm.

    ``expo_k`` (metric name -> resolved K) titles derived thresholds with their K. Returns ``None``
    (and writes nothing) when no arm has such a column.
    """
    cols = _expo_columns(daily)
    if not cols:
        return None
    fig = _new_figure(4.2 * len(cols) + 1.4, 3.6)
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    for ax, col in zip(axes, cols, strict=True):
        name = col.removeprefix(EXPO_PREFIX)
        k = str(expo_k[col]) if expo_k and col in expo_k else name
        for arm in _ordered_arms(daily, control):
            df = daily[arm]
            if col in df.columns:
                ax.plot(df["day"].to_numpy(), df[col].to_numpy(), marker="o", markersize=3, label=arm,
                        **_arm_style(arm, control))
        ax.set_title(f"ExpoReach-{k}" + (f" ({name})" if k != name else ""))
        _day_axis(ax)
        ax.set_ylabel(f"new items with \u2265 {k} exposures")
        ax.grid(alpha=0.3)
    _legend_outside(fig, axes)
    fig.suptitle("Items uploaded in the run that reached K exposures")
    return _save(fig, path)


def plot_dac(daily: Mapping[str, pl.DataFrame], control: str, path: Path) -> Path | None:
    """Daily active creators per day, one line per arm; ``None`` when no arm has a ``dac`` column."""
    arms = [a for a in _ordered_arms(daily, control) if "dac" in daily[a].columns]
    if not arms:
        return None
    fig = _new_figure(7.4, 3.8)
    ax = fig.subplots()
    for arm in arms:
        df = daily[arm]
        ax.plot(df["day"].to_numpy(), df["dac"].to_numpy(), marker="o", markersize=3, label=arm,
                **_arm_style(arm, control))
    ax.set_title("DAC: creators uploading at least one item")
    _day_axis(ax)
    ax.set_ylabel("daily active creators")
    ax.grid(alpha=0.3)
    _legend_outside(fig, [ax])
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
    fig = _new_figure(max(6.4, 0.9 * len(bins) * max(1, len(arms) / 2)) + 1.6, 3.8)
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
    _legend_outside(fig, [ax])
    return _save(fig, path)


def forest_frame(comparison: pl.DataFrame, control: str, expo_k: Mapping[str, int] | None = None) -> pl.DataFrame:
    """What :func:`plot_forest` draws: one row per (metric, treatment arm), metrics in read-out order.

    Columns: ``row`` (the metric's row, 0 at the top), ``label`` (:func:`metric_label`), ``metric``,
    ``arm``, ``defined`` (see :func:`undefined_reason`), ``lift, ci_low, ci_high`` and
    ``lift_cuped, ci_low_cuped, ci_high_cuped`` as fractions, NaN where undefined or absent. Takes
    any frame with ``metric, arm, lift, ci_low, ci_high`` (e.g. pooled replicates renamed so).
    """
    nan = float("nan")
    rows = _treatment_rows(comparison, control)
    metric_rows = {m: i for i, m in enumerate(dict.fromkeys(r["metric"] for r in rows))}
    out = []
    for r in rows:
        defined = undefined_reason(r) is None
        cuped = undefined_reason(r, CUPED_SUFFIX) is None
        out.append({
            "row": metric_rows[r["metric"]], "label": metric_label(r["metric"], expo_k), "metric": r["metric"],
            "arm": r["arm"], "defined": defined,
            **{c: (_finite(r.get(c)) if defined else None) for c in ("lift", "ci_low", "ci_high")},
            **{f"{c}{CUPED_SUFFIX}": (_finite(r.get(f"{c}{CUPED_SUFFIX}")) if cuped else None)
               for c in ("lift", "ci_low", "ci_high")},
        })
    schema = {"row": pl.Int64, "label": pl.String, "metric": pl.String, "arm": pl.String, "defined": pl.Boolean,
              **{c: pl.Float64 for c in ("lift", "ci_low", "ci_high", "lift_cuped", "ci_low_cuped", "ci_high_cuped")}}
    return pl.DataFrame(out, schema=schema).fill_null(nan)


def plot_forest(comparison: pl.DataFrame, control: str, path: Path, ci_level: float = 0.95,
                expo_k: Mapping[str, int] | None = None) -> Path | None:
    """Forest plot of the lifts: one row per metric (read-out order), a point and CI bar per treatment arm.

    Arms sit at small offsets within a metric's row, one colour each; CUPED lifts, when present, are
    hollow markers with a dashed bar just below the raw one. Undefined lifts are not drawn: a note
    under the axis lists them. ``None`` (nothing written) when the comparison has no treatment row.
    """
    import textwrap

    from matplotlib.lines import Line2D

    data = forest_frame(comparison, control, expo_k)
    if data.is_empty():
        return None
    labels = data.unique("row", keep="first", maintain_order=True)["label"].to_list()
    arms = list(dict.fromkeys(data["arm"].to_list()))
    cuped = data["lift_cuped"].is_not_nan().any()
    step = 0.8 / len(arms)
    fig = _new_figure(8.5, 1.6 + len(labels) * (0.3 + 0.12 * len(arms) * (1.5 if cuped else 1.0)))
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(arms))]
    for r in data.iter_rows(named=True):
        i = arms.index(r["arm"])
        y = r["row"] + (i - (len(arms) - 1) / 2) * step
        for suffix, dy, face, ls in (("", 0.0, colours[i], "-"), (CUPED_SUFFIX, step / 3, "white", "--")):
            lift, lo, hi = (r[f"{c}{suffix}"] for c in ("lift", "ci_low", "ci_high"))
            if math.isnan(lift):
                continue
            if not (math.isnan(lo) or math.isnan(hi)):
                ax.plot([lo * 100, hi * 100], [y + dy, y + dy], color=colours[i], linestyle=ls, linewidth=1.6)
            ax.plot([lift * 100], [y + dy], marker="o", markersize=5, color=colours[i], markerfacecolor=face,
                    linestyle="none")
    ax.axvline(0, color="black", linewidth=1)
    for row in range(1, len(labels)):
        ax.axhline(row - 0.5, color="0.85", linewidth=0.6)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first metric at the top
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Lift over control '{control}' ({ci_level * 100:g}% CI)")
    handles = [Line2D([], [], color=c, marker="o", label=a) for a, c in zip(arms, colours, strict=True)]
    if cuped:
        handles += [Line2D([], [], color="0.3", marker="o", label="raw lift"),
                    Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="--", label="CUPED lift")]
    fig.legend(handles=handles, title="arm", loc="outside right upper")
    undefined = data.filter(~pl.col("defined"))
    xlabel = "lift (%)"
    if undefined.height:
        note = "undefined, not drawn: " + ", ".join(f"{r['metric']} ({r['arm']})" for r in undefined.iter_rows(named=True))
        xlabel += "\n" + textwrap.fill(note, 110)
    ax.set_xlabel(xlabel)
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
            self._log_metrics(self._child(arm), [Metric(f"overall.{k}", float(v), ts, 0) for k, v in values.items() if v is not None])
        lifts = []
        for r in _treatment_rows(comparison, control):
            for suffix, name in (("", ""), (CUPED_SUFFIX, ".cuped")):
                if undefined_reason(r, suffix) is not None:
                    continue
                for col, key in (("lift", ""), ("ci_low", ".ci_low"), ("ci_high", ".ci_high")):
                    value = _finite(r.get(f"{col}{suffix}"))
                    if value is not None:
                        lifts.append(Metric(f"lift.{r['arm']}.{r['metric']}{name}{key}", value, ts, 0))
        self._log_metrics(pid, lifts)
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

    def _log_expo_history(self, daily: Mapping[str, pl.DataFrame]) -> None:
        """Each arm's daily ``expo_reach_*`` values as metric history (step = day), skipping days already logged."""
        ts = _now_ms()
        for arm, df in daily.items():
            rid = self._child(arm)
            for col in (c for c in df.columns if c.startswith(EXPO_PREFIX)):
                logged = {m.step for m in self.client.get_metric_history(rid, col)}
                self._log_metrics(rid, [Metric(col, value, ts, int(day)) for day, v in df.select("day", col).iter_rows()
                                        if int(day) not in logged and (value := _finite(v)) is not None])

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
