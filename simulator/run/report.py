"""Read-outs for people: a run's tables as markdown and rich console tables (the lifts, the ladder, pooled replicates,
the strategy diagnostics, the offline protocols' tables), and the table files a run leaves in its directory."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from simulator.diagnostics import auc_table, msize_table, summarise
from simulator.metrics.offline_ci import N_BOOT, format_mean, format_rel
from simulator.run.results import SimulationResult

if TYPE_CHECKING:
    from rich.table import Table


# ---------------------------------------------------------------------------------------------
# The comparison: lifts over control
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


def _fmt_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def _fmt_pct(value: float | None, minus: str = "-") -> str:
    if value is None or math.isnan(value) or math.isinf(value):
        return "n/a"
    return f"{value * 100:+.1f}%".replace("-", minus)


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, NaN or infinite."""
    return float(value) if value is not None and math.isfinite(value) else None


def _ci_sign(lo: float | None, hi: float | None) -> int:
    """+1 if the CI lies above 0, -1 if below, 0 if it straddles 0 or is missing."""
    lo, hi = finite_or_none(lo), finite_or_none(hi)
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
    if finite_or_none(row.get(f"lift{suffix}")) is None:
        return "no lift"
    lo, hi = finite_or_none(row.get(f"ci_low{suffix}")), finite_or_none(row.get(f"ci_high{suffix}"))
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
    return any(finite_or_none(row[f"lift{CUPED_SUFFIX}"]) is not None for row in treatment_rows(comparison, control))


def in_read_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``metric`` and ``arm`` keys grouped by metric in read-out order, then by arm in first-seen order."""
    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    arms = list(dict.fromkeys(row["arm"] for row in rows))
    return sorted(rows, key=lambda row: (metric_sort_key(row["metric"]), metrics.index(row["metric"]),
                                         arms.index(row["arm"])))


def treatment_rows(comparison: pl.DataFrame, control: str) -> list[dict[str, Any]]:
    """The rows of the treatment arms, in read order."""
    return in_read_order([row for row in comparison.iter_rows(named=True) if row["arm"] != control])


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
    for row in treatment_rows(comparison, control):
        lift, ci, sign = _lift_parts(row)
        line = (f"| {metric_label(row['metric'], expo_k)} | {_fmt_value(row['control_value'])} | {row['arm']} "
                f"| {_fmt_value(row['arm_value'])} | {lift}{arrow[sign]} | {ci} |")
        if cuped:
            if finite_or_none(row.get(f"lift{CUPED_SUFFIX}")) is None:
                line += " n/a | |"
            else:
                c_lift, c_ci, c_sign = _lift_parts(row, CUPED_SUFFIX)
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

    def cell(row: Mapping[str, Any], suffix: str) -> str:
        if suffix and finite_or_none(row.get(f"lift{suffix}")) is None:
            return "[dim]n/a[/dim]"
        lift, ci, sign = _lift_parts(row, suffix, minus)
        if lift == "undefined":
            return f"[dim]{lift}{sep}{ci}[/dim]"
        style = {1: "green", -1: "red", 0: ""}[sign]
        return f"[{style}]{lift}{sep}{ci}[/{style}]" if style else f"{lift}{sep}{ci}"

    metric = None
    for row in treatment_rows(comparison, control):
        if row["metric"] != metric:
            metric = row["metric"]
            header = [f"[bold]{metric_label(metric, expo_k)}[/bold]", _fmt_value(row["control_value"]), "[dim]control[/dim]"]
            table.add_row(*header, *([""] if cuped else []))
        table.add_row(f"  {row['arm']}", _fmt_value(row["arm_value"]), cell(row, ""), *([cell(row, CUPED_SUFFIX)] if cuped else []))
    return table


# ---------------------------------------------------------------------------------------------
# The ladder, pooled replicates, plain tables
# ---------------------------------------------------------------------------------------------


def ladder_metrics(result: SimulationResult) -> list[str]:
    """ExpoReach metrics in the comparison's order (fixed K or derived, ``expo_reach_q90``), then DAC, publications, IPE."""
    expo = [c for c in result.comparison["metric"].unique(maintain_order=True) if c.startswith(EXPO_PREFIX)]
    return expo + ["dac", "publications", "interactions_per_exposure"]


