"""Running scenarios from options to MLflow: an A/B run (or its resume), an offline protocol, seed replicates.

The CLI is a thin layer over :func:`run_scenario`, :func:`run_offline` and (for seed replicates and sweeps)
:mod:`simulator.run.groups`; tests call
them directly. The log comes from :mod:`simulator.run.logs`, the tables from :mod:`simulator.run.report`, and
MLflow is written by :mod:`simulator.run.tracking`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from simulator.core.config import RuntimeKind, Scenario
from simulator.core.storage import Location
from simulator.run.checkpoint import has_checkpoint, remove_checkpoints
from simulator.run.logs import describe_log, load_ab_log, load_log, warn
from simulator.run.loop import Simulation
from simulator.run.offline import OFFLINE_PROTOCOLS, OfflineOutcome
from simulator.run.report import write_result_tables
from simulator.run.results import SimulationResult
from simulator.run.runtime import LocalRuntime
from simulator.run.sweep import apply_point

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
RUN_DIR_TAG = "coldsim.run_dir"
OPTIONS_TAG = "coldsim.options"


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for on the command line (stored with the run so ``--resume`` can rebuild it)."""

    scenario: str
    scale: str | None = None
    days: int | None = None
    seed: int | None = None
    log: str | None = None
    runtime: RuntimeKind = "ray"
    address: str | None = None
    http: bool = False
    run_root: str = "coldsim_runs"  # a local directory or a URI (s3://, gs://, file://...): --storage
    experiment: str = "coldsim"
    salt: str | None = None  # the co-diversion salt (None: the scenario's); replicates re-randomise with it
    start: str | None = None  # first replayed day of a real log (YYYY-MM-DD); None: the densest window (simulator/core/window.py)
    keep_checkpoints: bool = False  # keep the checkpoints of a run that finished (deleted by default)
    keep_last: int = 1  # checkpoints kept on disk during the run (the latest days)
    overrides: dict | None = None  # dotted scenario path -> value, applied last (a sweep's point, simulator/run/sweep.py)


def resolve_scenario(scenario: Scenario, opts: RunOptions) -> Scenario:
    """The scenario at the options' scale, with their days, seed and co-diversion salt."""
    resolved = scenario.at_scale(opts.scale).with_overrides(days=opts.days, seed=opts.seed)
    resolved = resolved._revalidated({"salt": opts.salt}) if opts.salt is not None else resolved
    return apply_point(resolved, opts.overrides) if opts.overrides else resolved


def plan_run(scenario: Scenario, opts: RunOptions, replicates: int = 1) -> str:
    """What a run with these options would do, after validating everything that needs no simulation: the
    scale, days and seed, the log spec (its kind, options and path; a synthetic platform's overrides) and the
    runtime. ``simulate --dry-run`` prints it; the docs' commands are checked with it (tests/test_docs.py).
    Raises ``ValueError`` naming the problem, as the run would."""
    resolved = resolve_scenario(scenario, opts)
    world = describe_log(opts.log, opts.start, resolved)
    arms = ", ".join(f"{arm.name}({arm.kind}, {arm.share:.0%})" for arm in resolved.arms)
    where = opts.address or ("in-process" if opts.runtime == "local" else "a local Ray cluster")
    return (f"dry run: scenario {resolved.name} ({resolved.protocol}), scale {opts.scale or 'default'}, "
            f"{resolved.days} days, seed {resolved.seed}{f', {replicates} replicates' if replicates > 1 else ''}\n"
            f"  arms: {arms}; control {resolved.control}\n  {world}\n"
            f"  runtime {opts.runtime} on {where}{', HTTP on 127.0.0.1' if opts.http else ''}"
            f"{f', every arm in {resolved.serve.arm_replicas} shards' if resolved.serve.arm_replicas > 1 else ''}")


def runtime_factory(opts: RunOptions, serve_cfg=None):
    """What builds the run's runtime from its ``RuntimeSpec``: in-process, or on Ray (a local or joined cluster)."""
    if opts.runtime == "local":
        return LocalRuntime
    from simulator.run.ray_runtime import RayRuntime

    return lambda spec: RayRuntime(spec, address=opts.address, serve_cfg=serve_cfg, http=opts.http)


@dataclass
class RunOutcome:
    """An A/B run: what it measured, its MLflow parent run and its wall time."""

    result: SimulationResult
    parent_run_id: str | None
    wall_s: float
    run_dir: str | None = None


