"""``simulate fidelity``: every seed table of the three papers, run on the synthetic world and on public logs, with
confidence intervals and a verdict per row, written to ``docs/fidelity.md``.

The sections are the seed scenarios themselves: ``next_user_ablation`` and ``ihm_decay`` (offline protocols, run on
every source), ``coldstart_ab`` and ``dualrec_ladder`` (A/B runs, on the synthetic world, and on the logs with the
``full`` budget). The rows, the paper's numbers and the verdict rule are in :mod:`simulator.run.fidelity_claims`;
nothing here is tuned towards a row. A :class:`Budget` sets the scale, the seeds and how much of each log.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from simulator.core.config import Scenario
from simulator.run.fidelity_claims import (CLAIMS, VERDICTS, Cell, Claim, ab_cells, ihm_cells, ladder_cells,
                                           next_user_cells, paper_in_interval, pool_runs, verdict)
from simulator.run.fidelity_profile import ab_runs as _runs, profile_source

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class Budget:
    """How much a report runs: the synthetic world's scale, seeds of the offline protocols and of the A/B runs, the
    days of each log the offline protocols use (None: the whole log) and whether the A/B runs replay the logs too."""

    scale: str | None
    offline_replicates: int
    online_replicates: int
    log_days: int | None
    online_logs: bool
    about: str


BUDGETS = {
    "quick": Budget("tiny", 1, 1, 30, False, "tiny synthetic world, one seed, the first 30 days of each log (CI: "
                    "a few minutes; checks the pipeline, not the papers)"),
    "standard": Budget("small", 3, 3, None, True, "small synthetic world, three seeds, on the synthetic world and "
                       "on every log"),
    "full": Budget(None, 3, 3, None, True, "default synthetic world, three seeds everywhere, A/B runs on every log"),
}

SECTIONS = {  # section -> (scenario, offline protocol?)
    "next_user_offline": ("next_user_ablation", True),
    "ihm_offline": ("ihm_decay", True),
    "ab": ("coldstart_ab", False),
    "ladder": ("dualrec_ladder", False),
}


@dataclass
class FidelityReport:
    """The report's rows (one per claim and source), the sources' data profiles, figures, runs and the markdown."""

    rows: pl.DataFrame
    profiles: pl.DataFrame
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> image
    runs: list[dict] = field(default_factory=list)  # source, section, MLflow parent run, wall seconds
    markdown: str = ""
    wall_s: float = 0.0


Runner = Callable[[Scenario, str | None, Budget, int], object]  # (scenario, log spec or None, budget, replicates) -> outcome
Scenarios = Mapping[str, Scenario]  # the sections' scenarios by name (the CLI looks them up: tests/test_layering.py)


def default_sources(cache_dir: str | None = None, given: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(log specs of every cached dataset, names of the datasets neither cached nor ``given`` as a log spec whose
    path ends with their name, e.g. ``movielens:../shared/data/ml-100k``): ``simulate data list``'s view."""
    from simulator.sources.datasets import DATASETS, cached

    named = {re.split(r"[/:]", spec.split("?", 1)[0].rstrip("/"))[-1] for spec in given or []}
    have, missing = [], []
    for ds in DATASETS.values():
        if cached(ds.name, cache_dir):
            have.append(f"{ds.logs[0].kind}:{ds.name}")
        elif ds.name not in named:
            missing.append(ds.name)
    return have, missing


def plan(budget_name: str, logs: list[str], scenarios: Scenarios) -> str:
    """What :func:`run_fidelity` would run (``simulate fidelity --dry-run``); validates the budget and each log spec."""
    from simulator.run.logs import describe_log

    budget = _budget(budget_name)
    lines = [f"dry run: fidelity report, budget {budget_name} ({budget.about})"]
    for source in [SYNTHETIC, *logs]:
        for section, (name, offline) in SECTIONS.items():
            if source != SYNTHETIC and not offline and not budget.online_logs:
                continue
            sc = scenarios[name].at_scale(budget.scale if source == SYNTHETIC else None)
            describe_log(None if source == SYNTHETIC else source, None, sc)  # raises on a bad spec
            seeds = budget.offline_replicates if offline else budget.online_replicates
            lines.append(f"  {source}: {name} ({'offline' if offline else 'A/B'}), {seeds} seed(s)")
    return "\n".join(lines)


def _budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ValueError(f"unknown budget '{name}'; known: {', '.join(BUDGETS)}")
    return BUDGETS[name]