def format_ladder_markdown(ladder: pl.DataFrame, metrics: list[str], ci_level: float = 0.95) -> str:
    """Paper Table 2 layout: one row per arm, its lift over the arm before it, per metric, with the CI."""
    if ladder.is_empty():
        return ""
    head = "| arm | over | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for arm in ladder["arm"].unique(maintain_order=True):
        rows = ladder.filter(pl.col("arm") == arm)
        cells = []
        for metric in metrics:
            row = rows.filter(pl.col("metric") == metric)
            if row.is_empty() or row["lift"][0] is None or not np.isfinite(row["lift"][0]):
                cells.append("-")
                continue
            lift, low, high = row["lift"][0], row["ci_low"][0], row["ci_high"][0]
            mark = "*" if (low > 0 or high < 0) else ""
            cells.append(f"{lift:+.1%}{mark} [{low:+.1%}, {high:+.1%}]")
        lines.append(f"| {arm} | {rows['baseline'][0]} | " + " | ".join(cells) + " |")
    lines.append(f"\n`*`: the {ci_level:.0%} bootstrap interval excludes 0.")
    return "\n".join(lines)


def format_replicates_markdown(table: pl.DataFrame, seeds: list[int], ci_level: float = 0.95,
                               expo_k: dict[str, int] | None = None) -> str:
    """Pooled replicates (:func:`simulator.run.replicates.aggregate_lifts`), one row per (metric, arm), metrics in
    read-out order: mean lift [t interval], sign agreement, each seed's lift.

    A mean lift with no reading (no finite seed lift, or a zero-width interval) prints ``undefined``;
    ``expo_k`` (metric name -> resolved K) adds the K to derived ExpoReach names.
    """
    head = f"| metric | arm | mean lift [{ci_level:.0%} CI over seeds] | same sign | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    lines = [head, "|" + "---|" * (4 + len(seeds))]
    for row in in_read_order(list(table.iter_rows(named=True))):
        pooled = {"lift": row["mean_lift"], "ci_low": row["ci_low"], "ci_high": row["ci_high"]}
        if undefined_reason(pooled) is not None:
            read = "undefined"
        else:
            ci = "" if not np.isfinite(row["ci_low"]) else f" [{row['ci_low']:+.1%}, {row['ci_high']:+.1%}]"
            mark = "*" if np.isfinite(row["ci_low"]) and (row["ci_low"] > 0 or row["ci_high"] < 0) else ""
            read = f"{row['mean_lift']:+.1%}{mark}{ci}"
        agree = "-" if not np.isfinite(row["sign_agreement"]) else f"{row['sign_agreement']:.0%}"
        per_seed = " | ".join("-" if not np.isfinite(x) else f"{x:+.1%}" for x in row["lifts"])
        lines.append(f"| {metric_label(row['metric'], expo_k)} | {row['arm']} | {read} | {agree} | {per_seed} |")
    lines.append(f"\n`*`: the {ci_level:.0%} t interval over seeds excludes 0; `undefined`: no lift to read.")
    return "\n".join(lines)


