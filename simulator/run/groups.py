"""Groups of runs: seed replicates and parameter sweeps, one after another or concurrently on a Ray cluster.

Every member of a group is an ordinary A/B run (:func:`simulator.run.session.run_scenario`). With
``parallel=1`` they run one after another in this process, tracked live. With ``parallel=P > 1`` each runs in a
Ray task of its own, at most ``P`` at a time and as many as the cluster's CPUs allow: an in-process run
(``--runtime local``) takes one CPU; a Ray-runtime run is a driver of its own (its own Serve app, named per run,
and its own TorchTrainer), so its task takes none and its replicas and Train worker are scheduled like any run's.
The tasks run without MLflow and return what each day logged; this process records every run once all are done,
in the group's order, exactly as a live run would be recorded, so MLflow never sees concurrent writers and a
parallel group reads the same as a sequential one. The same seeds give the same metrics either way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import polars as pl

from simulator.core.config import Scenario
from simulator.run.report import format_replicates_markdown
from simulator.run.session import (DEFAULT_TRACKING_URI, RunOptions, RunOutcome, record_finished, resolve_scenario,
                                   run_scenario)
from simulator.run.sweep import SweepAxis, format_sweep_markdown, point_label, sweep_points, sweep_table, with_point

REPLICATE_GROUP_TAG = "coldsim.replicate_group"
SWEEP_TAG = "coldsim.sweep"


@dataclass(frozen=True)
class Job:
    """One run of a group: its options (seed, salt, sweep point) and the MLflow tags that place it."""

    opts: RunOptions
    tags: dict[str, str]


def _run_in_task(scenario: Scenario, job: Job) -> tuple[RunOutcome, list[tuple[int, dict]]]:
    days: list[tuple[int, dict]] = []
    outcome = run_scenario(scenario, job.opts, tracking_uri=None, tags=job.tags,
                           day_log=lambda day, per_arm: days.append((day, per_arm)))
    return outcome, days


def run_jobs(scenario: Scenario, jobs: list[Job], parallel: int = 1, tracking_uri: str | None = DEFAULT_TRACKING_URI,
             progress_factory=None) -> list[RunOutcome]:
    """Run ``jobs`` (one after another, or ``parallel`` at a time in Ray tasks) and return their outcomes in job
    order. A failed run does not lose the others: every finished run is recorded, then the failure is raised
    naming the runs that failed."""
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    if parallel == 1 or len(jobs) == 1:
        return [run_scenario(scenario, job.opts, tracking_uri, progress_factory, tags=job.tags) for job in jobs]
    if any(job.opts.http for job in jobs):
        raise ValueError("--http serves one run's arms on one port; it cannot be combined with --parallel > 1")
    import ray

    from simulator.run.ray_runtime import init_ray, start_serve

    owns = init_ray(jobs[0].opts.address)
    try:
        if jobs[0].opts.runtime == "ray":  # started once here: concurrent serve.start calls race for its controller
            start_serve({"location": "NoServer"})
        cpus = 1 if jobs[0].opts.runtime == "local" else 0
        task = ray.remote(num_cpus=cpus, max_retries=0)(_run_in_task)
        waiting, running, done = list(range(len(jobs))), {}, {}
        with (progress_factory() if progress_factory is not None else _NoProgress()) as bar:
            progress = bar.add_task(f"runs ({parallel} at a time)", total=len(jobs))
            while waiting or running:
                while waiting and len(running) < parallel:
                    index = waiting.pop(0)
                    running[task.remote(scenario, jobs[index])] = index
                ready, _ = ray.wait(list(running), num_returns=1)
                index = running.pop(ready[0])
                try:
                    done[index] = ray.get(ready[0])
                except Exception as exc:  # kept; raised once the others are recorded
                    done[index] = exc
                bar.advance(progress)
    finally:
        if owns:
            ray.shutdown()
    outcomes, failed = [], []
    for index, job in enumerate(jobs):
        value = done[index]
        if isinstance(value, Exception):
            failed.append(f"seed {job.opts.seed}{_point_text(job)}: {type(value).__name__}: {value}")
            continue
        outcome, days = value
        if tracking_uri is not None:
            outcome = replace(outcome, parent_run_id=record_finished(scenario, job.opts, outcome, days, tracking_uri,
                                                                     job.tags))
        outcomes.append(outcome)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} runs failed ({len(outcomes)} finished and recorded): "
                           + "; ".join(failed))
    return outcomes


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def advance(self, *args):
        pass


def _point_text(job: Job) -> str:
    return f" at {point_label(job.opts.overrides)}" if job.opts.overrides else ""


def _seeds(scenario: Scenario, opts: RunOptions, replicates: int) -> list[int]:
    if replicates < 1:
        raise ValueError(f"--replicates must be >= 1, got {replicates}")
    if scenario.protocol != "ab":
        raise ValueError(f"scenario '{scenario.name}' is an offline protocol; replicates and sweeps apply to A/B runs")
    base = opts.seed if opts.seed is not None else scenario.seed
    return [base + i for i in range(replicates)]


def _replicate_jobs(scenario: Scenario, opts: RunOptions, seeds: list[int], tags: dict[str, str]) -> list[Job]:
    # each replicate is a new randomisation too (salt '<salt>-<seed>'): with one salt every seed would share one
    # draw of the creator and user buckets, whose luck is the largest part of a lift's variance (docs/metrics.md)
    salt = opts.salt if opts.salt is not None else scenario.salt
    return [Job(replace(opts, seed=seed, salt=f"{salt}-{seed}"), {**tags, "coldsim.replicate_seed": str(seed)})
            for seed in seeds]


@dataclass
class ReplicatesOutcome:
    """Seed replicates of an A/B run: each run, the lifts pooled over seeds and their MLflow run."""

    runs: list[RunOutcome]
    seeds: list[int]
    table: pl.DataFrame  # simulator.run.replicates.aggregate_lifts
    markdown: str
    parent_run_id: str | None  # the MLflow run holding the pooled table


def _pool(scenario: Scenario, opts: RunOptions, runs: list[RunOutcome], seeds: list[int], group: str,
          tracking_uri: str | None, extra_tags: dict[str, str] | None = None) -> ReplicatesOutcome:
    from simulator.run.replicates import aggregate_lifts

    resolved = resolve_scenario(scenario, opts)
    table = aggregate_lifts([run.result.comparison for run in runs], resolved.metrics.ci_level)
    markdown = format_replicates_markdown(table, seeds, resolved.metrics.ci_level)
    parent = None
    if tracking_uri is not None:
        from simulator.run.tracking import RunTracker

        tracker = RunTracker(tracking_uri, opts.experiment)
        parent = tracker.start(f"{resolved.name}-replicates",
                               {"replicates": len(seeds), "seeds": ",".join(map(str, seeds)), "scenario": resolved.name,
                                "scale": opts.scale or "default"},
                               sorted(set(table["arm"].to_list())), tags={REPLICATE_GROUP_TAG: group, **(extra_tags or {})})
        tracker.finish_replicates(table, markdown, len(seeds), resolved.control, resolved.metrics.ci_level)
    return ReplicatesOutcome(runs=runs, seeds=seeds, table=table, markdown=markdown, parent_run_id=parent)


def run_replicates(scenario: Scenario, opts: RunOptions, replicates: int,
                   tracking_uri: str | None = DEFAULT_TRACKING_URI, progress_factory=None,
                   parallel: int = 1) -> ReplicatesOutcome:
    """Run ``scenario`` with ``replicates`` consecutive seeds (from ``opts.seed`` or the scenario's), ``parallel``
    at a time (:func:`run_jobs`), and pool the lifts over seeds (:mod:`simulator.run.replicates`). Each replicate
    is an ordinary run (MLflow parent run tagged with the group id); the pooled table goes to one more run,
    ``<scenario>-replicates``."""
    seeds = _seeds(scenario, opts, replicates)
    group = uuid.uuid4().hex[:12]
    runs = run_jobs(scenario, _replicate_jobs(scenario, opts, seeds, {REPLICATE_GROUP_TAG: group}), parallel,
                    tracking_uri, progress_factory)
    return _pool(scenario, opts, runs, seeds, group, tracking_uri)


@dataclass
class SweepOutcome:
    """A sweep: each point's run (or replicate group), the points' lifts in one table and its MLflow run."""

    points: list[dict]
    runs: list[list[RunOutcome]]  # per point, its runs in seed order
    pooled: list[ReplicatesOutcome] | None  # per point, with replicates
    table: pl.DataFrame  # simulator.run.sweep.sweep_table
    markdown: str
    parent_run_id: str | None


def run_sweep(scenario: Scenario, opts: RunOptions, axes: list[SweepAxis], replicates: int = 1,
              tracking_uri: str | None = DEFAULT_TRACKING_URI, progress_factory=None, parallel: int = 1) -> SweepOutcome:
    """Run ``scenario`` at every point of the grid ``axes`` (:mod:`simulator.run.sweep`), each with ``replicates``
    seeds, all runs ``parallel`` at a time; one table of every point's lifts (pooled over seeds with replicates),
    recorded as ``<scenario>-sweep`` beside the runs (tagged with the sweep id and their point)."""
    points = sweep_points(axes)
    seeds = _seeds(scenario, opts, replicates)
    point_opts = [replace(opts, overrides=with_point(opts.overrides, point)) for point in points]
    for options in point_opts:  # every point validated before anything runs
        resolve_scenario(scenario, options)
    sweep = uuid.uuid4().hex[:12]
    groups = [uuid.uuid4().hex[:12] for _ in points]
    point_tags = [{SWEEP_TAG: sweep, "coldsim.sweep_point": point_label(point)} for point in points]
    jobs = [job for options, tags, group in zip(point_opts, point_tags, groups)
            for job in _replicate_jobs(scenario, options, seeds, {**tags, REPLICATE_GROUP_TAG: group})]
    runs = run_jobs(scenario, jobs, parallel, tracking_uri, progress_factory)
    per_point = [runs[i * len(seeds):(i + 1) * len(seeds)] for i in range(len(points))]
    pooled = None
    if replicates > 1:
        pooled = [_pool(scenario, options, point_runs, seeds, group, tracking_uri, tags)
                  for options, point_runs, group, tags in zip(point_opts, per_point, groups, point_tags)]
        tables = [group.table.drop("lifts") for group in pooled]
    else:
        tables = [point_runs[0].result.comparison for point_runs in per_point]
    table = sweep_table(points, tables)
    markdown = format_sweep_markdown(table, "mean_lift" if replicates > 1 else "lift")
    parent = None
    if tracking_uri is not None:
        from simulator.run.tracking import RunTracker

        resolved = resolve_scenario(scenario, opts)
        tracker = RunTracker(tracking_uri, opts.experiment)
        lift = "mean_lift" if replicates > 1 else "lift"
        per_arm: dict[str, dict[str, float]] = {}
        for index, point in enumerate(points):  # per arm child run: lift.p<i>.<metric> (the point's label in params)
            for row in table.filter(pl.col("point") == point_label(point)).iter_rows(named=True):
                if row[lift] is not None and row[lift] == row[lift]:
                    per_arm.setdefault(row["arm"], {})[f"lift.p{index}.{row['metric']}"] = row[lift]
        params = {"sweep": "; ".join(f"{a.path}={','.join(map(str, a.values))}" for a in axes),
                  "points": len(points), "replicates": replicates, "seeds": ",".join(map(str, seeds)),
                  "scenario": resolved.name, "scale": opts.scale or "default"}
        params.update({f"point.p{index}": point_label(point) for index, point in enumerate(points)})
        parent = tracker.start(f"{resolved.name}-sweep", params, sorted(per_arm), tags={SWEEP_TAG: sweep})
        tracker.finish_tables(per_arm, {"points": float(len(points)), "replicates": float(replicates)},
                              {"sweep.md": markdown, "sweep.csv": table.write_csv()})
    return SweepOutcome(points=points, runs=per_point, pooled=pooled, table=table, markdown=markdown,
                        parent_run_id=parent)
