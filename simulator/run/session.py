"""One scenario run from options to MLflow: load the log, start the runtime, simulate, track, resume.

The CLI is a thin layer over :func:`run_scenario`; tests call it directly.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from simulator.core.config import RuntimeKind, Scenario, SyntheticConfig
from simulator.run.loop import Simulation, SimulationResult
from simulator.run.runtime import LocalRuntime
from simulator.core.schema import Log

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
    run_root: str = "coldsim_runs"
    experiment: str = "coldsim"
    salt: str | None = None  # the co-diversion salt (None: the scenario's); replicates re-randomise with it
    start: str | None = None  # first replayed day of a real log (YYYY-MM-DD); None: the densest window (simulator/core/window.py)


def resolve_scenario(scenario: Scenario, opts: RunOptions) -> Scenario:
    sc = scenario.at_scale(opts.scale).with_overrides(days=opts.days, seed=opts.seed)
    return sc._revalidated({"salt": opts.salt}) if opts.salt is not None else sc


def _synthetic_config(scenario: Scenario, options: dict[str, str]) -> SyntheticConfig:
    """The scenario's synthetic platform with ``synthetic:?n_users=5000&days=7``-style overrides (validated)."""
    data = scenario.synthetic.model_dump()
    unknown = sorted(set(options) - set(data))
    if unknown:
        raise ValueError(f"synthetic platform: unknown options {unknown}; allowed: {sorted(data)}")
    data.update(options)
    return SyntheticConfig.model_validate(data)


def _synthetic_log(spec, scenario: Scenario) -> Log:
    from simulator.sources.synthetic import generate_synthetic

    return generate_synthetic(_synthetic_config(scenario, spec.options), scenario.seed)


def _kuairand_log(spec, scenario: Scenario) -> Log:
    """KuaiRand-Pure's real video->author catalogue (and users' activity levels) driving the synthetic platform."""
    from simulator.sources.kuairand import USER_FILE, load_kuairand_catalogue, load_kuairand_users
    from simulator.sources.synthetic import generate_synthetic

    root = Path(spec.path)
    catalogue = load_kuairand_catalogue(root)
    users_file = (root if root.is_dir() else root.parent) / USER_FILE
    activity = load_kuairand_users(users_file)["activity"].to_numpy() if users_file.exists() else None
    return generate_synthetic(_synthetic_config(scenario, spec.options), scenario.seed, catalogue=catalogue,
                              user_activity=activity)


def _real_log(spec, scenario: Scenario) -> Log:
    from simulator.sources.spec import load_real_log

    return load_real_log(spec)


LOG_BUILDERS = {"synthetic": _synthetic_log, "kuairand": _kuairand_log, "movielens": _real_log, "tabular": _real_log}
"""Log kind -> how a run gets its log (the only place these names map to code outside simulator.sources.spec)."""


def load_log(spec: str | None, scenario: Scenario) -> Log:
    """The run's log: the synthetic platform by default, a KuaiRand catalogue driving it, or a real log."""
    from simulator.sources.spec import parse_log_spec

    parsed = parse_log_spec(spec or "synthetic")
    return LOG_BUILDERS[parsed.kind](parsed, scenario)