class _DayLog:
    """Stands in for the tracker of a run recorded later (:func:`record_finished`): keeps what each day logs."""

    def __init__(self, sink):
        self.sink = sink

    def log_day(self, day: int, per_arm) -> None:
        self.sink(day, per_arm)


def _run_params(resolved: Scenario, opts: RunOptions) -> dict:
    from simulator.run.tracking import flatten_params

    params = flatten_params(resolved, exclude={"scales"})
    params.update({"log": opts.log or "synthetic", "runtime": opts.runtime, "scale": opts.scale or "default"})
    return params


def _run_tags(run_dir: Location, opts: RunOptions, tags: dict[str, str] | None, resolved: Scenario) -> dict[str, str]:
    """The parent's tags, which its child runs copy: where the run lives, how to resume it, and what it is (scenario,
    seed, scale, log: columns of MLflow's runs table and of ``mlflow.search_runs``)."""
    from simulator.run.tracking_names import LOG_TAG, SCALE_TAG, SCENARIO_TAG, SEED_TAG

    return {RUN_DIR_TAG: run_dir.uri, OPTIONS_TAG: json.dumps(opts.__dict__), SCENARIO_TAG: resolved.name,
            SEED_TAG: str(resolved.seed), SCALE_TAG: opts.scale or "default", LOG_TAG: opts.log or "synthetic",
            **(tags or {})}


def _finish(tracker, resolved: Scenario, result: SimulationResult, run_dir: Location) -> None:
    """Log the result with the scenario and the tables as artifacts (written into a local run directory, kept
    there; through a temporary directory when the run's storage is remote)."""
    with tempfile.TemporaryDirectory(prefix="coldsim-result-") as tmp:
        local = Path(run_dir.path) if run_dir.local else Path(tmp)
        local.mkdir(parents=True, exist_ok=True)
        (local / "scenario.json").write_text(resolved.model_dump_json(indent=2))
        tracker.finish_result(result, {"config/scenario.json": local / "scenario.json",
                                       "tables": write_result_tables(result, local / "tables")})


def record_finished(scenario: Scenario, opts: RunOptions, outcome: RunOutcome, days: list[tuple[int, dict]],
                    tracking_uri: str, tags: dict[str, str] | None = None) -> str:
    """Record in MLflow a run that ran without tracking (in a Ray task, :mod:`simulator.run.groups`), exactly as
    :func:`run_scenario` would have live: its parameters and tags, ``days`` (what each day logged, in order), the
    result. Returns the parent run id."""
    from simulator.run.tracking import RunTracker

    resolved = resolve_scenario(scenario, opts)
    tracker = RunTracker(tracking_uri, opts.experiment)
    run_dir = Location.of(outcome.run_dir)
    parent = tracker.start(resolved.name, _run_params(resolved, opts), [arm.name for arm in resolved.arms],
                           tags=_run_tags(run_dir, opts, tags, resolved))
    for day, per_arm in days:
        tracker.log_day(day, per_arm)
    _finish(tracker, resolved, outcome.result, run_dir)
    return parent


def run_offline(scenario: Scenario, opts: RunOptions, tracking_uri: str | None = DEFAULT_TRACKING_URI,
                progress_factory=None, replicates: int = 1) -> OfflineOutcome:
    """An offline protocol (``scenario.protocol``, :data:`~simulator.run.offline.OFFLINE_PROTOCOLS`) on the run's
    log, recorded in MLflow like an A/B run; ``replicates`` seeds pooled (means, two-level bootstrap intervals)."""
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    start = time.perf_counter()
    resolved = resolve_scenario(scenario, opts)
    if resolved.protocol not in OFFLINE_PROTOCOLS:
        raise ValueError(f"scenario '{resolved.name}': protocol '{resolved.protocol}' is not offline; "
                         f"known: {sorted(OFFLINE_PROTOCOLS)}")
    protocol = OFFLINE_PROTOCOLS[resolved.protocol]
    if opts.start is not None:
        raise ValueError(f"--start picks an A/B run's window; the offline protocol '{resolved.protocol}' splits the whole log")
    log = load_log(opts.log, resolved)
    tracker = None
    if tracking_uri is not None:
        from simulator.run.tracking import RunTracker, flatten_params

        tracker = RunTracker(tracking_uri, opts.experiment)
        params = flatten_params(resolved, exclude={"scales"}) | {"log": opts.log or "synthetic",
                                                                 "scale": opts.scale or "default"}
        tracker.start(resolved.name, params, [arm.name for arm in resolved.arms],
                      tags={OPTIONS_TAG: json.dumps(opts.__dict__)})
    try:
        with tempfile.TemporaryDirectory(prefix="coldsim-offline-") as tmp:
            if progress_factory is not None:
                with progress_factory() as bar:
                    task = bar.add_task("variants", total=len(resolved.arms) * replicates)
                    outcome = protocol(resolved, log, opts.days, lambda _: bar.advance(task), Path(tmp), replicates)
            else:
                outcome = protocol(resolved, log, opts.days, None, Path(tmp), replicates)
            if tracker is not None:
                tracker.finish_offline(outcome)
    except BaseException as exc:
        if tracker is not None:
            tracker.fail(f"{type(exc).__name__}: {exc}")
        raise
    return replace(outcome, parent_run_id=tracker.parent_run_id if tracker else None,
                   wall_s=time.perf_counter() - start)