def format_table_markdown(df: pl.DataFrame, digits: int = 4) -> str:
    """Any table as markdown, floats with ``digits`` decimals."""
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.iter_rows():
        lines.append("| " + " | ".join(f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def write_result_tables(result: SimulationResult, out: Path) -> Path:
    """Markdown/CSV tables of the run beyond the comparison: the ladder (Table 2 layout), and per strategy arm its
    daily diagnostics, the ranker AUC table (Table 4 layout) and the |M_u| histogram (Fig. 9 as a table)."""
    out.mkdir(parents=True, exist_ok=True)
    if result.ladder is not None:
        result.ladder.write_csv(out / "ladder.csv")
        (out / "ladder.md").write_text(format_ladder_markdown(result.ladder, ladder_metrics(result),
                                                              result.scenario.metrics.ci_level))
    for arm, diagnostics in result.diagnostics.items():
        diagnostics.write_csv(out / f"diagnostics_{arm}.csv")
        summary = summarise(diagnostics)
        for name, table in (("auc", auc_table(summary)), ("msize", msize_table(summary))):
            if table is not None:
                (out / f"{name}_{arm}.md").write_text(format_table_markdown(table))
    return out


# ---------------------------------------------------------------------------------------------
# The offline protocols' tables
# ---------------------------------------------------------------------------------------------


CI_NOTE = ("95% intervals from a paired bootstrap over the held-out events ({boot} replicates); * marks a difference "
           "from the control whose interval excludes 0")


def _mean_cell(row: dict, key: str) -> str:
    if f"{key}_lo" in row and row[f"{key}_lo"] == row[f"{key}_lo"]:
        return format_mean({"mean": row[key], "lo": row[f"{key}_lo"], "hi": row[f"{key}_hi"]})
    return f"{row[key]:.4f}"


def _rel_cell(row: dict, key: str) -> str:
    if f"{key}_rel_lo" in row:
        return format_rel({"rel": row[f"{key}_rel"], "rel_lo": row[f"{key}_rel_lo"], "rel_hi": row[f"{key}_rel_hi"],
                           "significant": bool(row[f"{key}_sig"])})
    return f"{100 * row[f'{key}_rel']:+.2f}%"


def format_next_user_table(table: pl.DataFrame, control: str, ks: list[int]) -> str:
    """Next-User paper Table 1 layout: absolute Recall@K for the full model, relative difference for each variant
    (with their 95% intervals and significance when the table carries them)."""
    head = "| ID | Variant | " + " | ".join(f"Recall@Top{k}" for k in ks) + " |\n|---|---|" + "---|" * len(ks) + "\n"
    lines = []
    for i, row in enumerate(table.iter_rows(named=True)):
        if row["variant"] == control:
            cells = [_mean_cell(row, f"recall_{k}") for k in ks]
        else:
            cells = [_rel_cell(row, f"recall_{k}") for k in ks]
        lines.append(f"| {i} | {row['variant']} | " + " | ".join(cells) + " |")
    note = f"\n{CI_NOTE.format(boot=N_BOOT)}.\n" if f"recall_{ks[0]}_lo" in table.columns else ""
    return head + "\n".join(lines) + "\n" + note


def format_next_user_floors(floors: dict[str, dict[str, float]], random: dict[str, float], ks: list[int]) -> str:
    """The Next-User floors (and the world's ceiling) beside Table 1, absolute Recall@K on the same events (with
    95% intervals when measured)."""
    head = "| floor | " + " | ".join(f"Recall@Top{k}" for k in ks) + " |\n|---|" + "---|" * len(ks) + "\n"
    rows = [("random", random)] + list(floors.items())
    return head + "\n".join(f"| {n} | " + " | ".join(_mean_cell(f, f"recall_{k}") for k in ks) + " |"
                             for n, f in rows) + "\n"


def format_ihm_table(table: pl.DataFrame, k: int, subsets: tuple[str, ...]) -> str:
    """Markdown of the IHM paper's Table 1 layout (:func:`simulator.run.offline_ihm.table1`), ``subsets`` in column
    order (``offline_ihm.SUBSETS``)."""
    head = ("| Method | " + " | ".join(f"{s.title()} HR@{k} | {s.title()} NDCG@{k}" for s in subsets) + " |\n"
            "|---|" + "---|" * (2 * len(subsets)) + "\n")

    def cell(row: dict, key: str) -> str:
        return _mean_cell(row, key) + ("*" if row.get(f"{key}_sig") else "")

    rows = [f"| {row['variant']} | " + " | ".join(cell(row, f"{s}_{m}{k}") for s in subsets for m in ("hr", "ndcg")) + " |"
            for row in table.iter_rows(named=True)]
    note = f"\n{CI_NOTE.format(boot=N_BOOT)}.\n" if f"{subsets[0]}_hr{k}_lo" in table.columns else ""
    return head + "\n".join(rows) + "\n" + note


def format_ihm_decay(long: pl.DataFrame, decay: pl.DataFrame, subsets: tuple[str, ...]) -> str:
    """Markdown: the IHM protocol's HitRate per window (tail / head) and the decay slopes, one row per variant."""
    n_windows = int(long["window"].max())
    head = ("| Method | " + " | ".join(f"w{w} tail / head" for w in range(1, n_windows + 1)) + " | "
            + " | ".join(f"slope {s}" for s in subsets) + " |\n|---|" + "---|" * (n_windows + len(subsets)) + "\n")
    lines = []
    for variant in long["variant"].unique(maintain_order=True):
        rows = long.filter(pl.col("variant") == variant)

        def hit_rate(window: int, subset: str) -> float:
            return rows.filter((pl.col("window") == window) & (pl.col("subset") == subset))["hr"][0]

        slopes = {row["subset"]: row for row in decay.filter(pl.col("variant") == variant).iter_rows(named=True)}
        lines.append(f"| {variant} | "
                     + " | ".join(f"{hit_rate(w, 'tail'):.4f} / {hit_rate(w, 'head'):.4f}" for w in range(1, n_windows + 1))
                     + " | " + " | ".join(_slope_cell(slopes[s]) for s in subsets)
                     + " |")
    note = ("\nSlopes with their 95% interval (bootstrap over each window's test events); * marks a slope whose "
            "interval excludes 0.\n" if "slope_lo" in decay.columns else "")
    return head + "\n".join(lines) + "\n" + note


def _slope_cell(row: dict) -> str:
    cell = f"{row['slope']:+.4f} ({100 * row['rel_slope']:+.1f}%)"
    if "slope_lo" in row and row["slope_lo"] == row["slope_lo"]:
        cell += f" [{row['slope_lo']:+.4f}, {row['slope_hi']:+.4f}]" + ("*" if row["slope_sig"] else "")
    return cell
