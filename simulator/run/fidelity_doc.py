"""The fidelity report as markdown (``docs/fidelity.md``): how it was made, the verdicts, every row, what differs in
each source (measured), the figures and the runs. Generated whole by ``simulate fidelity``; never edited by hand."""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import polars as pl

from simulator.run.fidelity_claims import NULL_MARGIN
from simulator.run.fidelity_profile import PROFILE_COLUMNS

PAPERS_DATA = (
    "The papers' own data, for comparison: Next-User Retrieval, Douyin's online learning system (hundreds of billions "
    "of samples a day; A/B on 10% of 600 million daily users for a week); IHM, MovieLens-1M (1,000,209 ratings by "
    "6,040 users on 3,706 movies) and three Amazon categories offline, Facebook's recommender online; DualRec, Kwai "
    "(over 100 million users and 10 million creators; 7-day experiments, DAC over 21 days).")


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


SHARES = ("later_from_new_users", "later_on_new_items", "ihm_tail_share")  # shown in percent


def _profiles_markdown(profiles: pl.DataFrame) -> str:
    sources = profiles["source"].to_list()
    lines = ["| measured | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    for column, label in PROFILE_COLUMNS.items():
        if column == "source":
            continue
        values = profiles[column].to_list()
        if column in SHARES:
            values = [f"{100 * v:.1f}%" if isinstance(v, float) and math.isfinite(v) else "-" for v in values]
        if all(_fmt(v) == "-" for v in values):
            continue
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |")
    return "\n".join(lines)


def _readings(report) -> list[str]:
    """Data-driven sentences on the tables that did not reproduce everywhere, from the profiles (measured)."""
    rows, out = report.rows, []
    for r in report.profiles.iter_rows(named=True):
        src = r["source"]
        mine = rows.filter(pl.col("source") == src)
        weak = lambda prefix: mine.filter(pl.col("table").str.starts_with(prefix)  # noqa: E731
                                          & pl.col("verdict").is_in(["not reproduced", "inconclusive"])).height
        if weak("Next-User Table 1") and math.isfinite(r["nu_model_over_most_active"]):
            out.append(
                f"**{src}, Next-User Table 1** ({weak('Next-User Table 1')} rows not reproduced or inconclusive): the "
                f"full model reaches {r['nu_model_over_most_active']:.2f}x the most-active floor, which is itself "
                f"{_fmt(r['nu_most_active_over_random'])}x random; a user has a median of "
                f"{_fmt(r['user_positives_median'])} positives before the split; "
                f"{100 * r['later_from_new_users']:.1f}% of later positives come from users never seen before it "
                "(not scored)"
                + (f"; the world's truth is only {r['nu_truth_over_most_active']:.2f}x the most-active floor, so who "
                   "interacts next is mostly who is active" if math.isfinite(r["nu_truth_over_most_active"]) else "")
                + ".")
        if weak("IHM") and math.isfinite(r["ihm_tail_share"]):
            out.append(
                f"**{src}, IHM** ({weak('IHM')} rows not reproduced or inconclusive): tail items take "
                f"{100 * r['ihm_tail_share']:.1f}% of the test positives; "
                f"{100 * r['later_on_new_items']:.1f}% of later positives are on items with no positive before the "
                f"split; a liked item has a median of {_fmt(r['item_positives_median'])} positives before it.")
        if (weak("Next-User Table 2") or weak("DualRec")) and r["ab_expo_k"] != "-":
            out.append(
                f"**{src}, online tables** ({weak('Next-User Table 2') + weak('DualRec')} rows not reproduced or "
                f"inconclusive): {_fmt(r['ab_days'])} days with {_fmt(r['ab_dau_per_arm'])} daily active users per arm "
                f"(the papers: millions per arm, 7-21 days); ExpoReach's K is {r['ab_expo_k']} (the papers: 1K and "
                "10K), so a lift of a few percent, the papers' size, is far inside the intervals.")
    return out


def render_doc(report, budget_name: str, budget, missing: list[str], rows_md: str, counts: pl.DataFrame,
               doc_dir: Path | None = None) -> str:
    """The whole document (figures linked relative to ``doc_dir``, default the current directory)."""
    logs = [s for s in report.profiles["source"].to_list() if s != "synthetic"]
    command = "simulate fidelity --budget " + budget_name + "".join(f" --log {s}" for s in logs)
    counts_md = ""
    if counts.height:
        cols = counts.columns
        counts_md = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                              + ["| " + " | ".join(str(v) for v in row) + " |" for row in counts.iter_rows()])
    base = doc_dir or Path(".")
    figures = "\n\n".join(f"![{caption}]({Path(os.path.relpath(path, base)).as_posix()})\n\n*{caption}*"
                          for caption, path in report.figures.items()) or "(none)"
    runs = "\n".join(["| source | scenario | MLflow parent run | wall s |", "|---|---|---|---|"]
                     + [f"| {r['source']} | {r['section']} | {r['run']} | {r['wall_s']} |" for r in report.runs])
    readings = "\n".join(f"- {line}" for line in _readings(report)) or "- Every row reproduced."
    not_run = ("Public datasets not in the cache, so not run (`simulate data get NAME`, then run the command again): "
               + ", ".join(missing) + "." if missing else "Every cached public dataset was run.")
    return f"""# Fidelity: does coldsim reproduce the papers?

Generated by `simulate fidelity` on {time.strftime('%Y-%m-%d')}, commit {_git_commit()}, budget **{budget_name}**
({budget.about}), in {report.wall_s / 60:.1f} min. Do not edit: run it again.

```bash
{command}
```

Every row is one number or statement of a paper (Next-User Retrieval, IHM, DualRec) beside what coldsim measured
for it, with its 95% interval: a paired bootstrap over held-out events for the offline tables, the A/B run's bootstrap
over randomisation units for one seed and a t interval over the seeds when there are several, a normal interval
for the UAC hit rates and the retrievals' exposure shares. The verdict reads the interval only, never the paper's magnitude
(`simulator/run/fidelity_claims.py`): where the paper reports a gain or a loss, *reproduced* when the interval
excludes 0 on the paper's side, *not reproduced* when it excludes 0 on the other side, *inconclusive* otherwise;
where the paper reports no material difference (under 1%), *reproduced* when the interval lies within
+-{NULL_MARGIN:.0%}, *not reproduced* when it excludes 0; where it reports no loss, *reproduced* when the interval's
low end is above -{NULL_MARGIN:.0%}. One seed of a scalar without a sampling model (an AUC gain, a coverage
difference) has *no interval*. "Paper's number in CI" says whether the paper's own figure lies inside coldsim's
interval. Nothing was tuned to make a row reproduce.

## Verdicts

{counts_md}

## Every row

{rows_md}

## What differs, measured

{_profiles_markdown(report.profiles)}

{PAPERS_DATA}

{readings}

{not_run}

## Figures

{figures}

## Runs

{runs}
"""