def plan_run(scenario: Scenario, opts: RunOptions, replicates: int = 1) -> str:
    """What a run with these options would do, after validating everything that needs no simulation: the
    scale, days and seed, the log spec (its kind, options and path; a synthetic platform's overrides) and the
    runtime. ``simulate --dry-run`` prints it; the docs' commands are checked with it (tests/test_docs.py).
    Raises ``ValueError`` naming the problem, as the run would."""
    from simulator.sources.spec import parse_log_spec

    sc = resolve_scenario(scenario, opts)
    spec = parse_log_spec(opts.log or "synthetic")
    if spec.kind in ("synthetic", "kuairand"):
        if opts.start is not None:
            raise ValueError(f"--start picks the window of a real log; the {spec.kind} platform starts at its own day 0")
        syn = _synthetic_config(sc, spec.options)
        world = (f"synthetic platform: {syn.n_users:,} users, {syn.n_creators:,} creators, {syn.days} days, "
                 f"{syn.slots_per_upload:,.0f} slots per upload")
        if spec.kind == "kuairand":
            world += f", KuaiRand catalogue {spec.path}"
    else:  # a real log is read (and checked) in full: a malformed file fails here, not an hour into a run
        from simulator.core.window import iso_day

        if sc.protocol == "ab":
            log, problems = load_ab_log(opts, sc)
        else:
            log, problems = load_log(opts.log, sc), []
        world = (f"{spec.kind} log {spec.path}: {log.events.num_rows:,} events, {log.items.num_rows:,} items, "
                 f"{log.n_days} days from {iso_day(log.t0)}" + (f"; replays {log.meta['window']}" if "window" in log.meta else ""))
        world += "".join(f"\n  warning: {w}" for w in problems)
    arms = ", ".join(f"{a.name}({a.kind}, {a.share:.0%})" for a in sc.arms)
    where = opts.address or ("in-process" if opts.runtime == "local" else "a local Ray cluster")
    return (f"dry run: scenario {sc.name} ({sc.protocol}), scale {opts.scale or 'default'}, {sc.days} days, "
            f"seed {sc.seed}{f', {replicates} replicates' if replicates > 1 else ''}\n  arms: {arms}; control "
            f"{sc.control}\n  {world}\n  runtime {opts.runtime} on {where}{', HTTP on 127.0.0.1' if opts.http else ''}")


def load_ab_log(opts: RunOptions, scenario: Scenario) -> tuple[Log, list[str]]:
    """An A/B run's log: a real log cut to its window (``opts.start``, else the densest; ``simulator.core.window``),
    and the warnings that make its read-out doubtful (sparse days, no interactions, too few units per arm)."""
    from simulator.sources.spec import parse_log_spec
    from simulator.core.window import choose_window, log_warnings

    kind = parse_log_spec(opts.log or "synthetic").kind
    log = load_log(opts.log, scenario)
    if kind in ("movielens", "tabular"):
        log = choose_window(log, scenario.days, opts.start)
    elif opts.start is not None:
        raise ValueError(f"--start picks the window of a real log; the {kind} platform starts at its own day 0")
    return log, log_warnings(log, min(scenario.days, log.n_days), [a.share for a in scenario.arms])


def _warn(messages: list[str]) -> None:
    import warnings

    from simulator.core.window import ColdsimWarning

    for m in messages:
        warnings.warn(m, ColdsimWarning, stacklevel=3)


def runtime_factory(opts: RunOptions, serve_cfg=None):
    if opts.runtime == "local":
        return LocalRuntime
    from simulator.run.ray_runtime import RayRuntime

    return lambda spec: RayRuntime(spec, address=opts.address, serve_cfg=serve_cfg, http=opts.http)


@dataclass
class RunOutcome:
    result: SimulationResult
    parent_run_id: str | None
    wall_s: float


@dataclass
class OfflineOutcome:
    table: "object"  # polars DataFrame in the protocol's layout
    markdown: str
    meta: dict
    parent_run_id: str | None
    wall_s: float
    summary: str = ""  # one line on what was measured (sample counts, split), printed under the table


@dataclass(frozen=True)
class OfflineReport:
    """What an offline protocol hands back for printing and tracking."""

    table: "object"  # polars DataFrame in the protocol's layout
    markdown: str  # the table as markdown (printed, logged as table1.md)
    meta: dict  # scalars become parent metrics; ``figures`` holds the per-arm metrics
    summary: str
    tables: dict[str, str]  # extra text artifacts, {"name.md": text}
    plots: dict[str, Path]  # plot files to log under plots/


def _next_user_protocol(sc: Scenario, log: Log, days: int | None, progress, out_dir: Path) -> OfflineReport:
    from simulator.run.offline_next_user import format_floors, format_table, run_next_user_offline

    table, meta = run_next_user_offline(sc, log, days, progress=progress)
    ks = sc.offline.recall_k
    rnd = ", ".join(f"@{k}: {meta[f'random_recall_{k}']:.4f}" for k in ks)
    summary = (f"{meta['train_samples']:,} training samples, {meta['test_events']:,} held-out events, "
               f"{meta['users']:,} candidate users (random recall {rnd}); split after day "
               f"{meta['split_day']} of {meta['days']}")
    floors = format_floors(meta["floors"], {f"recall_{k}": meta[f"random_recall_{k}"] for k in ks}, ks)
    markdown = format_table(table, sc.control, ks) + "\nFloors on the same events and candidates:\n\n" + floors
    return OfflineReport(table, markdown, meta, summary, {"floors.md": floors}, {})