def run_scenario(scenario: Scenario, opts: RunOptions, tracking_uri: str | None = DEFAULT_TRACKING_URI,
                 progress_factory=None, resume_run_id: str | None = None, stop_after_day: int | None = None,
                 before_shutdown=None, tags: dict[str, str] | None = None, day_log=None) -> RunOutcome:
    """Run (or resume) ``scenario``; records it in MLflow when ``tracking_uri`` is given.

    ``day_log(day, per_arm)``, without ``tracking_uri``: receives what each day would log to MLflow (for
    :func:`record_finished`).
    ``stop_after_day`` ends the run after that day as an interrupted run would (for tests of resume). A run that
    completes deletes its checkpoints unless ``opts.keep_checkpoints``; an interrupted one keeps them.
    ``before_shutdown(sim)`` is called while the runtime is still up (to query the live arms).
    """
    start = time.perf_counter()
    tracker = None
    if tracking_uri is not None:
        from simulator.run.tracking import RunTracker

        tracker = RunTracker(tracking_uri, opts.experiment)
    resolved = resolve_scenario(scenario, opts)
    if resume_run_id is not None:
        assert tracker is not None, "resume needs MLflow tracking"
        run_dir = Location.of(tracker.client.get_run(resume_run_id).data.tags[RUN_DIR_TAG])
    else:
        run_dir = Location.of(opts.run_root) / f"{resolved.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log, problems = load_ab_log(opts.log, opts.start, resolved)
    warn(problems)
    sim = Simulation(resolved, log, runtime_factory(opts, resolved.serve), run_dir,
                     tracker=tracker if tracker is not None or day_log is None else _DayLog(day_log),
                     keep_last=opts.keep_last)
    parent = None
    try:
        if tracker is not None:
            if resume_run_id is not None:
                tracker.resume(resume_run_id)
                parent = resume_run_id
            else:
                parent = tracker.start(resolved.name, _run_params(resolved, opts), [arm.name for arm in resolved.arms],
                                       tags=_run_tags(run_dir, opts, tags, resolved))
        if resume_run_id is not None:
            if has_checkpoint(run_dir):
                sim.restore_latest()
            else:  # stopped before its first checkpoint: every day is played again, in the same run directory
                logger.warning("run %s has no checkpoint yet: resuming from its first day", resume_run_id)
        if stop_after_day is not None:
            sim.days = min(sim.days, stop_after_day + 1)
        result = sim.run(progress_factory=progress_factory)
        if before_shutdown is not None:
            before_shutdown(sim)
        if tracker is not None and stop_after_day is None:
            _finish(tracker, resolved, result, run_dir)
        if stop_after_day is None and not opts.keep_checkpoints:
            remove_checkpoints(run_dir)  # the run is complete: nothing left to resume
    except BaseException as exc:
        if tracker is not None:
            tracker.fail(f"{type(exc).__name__}: {exc} (checkpoints in {run_dir}; resume with --resume {parent})")
        raise
    finally:
        sim.runtime.shutdown()
    return RunOutcome(result=result, parent_run_id=parent, wall_s=time.perf_counter() - start, run_dir=run_dir.uri)


def options_of_run(tracking_uri: str, run_id: str) -> RunOptions:
    """The options a run was started with (from its MLflow tags)."""
    from mlflow import MlflowClient

    try:
        tags = MlflowClient(tracking_uri).get_run(run_id).data.tags
    except Exception as exc:
        raise ValueError(f"cannot resume: no MLflow run '{run_id}' at {tracking_uri} ({exc})") from None
    if OPTIONS_TAG not in tags:
        raise ValueError(f"cannot resume: run '{run_id}' is not a coldsim parent run")
    return RunOptions(**json.loads(tags[OPTIONS_TAG]))
