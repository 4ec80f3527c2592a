"""The run's figures: object-oriented matplotlib on an Agg canvas (no pyplot, no global backend change), saved as PNG."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from simulator.run.report import CUPED_SUFFIX, EXPO_PREFIX, finite_or_none, metric_label, metric_sort_key, treatment_rows, undefined_reason


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
    rows = treatment_rows(comparison, control)
    metric_rows = {m: i for i, m in enumerate(dict.fromkeys(row["metric"] for row in rows))}
    out = []
    for row in rows:
        defined = undefined_reason(row) is None
        cuped = undefined_reason(row, CUPED_SUFFIX) is None
        out.append({
            "row": metric_rows[row["metric"]], "label": metric_label(row["metric"], expo_k), "metric": row["metric"],
            "arm": row["arm"], "defined": defined,
            **{c: (finite_or_none(row.get(c)) if defined else None) for c in ("lift", "ci_low", "ci_high")},
            **{f"{c}{CUPED_SUFFIX}": (finite_or_none(row.get(f"{c}{CUPED_SUFFIX}")) if cuped else None)
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
    for row in data.iter_rows(named=True):
        i = arms.index(row["arm"])
        y = row["row"] + (i - (len(arms) - 1) / 2) * step
        for suffix, dy, face, ls in (("", 0.0, colours[i], "-"), (CUPED_SUFFIX, step / 3, "white", "--")):
            lift, lo, hi = (row[f"{c}{suffix}"] for c in ("lift", "ci_low", "ci_high"))
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
        note = "undefined, not drawn: " + ", ".join(f"{row['metric']} ({row['arm']})" for row in undefined.iter_rows(named=True))
        xlabel += "\n" + textwrap.fill(note, 110)
    ax.set_xlabel(xlabel)
    return _save(fig, path)


def plot_decay(long: pl.DataFrame, control: str, path: Path, subsets: tuple[str, ...], k: int = 10) -> Path:
    """The IHM protocol's HitRate@K per window, one subplot per subset (``offline_ihm.SUBSETS``), one line per variant."""
    fig = _new_figure(12.6, 3.8)
    axes = fig.subplots(1, len(subsets))
    for ax, subset in zip(axes, subsets, strict=True):
        for variant in long["variant"].unique(maintain_order=True):
            rows = long.filter((pl.col("variant") == variant) & (pl.col("subset") == subset) & (pl.col("window") > 0))
            rows = rows.sort("window")
            ax.plot(rows["window"].to_numpy(), rows["hr"].to_numpy(), marker="o", markersize=3, label=variant,
                    **_arm_style(variant, control))
        ax.set_title(f"{subset} items")
        ax.set_xlabel("test window (no retraining)")
        ax.set_ylabel(f"HitRate@{k}")
        ax.grid(alpha=0.3)
    axes[0].legend(title="variant")
    fig.suptitle("Decay over time windows after one training (IHM paper Fig. 3)")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path