def session_runner(tracking_uri: str | None, runtime: str = "local", run_root: str = "coldsim_runs",
                   experiment: str = "coldsim-fidelity") -> Runner:
    """Runs a section as the CLI would (:func:`~simulator.run.session.run_offline`, ``run_scenario``,
    ``run_replicates``), recorded in MLflow when ``tracking_uri`` is given."""
    from simulator.run.groups import run_replicates
    from simulator.run.session import RunOptions, run_offline, run_scenario

    def run(sc: Scenario, log: str | None, budget: Budget, replicates: int):
        name = sc.name
        offline = sc.protocol != "ab"
        opts = RunOptions(scenario=name, scale=budget.scale if log is None else None, log=log, runtime=runtime,
                          run_root=run_root, experiment=experiment,
                          days=budget.log_days if (log is not None and offline) else None)
        if offline:
            return run_offline(sc, opts, tracking_uri=tracking_uri, replicates=replicates)
        if replicates > 1:
            return run_replicates(sc, opts, replicates, tracking_uri=tracking_uri)
        return run_scenario(sc, opts, tracking_uri=tracking_uri)

    return run


def run_fidelity(budget_name: str, logs: list[str], scenarios: Scenarios, runner: Runner | None = None,
                 doc: Path | None = None, image_dir: Path | None = None,
                 progress: Callable[[str], None] | None = None, missing: list[str] | None = None) -> FidelityReport:
    """Run every section (``scenarios``: the :data:`SECTIONS`' scenarios by name) on the synthetic world and on
    ``logs`` (log specs), read each claim's figure, judge it.

    ``runner``: how a section runs (default :func:`session_runner` without MLflow); ``doc``: the markdown file to
    write (its figures go to ``images/fidelity/`` beside it unless ``image_dir``: decay per source, the A/B forest
    plot and DAC); ``missing``: datasets named in the report as not run."""
    start = time.perf_counter()
    budget = _budget(budget_name)
    if doc is not None and image_dir is None:
        image_dir = doc.parent / "images" / "fidelity"
    runner = runner or session_runner(None)
    sources = [SYNTHETIC, *(logs or [])]
    cells: dict[str, dict[str, Cell]] = {}
    ran: dict[str, set[str]] = {}
    figures: dict[str, Path] = {}
    runs: list[dict] = []
    outcomes: dict[tuple[str, str], object] = {}
    for source in sources:
        log = None if source == SYNTHETIC else source
        cells[source], ran[source] = {}, set()
        for section, (name, offline) in SECTIONS.items():
            if log is not None and not offline and not budget.online_logs:
                continue
            if progress is not None:
                progress(f"{source}: {name}")
            t = time.perf_counter()
            outcome = runner(scenarios[name], log, budget, budget.offline_replicates if offline else budget.online_replicates)
            outcomes[(source, section)] = outcome
            ran[source].add(section)
            cells[source].update(_cells(section, outcome, scenarios[name]))
            runs.append({"source": source, "section": name, "run": _run_id(outcome),
                         "wall_s": round(time.perf_counter() - t, 1)})
            if image_dir is not None:
                figures.update(_figures(section, outcome, source, image_dir))
    rows = [_row(claim, source, cells[source].get(claim.key))
            for claim in CLAIMS for source in sources if claim.section in ran[source]]
    profiles = pl.DataFrame([profile_source(source, outcomes, budget, scenarios["next_user_ablation"])
                             for source in sources])
    report = FidelityReport(rows=pl.DataFrame(rows), profiles=profiles, figures=figures, runs=runs,
                            wall_s=time.perf_counter() - start)
    report.markdown = render(report, budget_name, missing or [], doc.parent if doc is not None else None)
    if doc is not None:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(report.markdown)
    return report


def _cells(section: str, outcome, scenario) -> dict[str, Cell]:
    if section == "next_user_offline":
        return next_user_cells(outcome.table, outcome.meta, scenario.control)
    if section == "ihm_offline":
        return ihm_cells(outcome.table, outcome.meta["decay"], scenario.ihm_offline.k)
    extract = ab_cells if section == "ab" else ladder_cells
    return pool_runs([extract(run.result) for run in _runs(outcome)])


def _run_id(outcome) -> str:
    return getattr(outcome, "parent_run_id", None) or "-"