def _ihm_protocol(sc: Scenario, log: Log, days: int | None, progress, out_dir: Path) -> OfflineReport:
    from simulator.run.offline_ihm import format_decay, format_table, plot_decay, run_ihm_offline

    table, meta = run_ihm_offline(sc, log, days, progress=progress)
    oc = sc.ihm_offline
    decay_md = format_decay(meta["long"], meta["decay"])
    summary = (f"{meta['train_positives']:,} training positives before the median timestamp, {meta['test_events']:,} "
               f"test positives ({meta['test_tail_events']:,} on tail items) in {oc.windows} windows of "
               f"{meta['window_days']:.1f} days (" + ", ".join(f"{n:,}" for n in meta['window_events']) + f" positives); {meta['tail_items']:,} of {meta['items']:,} items "
               f"are tail (< {oc.tail_max} training positives); Table 1 is window 1; HitRate@{oc.k} per window "
               f"(tail / head) and decay slopes:\n{decay_md}")
    tables = {"decay.md": decay_md, "windows.csv": meta["long"].write_csv(), "decay.csv": meta["decay"].write_csv()}
    plots = {"decay.png": plot_decay(meta["long"], sc.control, out_dir / "decay.png", oc.k)}
    return OfflineReport(table, format_table(table, oc.k), meta, summary, tables, plots)


OFFLINE_PROTOCOLS = {"next_user_offline": _next_user_protocol, "ihm_offline": _ihm_protocol}
"""Scenario.protocol -> its offline run (log -> table, markdown, summary, artifacts)."""


def run_offline(scenario: Scenario, opts: RunOptions, tracking_uri: str | None = DEFAULT_TRACKING_URI,
                progress_factory=None) -> OfflineOutcome:
    """An offline protocol (``scenario.protocol``) on the run's log, recorded in MLflow like an A/B run."""
    import tempfile

    t_start = time.perf_counter()
    sc = resolve_scenario(scenario, opts)
    if sc.protocol not in OFFLINE_PROTOCOLS:
        raise ValueError(f"scenario '{sc.name}': protocol '{sc.protocol}' is not offline; known: {sorted(OFFLINE_PROTOCOLS)}")
    protocol = OFFLINE_PROTOCOLS[sc.protocol]
    if opts.start is not None:
        raise ValueError(f"--start picks an A/B run's window; the offline protocol '{sc.protocol}' splits the whole log")
    log = load_log(opts.log, sc)
    tracker = None
    if tracking_uri is not None:
        from simulator.run.tracking import RunTracker, flatten_params

        tracker = RunTracker(tracking_uri, opts.experiment)
        params = flatten_params(sc, exclude={"scales"}) | {"log": opts.log or "synthetic", "scale": opts.scale or "default"}
        tracker.start(sc.name, params, [a.name for a in sc.arms], tags={OPTIONS_TAG: json.dumps(opts.__dict__)})
    try:
        with tempfile.TemporaryDirectory(prefix="coldsim-offline-") as tmp:
            if progress_factory is not None:
                with progress_factory() as bar:
                    task = bar.add_task("variants", total=len(sc.arms))
                    rep = protocol(sc, log, opts.days, lambda _: bar.advance(task), Path(tmp))
            else:
                rep = protocol(sc, log, opts.days, None, Path(tmp))
            if tracker is not None:
                tracker.finish_tables(rep.meta["figures"], {k: v for k, v in rep.meta.items() if isinstance(v, (int, float))},
                                      {"table1.md": rep.markdown, "table1.csv": rep.table.write_csv(), **rep.tables},
                                      plots=rep.plots)
    except BaseException as exc:
        if tracker is not None:
            tracker.fail(f"{type(exc).__name__}: {exc}")
        raise
    return OfflineOutcome(table=rep.table, markdown=rep.markdown, meta=rep.meta,
                          parent_run_id=tracker.parent_run_id if tracker else None, wall_s=time.perf_counter() - t_start,
                          summary=rep.summary)


