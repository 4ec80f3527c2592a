"""The offline protocols by name (``Scenario.protocol``): each runs on a log and hands back its tables for printing
and tracking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from simulator.core.config import Scenario
from simulator.core.schema import Log
from simulator.run.report import format_ihm_decay, format_ihm_table, format_next_user_floors, format_next_user_table


@dataclass(frozen=True)
class OfflineOutcome:
    """What an offline protocol measured: its table, as markdown too, the figures behind it and a summary line;
    extra text tables and plot files for MLflow. :func:`simulator.run.session.run_offline` adds the MLflow
    parent run and the wall time."""

    table: pl.DataFrame  # the protocol's layout
    markdown: str  # the table as markdown (printed, logged as table1.md)
    meta: dict  # scalars become parent metrics; ``figures`` holds the per-arm metrics
    summary: str  # one line on what was measured (sample counts, split), printed under the table
    tables: dict[str, str] = field(default_factory=dict)  # extra text artifacts, {"name.md": text}
    plots: dict[str, Path] = field(default_factory=dict)  # plot files to log under plots/
    parent_run_id: str | None = None
    wall_s: float = 0.0


Progress = Callable[[str], None] | None  # called with each variant's name when it is done


def next_user_protocol(scenario: Scenario, log: Log, days: int | None, progress: Progress,
                       out_dir: Path, replicates: int = 1) -> OfflineOutcome:
    """Next-User's offline ablation (:mod:`simulator.run.offline_next_user`): Table 1 beside the floors."""
    from simulator.run.offline_next_user import run_next_user_offline

    table, meta = run_next_user_offline(scenario, log, days, progress=progress, replicates=replicates)
    ks = scenario.offline.recall_k
    random_recall = ", ".join(f"@{k}: {meta[f'random_recall_{k}']:.4f}" for k in ks)
    summary = (f"{_seeds(meta)}{meta['train_samples']:,} training samples, {meta['test_events']:,} held-out events, "
               f"{meta['users']:,} candidate users (random recall {random_recall}); split after day "
               f"{meta['split_day']} of {meta['days']}")
    floors = format_next_user_floors(meta["floors"], {f"recall_{k}": meta[f"random_recall_{k}"] for k in ks}, ks)
    markdown = (format_next_user_table(table, scenario.control, ks) + "\nFloors on the same events and candidates:\n\n"
                + floors)
    return OfflineOutcome(table, markdown, meta, summary, {"floors.md": floors}, {})


def ihm_protocol(scenario: Scenario, log: Log, days: int | None, progress: Progress, out_dir: Path,
                 replicates: int = 1) -> OfflineOutcome:
    """IHM's offline decay protocol (:mod:`simulator.run.offline_ihm`): Table 1, HitRate per window, decay slopes."""
    from simulator.run.offline_ihm import SUBSETS, run_ihm_offline
    from simulator.run.plots import plot_decay

    table, meta = run_ihm_offline(scenario, log, days, progress=progress, replicates=replicates)
    config = scenario.ihm_offline
    decay_md = format_ihm_decay(meta["long"], meta["decay"], SUBSETS)
    summary = (f"{_seeds(meta)}{meta['train_positives']:,} training positives before the median timestamp, "
               f"{meta['test_events']:,} "
               f"test positives ({meta['test_tail_events']:,} on tail items) in {config.windows} windows "
               + _windows(config, meta) + " (" + ", ".join(f"{n:,}" for n in meta['window_events'])
               + f" positives); {meta['tail_items']:,} of {meta['items']:,} items "
               f"are tail (< {config.tail_max} training positives); {_epochs(config, meta)}; Table 1 is window 1; "
               f"HitRate@{config.k} per window (tail / head) and decay slopes:\n{decay_md}")
    tables = {"decay.md": decay_md, "windows.csv": meta["long"].write_csv(), "decay.csv": meta["decay"].write_csv()}
    plots = {"decay.png": plot_decay(meta["long"], scenario.control, out_dir / "decay.png", SUBSETS, config.k)}
    return OfflineOutcome(table, format_ihm_table(table, config.k, SUBSETS), meta, summary, tables, plots)


def _epochs(config, meta: dict) -> str:
    """Each model's training budget, for the IHM protocol's summary line."""
    chosen = meta.get("epoch_selection") or {}
    if config.epoch_selection != "validation" or not chosen:
        return f"every model trained {config.epochs} epochs"
    per_model = ", ".join(f"{model} {'/'.join(str(s['epochs']) for s in seeds)}" for model, seeds in chosen.items())
    share = f"{config.validation_share:.0%}"
    return (f"epochs chosen on the latest {share} of the training positives (validation HitRate@{config.k}, at most "
            f"{config.epochs}), then retrained on all of them: {per_model}")


def _windows(config, meta: dict) -> str:
    """How the IHM protocol's windows were cut, for its summary line."""
    edges = meta["window_edges_days"]
    if config.windows_by == "count":
        return "of about equal positives (days " + ", ".join(f"{e:.1f}" for e in edges) + " after the split)"
    scope = f"over the first {edges[-1]:.1f} days after the split" if config.windows_by == "horizon" else ""
    return f"of {meta['window_days']:.1f} days{' ' + scope if scope else ''}"


def _seeds(meta: dict) -> str:
    """The summary's opening when the figures are means over seeds (each seed's sample sizes follow)."""
    seeds = meta.get("seeds", [])
    return f"means over seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} replicates), per seed: " if len(seeds) > 1 else ""


OFFLINE_PROTOCOLS: dict[str, Callable[..., OfflineOutcome]] = {
    "next_user_offline": next_user_protocol,
    "ihm_offline": ihm_protocol,
}
"""Scenario.protocol -> its offline run ``(scenario, log, days, progress, out_dir, replicates=1)`` -> table, markdown,
summary, artifacts: the only place these names map to code."""