def _figures(section: str, outcome, source: str, image_dir: Path) -> dict[str, Path]:
    """Decay (IHM, per source), the A/B forest plot and DAC over days (first seed) as images."""
    from simulator.run.offline_ihm import SUBSETS
    from simulator.run.plots import plot_dac, plot_decay, plot_forest

    image_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "_", source.lower()).strip("_")
    out: dict[str, Path | None] = {}
    if section == "ihm_offline":
        out[f"IHM HitRate@10 per window, {source} (the paper's Fig. 3)"] = plot_decay(
            outcome.meta["long"], "transductive", image_dir / f"decay_{slug}.png", SUBSETS)
    elif section == "ab":
        first = _runs(outcome)[0].result
        control = first.scenario.control
        out[f"coldstart_ab lifts over base, {source}, seed {first.scenario.seed}"] = plot_forest(
            first.comparison, control, image_dir / f"forest_{slug}.png")
        out[f"Daily active creators per arm, {source}, seed {first.scenario.seed} (the paper's Fig. 7)"] = plot_dac(
            first.daily, control, image_dir / f"dac_{slug}.png")
    return {caption: path for caption, path in out.items() if path is not None}


def _row(claim: Claim, source: str, cell: Cell | None) -> dict:
    return {"table": claim.table, "row": claim.row, "source": source, "paper": claim.paper_text,
            "coldsim": format_cell(cell, claim.unit), "value": cell.value if cell else float("nan"),
            "lo": cell.lo if cell and cell.lo is not None else float("nan"),
            "hi": cell.hi if cell and cell.hi is not None else float("nan"),
            "verdict": verdict(claim, cell), "paper_in_ci": paper_in_interval(claim, cell)}


def format_cell(cell: Cell | None, unit: str) -> str:
    """``+12.3% [+1.0, +20.5]`` (relative), ``+3.1 pp [...]``, ``0.0421 [...]`` (absolute); '-' when missing."""
    if cell is None or not math.isfinite(cell.value):
        return "-"
    if unit == "abs":
        f = lambda x: f"{x:+.4f}"  # noqa: E731
    elif unit == "pp":
        f = lambda x: f"{100 * x:+.1f} pp"  # noqa: E731
    else:
        f = lambda x: f"{100 * x:+.1f}%"  # noqa: E731
    text = f(cell.value)
    if cell.lo is not None and cell.hi is not None and math.isfinite(cell.lo) and math.isfinite(cell.hi):
        text += f" [{f(cell.lo)}, {f(cell.hi)}]"
    return text


ROW_COLUMNS = ("table", "row", "source", "paper", "coldsim", "verdict", "paper_in_ci")


def rows_markdown(rows: pl.DataFrame) -> str:
    """The report's rows as one markdown table (the doc's, and what the command prints)."""
    head = "| paper table | row | source | paper | coldsim [95% CI] | verdict | paper's number in CI |"
    lines = [head, "|" + "---|" * len(ROW_COLUMNS)]
    for r in rows.iter_rows(named=True):
        lines.append("| " + " | ".join(str(r[c]) for c in ROW_COLUMNS) + " |")
    return "\n".join(lines)


def parse_rows(markdown: str) -> list[tuple[str, ...]]:
    """The rows table back from a report's markdown (tests compare it with :attr:`FidelityReport.rows`)."""
    lines = markdown.split("\n")
    start = lines.index(rows_markdown(pl.DataFrame({c: [] for c in ROW_COLUMNS})).split("\n")[0])
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        out.append(tuple(cell.strip() for cell in line.strip("|").split(" | ")))
    return out


def verdict_counts(rows: pl.DataFrame) -> pl.DataFrame:
    """Verdicts per source (columns in :data:`VERDICTS` order)."""
    counts = rows.group_by(["source", "verdict"], maintain_order=True).len()
    wide = counts.pivot(on="verdict", index="source", values="len").fill_null(0)
    return wide.select(["source", *[v for v in VERDICTS if v in wide.columns]])


def render(report: FidelityReport, budget_name: str, missing: list[str], doc_dir: Path | None = None) -> str:
    """``docs/fidelity.md``: how it was made, the verdicts, every row, what differs per source, the figures."""
    from simulator.run.fidelity_doc import render_doc

    return render_doc(report, budget_name, BUDGETS[budget_name], missing, rows_markdown(report.rows),
                      verdict_counts(report.rows) if report.rows.height else pl.DataFrame(), doc_dir)