def ladder_metrics(result: SimulationResult) -> list[str]:
    """ExpoReach metrics in the comparison's order (fixed K or derived, ``expo_reach_q90``), then DAC, publications, IPE."""
    expo = [c for c in result.comparison["metric"].unique(maintain_order=True) if c.startswith("expo_reach_")]
    return expo + ["dac", "publications", "interactions_per_exposure"]


def write_result_tables(result: SimulationResult, out: Path) -> Path:
    """Markdown/CSV tables of the run beyond the comparison: the ladder (Table 2 layout), and per strategy arm its
    daily diagnostics, the ranker AUC table (Table 4 layout) and the |M_u| histogram (Fig. 9 as a table)."""
    from simulator.diagnostics import auc_table, format_ladder_markdown, format_table_markdown, msize_table, summarise

    out.mkdir(parents=True, exist_ok=True)
    if result.ladder is not None:
        result.ladder.write_csv(out / "ladder.csv")
        (out / "ladder.md").write_text(format_ladder_markdown(result.ladder, ladder_metrics(result),
                                                              result.scenario.metrics.ci_level))
    for arm, diag in result.diagnostics.items():
        diag.write_csv(out / f"diagnostics_{arm}.csv")
        summary = summarise(diag)
        for name, table in (("auc", auc_table(summary)), ("msize", msize_table(summary))):
            if table is not None:
                (out / f"{name}_{arm}.md").write_text(format_table_markdown(table))
    return out


def run_scenario(scenario: Scenario, opts: RunOptions, tracking_uri: str | None = DEFAULT_TRACKING_URI,
                 progress_factory=None, resume_run_id: str | None = None, stop_after_day: int | None = None,
                 before_shutdown=None, tags: dict[str, str] | None = None) -> RunOutcome:
    """Run (or resume) ``scenario``; records it in MLflow when ``tracking_uri`` is given.

    ``stop_after_day`` ends the run after that day as an interrupted run would (for tests of resume);
    ``before_shutdown(sim)`` is called while the runtime is still up (to query the live arms).
    """
    t_start = time.perf_counter()
    tracker = None
    if tracking_uri is not None:
        from simulator.run.tracking import RunTracker, flatten_params

        tracker = RunTracker(tracking_uri, opts.experiment)
    sc = resolve_scenario(scenario, opts)
    if resume_run_id is not None:
        assert tracker is not None, "resume needs MLflow tracking"
        tags = tracker.client.get_run(resume_run_id).data.tags
        run_dir = Path(tags[RUN_DIR_TAG])
    else:
        run_dir = Path(opts.run_root) / f"{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log, problems = load_ab_log(opts, sc)
    _warn(problems)
    sim = Simulation(sc, log, runtime_factory(opts, sc.serve), run_dir, tracker=tracker)
    parent = None
    try:
        if tracker is not None:
            if resume_run_id is not None:
                tracker.resume(resume_run_id)
                parent = resume_run_id
            else:
                params = flatten_params(sc, exclude={"scales"})
                params.update({"log": opts.log or "synthetic", "runtime": opts.runtime, "scale": opts.scale or "default"})
                parent = tracker.start(sc.name, params, [a.name for a in sc.arms],
                                       tags={RUN_DIR_TAG: str(run_dir.resolve()), OPTIONS_TAG: json.dumps(opts.__dict__),
                                             **(tags or {})})
        if resume_run_id is not None:
            sim.restore_latest()
        if stop_after_day is not None:
            sim.days = min(sim.days, stop_after_day + 1)
        result = sim.run(progress_factory=progress_factory)
        if before_shutdown is not None:
            before_shutdown(sim)
        if tracker is not None and stop_after_day is None:
            (run_dir / "scenario.json").write_text(sc.model_dump_json(indent=2))
            tracker.log_parent_metrics({f"time.{k}_s": v for k, v in result.timings.items()} |
                                       {"events": float(result.events)})
            tables = write_result_tables(result, run_dir / "tables")
            if result.ladder is not None:
                tracker.log_parent_metrics({f"ladder.{r['arm']}.{r['metric']}{sfx}": r[col]
                                            for r in result.ladder.iter_rows(named=True)
                                            for sfx, col in (("", "lift"), (".ci_low", "ci_low"), (".ci_high", "ci_high"))
                                            if r[col] is not None and r[col] == r[col]})
            tracker.finish(result.daily, result.overall, result.comparison, result.age, sc.control,
                           extra_artifacts={"config/scenario.json": run_dir / "scenario.json", "tables": tables},
                           ci_level=sc.metrics.ci_level, expo_k=result.expo_k)
    except BaseException as exc:
        if tracker is not None:
            tracker.fail(f"{type(exc).__name__}: {exc} (checkpoints in {run_dir}; resume with --resume {parent})")
        raise
    finally:
        sim.runtime.shutdown()
    return RunOutcome(result=result, parent_run_id=parent, wall_s=time.perf_counter() - t_start)


