"""What coldsim's MLflow runs are called and what their pages say: metric names, the experiment kind, the parent
run's description and the run's URL. :mod:`simulator.run.tracking` writes them; docs/mlflow.md reads them.

Every arm's child run logs the same names, grouped by prefix (MLflow's chart view makes a section of each):

====================  ===========================================================================================
``kpi/<metric>``      the creator-side answer over the run: ``expo_reach_*``, ``dac``, ``publications``,
                      ``cold_interactions``, ``new_item_coverage``
``guard/<metric>``    the user-side guard-rails over the run: ``interactions_per_exposure``, ``view_rate``, ``dau``...
``lift/<metric>``     the arm over control (treatment arms): relative lift, ``/ci_low``, ``/ci_high``; CUPED under
                      ``lift/<metric>/cuped``
``daily/<metric>``    every metric per day (step = day): one curve per arm in the chart view
``diag/<name>``       strategy and training diagnostics per day (``diag/dualrec.hit_rate.actual``); run-level
                      summaries under ``diag/run/<name>``
====================  ===========================================================================================

The parent run holds ``lift/<arm>/<metric>`` (the same lifts, for a search over parents), ``ladder/<arm>/<metric>``,
``time/<stage>_s`` and ``run/simulated_exposures``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any

import polars as pl
from pydantic import BaseModel

from simulator.metrics.definitions import CREATOR_METRICS, USER_METRICS

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3 opens such an experiment on its runs table
NOTE_TAG = "mlflow.note.content"  # the run page's description (markdown)
SCENARIO_TAG, SEED_TAG, SCALE_TAG, LOG_TAG = "coldsim.scenario", "coldsim.seed", "coldsim.scale", "coldsim.log"
DEFAULT_UI = "http://127.0.0.1:5000"
MAX_PARAM_VALUE = 6000  # MLflow's limit (mlflow.utils.validation)

HEADLINE_GUARDS = ("interactions_per_exposure", "view_rate", "dau")  # guard-rails in the description's table


def is_kpi(metric: str) -> bool:
    return metric.startswith("expo_reach_") or metric in CREATOR_METRICS


def overall_name(metric: str) -> str:
    """The child run's name of a run-level value (``overall`` of the results)."""
    if is_kpi(metric):
        return f"kpi/{metric}"
    if metric in USER_METRICS:
        return f"guard/{metric}"
    return f"diag/run/{metric}"


def daily_name(key: str) -> str:
    """The child run's name of a per-day value: metrics under ``daily/``, diagnostics (dotted names) under ``diag/``."""
    return f"diag/{key}" if "." in key else f"daily/{key}"


def lift_name(metric: str, cuped: bool = False, bound: str | None = None, arm: str | None = None) -> str:
    """``lift/<metric>[/cuped][/ci_low|/ci_high]`` (a child run), or with ``arm`` ``lift/<arm>/...`` (the parent)."""
    return "/".join(["lift", *([arm] if arm else []), metric, *(["cuped"] if cuped else []), *([bound] if bound else [])])


ML_VIEW = "?workflowType=machine_learning"
"""MLflow 3.17's UI has a GenAI / Model training switch (default GenAI, remembered by the browser) that decides the
experiment pages over the experiment's kind tag; this query sets it to Model training: the runs table."""


def run_url(experiment_id: str, run_id: str, ui: str = DEFAULT_UI) -> str:
    """The run's page in ``mlflow ui``, in the Model training view (its Runs link lists the experiment's runs)."""
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}{ML_VIEW}"


def experiment_url(experiment_id: str, ui: str = DEFAULT_UI) -> str:
    """The experiment's runs table in ``mlflow ui``: parent runs, their child runs nested under them."""
    return f"{ui}/#/experiments/{experiment_id}{ML_VIEW}"


def _artifact(experiment_id: str, run_id: str, path: str) -> str:
    return f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}{ML_VIEW}"


def _pct(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}%"


def _value(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4g}"


def headline_table(comparison: pl.DataFrame, control: str) -> str:
    """The description's table: the creator-side metrics and three guard-rails, each treatment arm over control."""
    rows = comparison.filter((pl.col("arm") != control)
                             & (pl.col("metric").str.starts_with("expo_reach_")
                                | pl.col("metric").is_in([*CREATOR_METRICS, *HEADLINE_GUARDS])))
    lines = ["| metric | arm | control | arm value | lift [95% CI] | significant |", "|---|---|---|---|---|---|"]
    for r in rows.iter_rows(named=True):
        lift = f"{_pct(r['lift'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        sig = "**yes**" if r.get("significant") else "no"
        lines.append(f"| {r['metric']} | {r['arm']} | {_value(r['control_value'])} | {_value(r['arm_value'])} | "
                     f"{lift} | {sig} |")
    return "\n".join(lines)


def answer_line(comparison: pl.DataFrame, control: str) -> str:
    """One line: the headline lifts whose 95% interval excludes 0, or that none does."""
    rows = comparison.filter((pl.col("arm") != control) & pl.col("significant").fill_null(False)
                             & (pl.col("metric").str.starts_with("expo_reach_")
                                | pl.col("metric").is_in([*CREATOR_METRICS, *HEADLINE_GUARDS])))
    if rows.height == 0:
        return f"**Answer**: no headline lift over {control} excludes 0 at 95%."
    cells = [f"{r['arm']} {r['metric']} {_pct(r['lift'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
             for r in rows.iter_rows(named=True)]
    return f"**Answer** (lifts over {control} whose 95% interval excludes 0): " + "; ".join(cells) + "."


def ab_description(result, params: dict, experiment_id: str, run_id: str) -> str:
    """The parent run's description of an A/B run: the question, the answer in a line, the setting, the headline
    table, the plots."""
    sc = result.scenario
    art = lambda path: _artifact(experiment_id, run_id, path)  # noqa: E731
    k = ", ".join(f"{name} = {value}" for name, value in result.expo_k.items())
    return (f"**{sc.name}**: {sc.description}\n\n{answer_line(result.comparison, sc.control)}\n\n"
            f"Seed {sc.seed}, scale {params.get('scale', 'default')}, log {params.get('log', 'synthetic')}, "
            f"{result.days} days, {result.events:,} simulated exposures; control arm **{sc.control}**"
            f"{f'; ExpoReach K: {k}' if k else ''}.\n\n"
            f"{headline_table(result.comparison, sc.control)}\n\n"
            f"Lifts are relative to {sc.control} with 95% bootstrap intervals over the randomisation units. "
            f"Plots: [forest]({art('plots/forest.png')}) · [ExpoReach per day]({art('plots/expo_reach.png')}) · "
            f"[DAC per day]({art('plots/dac.png')}) · [exposures by age]({art('plots/exposures_by_age.png')}); "
            f"every metric: [comparison.md]({art('comparison.md')}). To compare the arms: select the child runs in "
            "the runs table, then Compare.")


def table_description(title: str, markdown: str, summary: str = "") -> str:
    """The parent run's description of a replicate group or an offline protocol: its table as markdown."""
    return f"**{title}**\n\n{markdown}" + (f"\n\n{summary}" if summary else "")


# ----------------------------------------------------------------------------------------------- params
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