REPLICATE_GROUP_TAG = "coldsim.replicate_group"


@dataclass
class ReplicatesOutcome:
    runs: list[RunOutcome]
    seeds: list[int]
    table: "object"  # polars DataFrame, simulator.run.replicates.aggregate_lifts
    markdown: str
    parent_run_id: str | None  # the MLflow run holding the pooled table


def run_replicates(scenario: Scenario, opts: RunOptions, replicates: int,
                   tracking_uri: str | None = DEFAULT_TRACKING_URI, progress_factory=None) -> ReplicatesOutcome:
    """Run ``scenario`` with ``replicates`` consecutive seeds (from ``opts.seed`` or the scenario's) and pool the
    lifts over seeds (:mod:`simulator.run.replicates`). Each replicate is an ordinary run (MLflow parent run tagged
    with the group id); the pooled table goes to one more run, ``<scenario>-replicates``."""
    from simulator.run.replicates import aggregate_lifts, format_replicates_markdown

    if replicates < 1:
        raise ValueError(f"--replicates must be >= 1, got {replicates}")
    if scenario.protocol != "ab":
        raise ValueError(f"scenario '{scenario.name}' is an offline protocol; replicates apply to A/B runs")
    base = opts.seed if opts.seed is not None else scenario.seed
    seeds = [base + i for i in range(replicates)]
    group = uuid.uuid4().hex[:12]
    # each replicate is a new randomisation too (salt '<salt>-<seed>'): with one salt every seed would share one
    # draw of the creator and user buckets, whose luck is the largest part of a lift's variance (docs/metrics.md)
    salt = opts.salt if opts.salt is not None else scenario.salt
    runs = [run_scenario(scenario, replace(opts, seed=s, salt=f"{salt}-{s}"), tracking_uri, progress_factory,
                         tags={REPLICATE_GROUP_TAG: group, "coldsim.replicate_seed": str(s)}) for s in seeds]
    sc = resolve_scenario(scenario, opts)
    table = aggregate_lifts([r.result.comparison for r in runs], sc.metrics.ci_level)
    md = format_replicates_markdown(table, seeds, sc.metrics.ci_level)
    parent = None
    if tracking_uri is not None:
        import tempfile

        from simulator.run.replicates import as_comparison
        from simulator.run.tracking import RunTracker, plot_forest

        tracker = RunTracker(tracking_uri, opts.experiment)
        arms = sorted(set(table["arm"].to_list()))
        parent = tracker.start(f"{sc.name}-replicates", {"replicates": replicates, "seeds": ",".join(map(str, seeds)),
                                                         "scenario": sc.name, "scale": opts.scale or "default"},
                               arms, tags={REPLICATE_GROUP_TAG: group})
        per_arm = {a: {} for a in arms}
        for r in table.iter_rows(named=True):
            for k in ("mean_lift", "ci_low", "ci_high", "sign_agreement"):
                if r[k] is not None and np.isfinite(r[k]):
                    per_arm[r["arm"]][f"{r['metric']}.{k}"] = r[k]
        with tempfile.TemporaryDirectory(prefix="coldsim-replicates-") as tmp:
            forest = plot_forest(as_comparison(table), sc.control, Path(tmp) / "forest.png", sc.metrics.ci_level)
            tracker.finish_tables(per_arm, {"replicates": float(replicates)},
                                  {"replicates.md": md, "replicates.csv": table.with_columns(
                                      pl.col("lifts").list.eval(pl.element().round(6)).cast(pl.List(pl.String))
                                      .list.join(" ")).write_csv()},
                                  plots={"forest.png": forest} if forest is not None else None)
    return ReplicatesOutcome(runs=runs, seeds=seeds, table=table, markdown=md, parent_run_id=parent)


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
