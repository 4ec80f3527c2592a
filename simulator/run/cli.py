"""The ``simulate`` command: run a scenario (locally or on a Ray cluster), list scenarios, resume a run."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(add_completion=False, help="coldsim: simulate cold-start strategies in co-diverted A/B arms.")
console = Console()


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _no_ray_auto_connect() -> None:
    """coldsim starts or joins Ray itself (``init_ray``), once per run of a command that may run several: a Ray
    call from a library's background thread after a run's ``ray.shutdown()`` must fail in that thread instead of
    starting a fresh, unconfigured Ray in this process for the next run to find (tests/conftest.py). Ray reads
    ``RAY_ENABLE_AUTO_CONNECT`` when it is imported; a user's own setting wins."""
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")


def _quiet_ray_data() -> None:
    """Ray Data's console shows errors only (its INFO lines on every day's read); its log file keeps everything.

    Ray Data reads its logging configuration from ``RAY_DATA_LOGGING_CONFIG`` when it is imported: this writes
    Ray's default configuration with the console handler at ERROR (a user's own setting wins)."""
    if "RAY_DATA_LOGGING_CONFIG" in os.environ:
        return
    import json
    import tempfile
    from pathlib import Path

    config = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"ray": {"format": "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"}},
        "filters": {"console_filter": {"()": "ray.data._internal.logging.HiddenRecordFilter"}},
        "handlers": {
            "file": {"class": "ray.data._internal.logging.SessionFileHandler", "formatter": "ray",
                     "filename": "ray-data.log"},
            "console": {"class": "ray._private.log.PlainRayHandler", "formatter": "ray", "level": "ERROR",
                        "filters": ["console_filter"]},
        },
        "loggers": {"ray.data": {"level": "DEBUG", "handlers": ["file", "console"], "propagate": False}},
    }
    path = Path(tempfile.gettempdir()) / "coldsim-ray-data-logging.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    os.environ["RAY_DATA_LOGGING_CONFIG"] = str(path)


def _show_coldsim_warnings() -> None:
    """Print the simulator's warnings about a run (simulator.core.window.ColdsimWarning) in the console, every time."""
    import warnings

    from simulator.core.window import ColdsimWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ColdsimWarning):
            console.print(f"[yellow]warning:[/] {message}", highlight=False)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", ColdsimWarning)


@app.callback(invoke_without_command=True)
def simulate(
    ctx: typer.Context,
    scenario: str = typer.Option("coldstart_ab", "--scenario", "-s", help="scenario name (see `simulate list`)"),
    scale: Optional[str] = typer.Option(None, help="named scale of the scenario: tiny, small or default"),
    days: Optional[int] = typer.Option(None, help="simulate this many days (at most the log's)"),
    seed: Optional[int] = typer.Option(None, help="random seed (same seed, same metrics)"),
    log: Optional[str] = typer.Option(None, "--log", help="log to replay: PATH or KIND:PATH[?opts] (movielens, tabular, kuairand)"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address ('auto' joins a running cluster); default starts a local one"),
    runtime: str = typer.Option("ray", help="'ray' (Ray Data + Serve + Train) or 'local' (in-process)"),
    tracking_uri: str = typer.Option("sqlite:///mlflow.db", help="MLflow tracking URI"),
    experiment: str = typer.Option("coldsim", help="MLflow experiment name"),
    resume: Optional[str] = typer.Option(None, help="MLflow parent run id of an interrupted run to continue"),
    http: bool = typer.Option(False, help="also expose the arms over HTTP (FastAPI ingress on 127.0.0.1)"),
    run_root: str = typer.Option("coldsim_runs", "--storage", "--run-root",
                                 help="where run directories (log partitions, exposures, checkpoints, Ray Train's "
                                 "files) go: a local path or a URI (s3://, gs://, file://...) every node reaches"),
    progress: bool = typer.Option(True, help="show progress bars"),
    replicates: int = typer.Option(1, min=1, help="run the scenario with this many consecutive seeds and pool the "
                                   "lifts over seeds (t interval): training variance between arms included"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate the scenario, scale, log and options, print "
                                 "what would run, and stop"),
    start: Optional[str] = typer.Option(None, help="first day (YYYY-MM-DD) of a real log to replay; default: the "
                                        "densest window of the scenario's days"),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="keep the run's checkpoints after it "
                                          "finishes (by default they are deleted; an interrupted run keeps them)"),
    keep_last: int = typer.Option(1, min=1, help="how many of the latest checkpoints stay on disk"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="set a scenario setting for this run, PATH=VALUE "
                                             "(e.g. train.num_workers=2); repeat for several"),
    sweep: Optional[list[str]] = typer.Option(None, "--sweep", help="run the scenario at each value of a setting, "
                                              "PATH=V1,V2 (e.g. world.creator_elasticity=0.2,0.5); repeat for a grid"),
    parallel: int = typer.Option(1, min=1, help="run replicates and sweep points this many at a time, each in a "
                                 "Ray task (as the cluster's CPUs allow)"),
    arm_replicas: Optional[int] = typer.Option(None, "--arm-replicas", min=1, help="serve each arm from this many "
                                               "replicas owning disjoint users (serve.arm_replicas; the same metrics "
                                               "as one)"),
):
    """Run a scenario and print arms vs control with lifts and confidence intervals."""
    if ctx.invoked_subcommand is not None:
        return
    from scenarios import get_scenario
    from simulator.core.storage import StorageError
    from simulator.run.groups import run_replicates, run_sweep
    from simulator.run.session import RunOptions, options_of_run, plan_run, resolve_scenario, run_offline, run_scenario
    from simulator.run.sweep import parse_settings, parse_sweep, point_label, sweep_points, with_point
    from simulator.run.report import format_comparison_rich

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    _no_ray_auto_connect()
    _quiet_ray_data()
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # e.g. "Creating initial MLflow database tables"
    _show_coldsim_warnings()
    try:
        if resume:
            opts = options_of_run(tracking_uri, resume)
            if address:
                opts = replace(opts, address=address)
        else:
            if runtime not in ("ray", "local"):
                raise ValueError(f"--runtime must be 'ray' or 'local', got '{runtime}'")
            if runtime == "local" and (address or http):
                raise ValueError("--address and --http need --runtime ray (the local runtime has no cluster and no server)")
            opts = RunOptions(scenario=scenario, scale=scale, days=days, seed=seed, log=log, runtime=runtime,
                              address=address, http=http, run_root=run_root, experiment=experiment, start=start,
                              keep_checkpoints=keep_checkpoints, keep_last=keep_last,
                              overrides=parse_settings((set_ or []) + ([f"serve.arm_replicas={arm_replicas}"]
                                                                       if arm_replicas else [])) or None)
        sc = get_scenario(opts.scenario)
        axes = [parse_sweep(spec) for spec in sweep or []]
        if axes and resume:
            raise ValueError("--sweep cannot be combined with --resume (resume each point's run instead)")
        if parallel > 1 and not (axes or replicates > 1):
            raise ValueError("--parallel runs replicates or sweep points side by side; give --replicates N or --sweep")
        points = sweep_points(axes) if axes else []
        if dry_run:
            console.print(plan_run(sc, opts, replicates), highlight=False)
            for point in points:
                resolve_scenario(sc, replace(opts, overrides=with_point(opts.overrides, point)))  # as the run would
                console.print(f"  sweep point {point_label(point)}", highlight=False)
            return
        console.print(f"[bold]coldsim[/] scenario [cyan]{sc.name}[/] scale={opts.scale or 'default'} runtime={opts.runtime}")
        if sc.protocol != "ab":
            if axes or parallel > 1:
                raise ValueError(f"scenario '{sc.name}' is the offline protocol '{sc.protocol}': --sweep and --parallel "
                                 "apply to A/B runs; --replicates N pools N seeds of the protocol in one run")
            off = run_offline(sc, opts, tracking_uri=tracking_uri, progress_factory=_progress if progress else None,
                              replicates=replicates)
            console.print(off.markdown)
            console.print(f"{off.summary}\n{off.wall_s:.1f}s")
            if off.parent_run_id:
                _print_mlflow("the protocol's table in run", off.parent_run_id, tracking_uri)
            return
        if axes:
            swept = run_sweep(sc, opts, axes, replicates, tracking_uri=tracking_uri,
                              progress_factory=_progress if progress else None, parallel=parallel)
            console.print(f"[bold]lifts over control '{sc.control}' at {len(points)} points"
                          f"{f', pooled over {replicates} seeds' if replicates > 1 else ''}[/]")
            console.print(swept.markdown)
            if swept.parent_run_id:
                _print_mlflow("the sweep's table in run", swept.parent_run_id, tracking_uri)
            return
        if replicates > 1:
            if resume:
                raise ValueError("--replicates cannot be combined with --resume (resume each replicate's run instead)")
            rep = run_replicates(sc, opts, replicates, tracking_uri=tracking_uri,
                                 progress_factory=_progress if progress else None, parallel=parallel)
            for seed, run in zip(rep.seeds, rep.runs):
                console.print(f"seed {seed}: {run.result.events:,} simulated exposures in {run.wall_s:.1f}s"
                              + (f", MLflow parent run {run.parent_run_id}" if run.parent_run_id else ""))
            console.print(f"[bold]lifts over control '{sc.control}' pooled over {replicates} seeds[/]")
            console.print(rep.markdown)
            if rep.parent_run_id:
                _print_mlflow("pooled table in run", rep.parent_run_id, tracking_uri)
            return
        out = run_scenario(sc, opts, tracking_uri=tracking_uri, progress_factory=_progress if progress else None,
                           resume_run_id=resume)
    except (ValueError, FileNotFoundError, KeyError, StorageError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from None
    res = out.result
    console.print(format_comparison_rich(res.comparison, res.scenario.control, res.scenario.metrics.ci_level,
                                         expo_k=res.expo_k))
    _print_strategy_tables(res)
    t = res.timings
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in t.items())
    console.print(f"{res.events:,} simulated exposures in {out.wall_s:.1f}s ({res.events / max(out.wall_s, 1e-9):,.0f}/s); {stages}")
    if out.parent_run_id:
        _print_mlflow("parent run", out.parent_run_id, tracking_uri)


def _print_mlflow(what: str, run_id: str, tracking_uri: str) -> None:
    """Where the run is in MLflow: its id, and its page once ``mlflow ui`` runs on the same store."""
    from simulator.run.tracking import parent_url

    console.print(f"MLflow: {what} [cyan]{run_id}[/] at {tracking_uri}\n  open it: `mlflow ui --backend-store-uri "
                  f"{tracking_uri}`, then {parent_url(tracking_uri, run_id)}", highlight=False, soft_wrap=True)


def _print_strategy_tables(res) -> None:
    """The ladder (each arm over the previous one) and each DualRec arm's UAC diagnostics, when the run has them."""
    from simulator.diagnostics import auc_table, summarise
    from simulator.run.report import format_ladder_markdown, format_table_markdown, ladder_metrics

    if res.ladder is not None:
        console.print("[bold]ladder[/] (each arm over the one before it)")
        console.print(format_ladder_markdown(res.ladder, ladder_metrics(res), res.scenario.metrics.ci_level))
    for arm, diagnostics in res.diagnostics.items():
        summary = summarise(diagnostics)
        if "dualrec.hit_rate.actual" not in summary:
            continue

        def pct(name: str) -> str:
            return f"{summary[name]:.1%}" if name in summary else "-"

        console.print(f"[cyan]{arm}[/] UAC: hit rate {pct('dualrec.hit_rate.actual')} (shadow without activity "
                      f"prediction {pct('dualrec.hit_rate.no_activity')}, without the store "
                      f"{pct('dualrec.hit_rate.no_store')}); users with empty M_u {pct('dualrec.msize.actual.share_zero')}"
                      f" (without the store {pct('dualrec.msize.no_store.share_zero')}); new-item coverage creator-side "
                      f"{pct('dualrec.coverage.creator_side.actual')} vs user-side {pct('dualrec.coverage.user_side')}; "
                      f"matched items' share of exposures {pct('dualrec.expo_share')}{_by_retrieval(summary)}")
        table = auc_table(summary)
        if table is not None and table.height > 1:
            console.print(f"[cyan]{arm}[/] creator-side ranker, progressive AUC (Table 4 layout):")
            console.print(format_table_markdown(table))


def _by_retrieval(summary: dict[str, float]) -> str:
    """'; of which found by two-tower 60%, ...' (the paper's Table 3) when the arm served matched items."""
    counts = {k.rsplit(".", 1)[1]: v for k, v in summary.items() if k.startswith("dualrec.served_by.") and v > 0}
    total = sum(counts.values())
    return ("; of which found by " + ", ".join(f"{name} {v / total:.1%}" for name, v in counts.items())) if total else ""


@app.command("list")
def list_scenarios():
    """List the registered scenarios with their arms and scales."""
    from scenarios import SCENARIOS

    for name, sc in SCENARIOS.items():
        arms = ", ".join(f"{a.name}({a.kind}, {a.share:.0%})" for a in sc.arms)
        console.print(f"[cyan]{name}[/]: {sc.description}\n  arms: {arms}; control: {sc.control}; "
                      f"scales: default, {', '.join(sc.scales)}")


data_app = typer.Typer(help="Public datasets by name: list them, download one into the cache (docs/sources.md).")
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list(cache_dir: Optional[str] = typer.Option(None, help="cache directory (default $COLDSIM_DATA_DIR or "
                                                       "~/.cache/coldsim/datasets)")):
    """List the datasets `simulate data get` knows, their logs and whether they are cached."""
    from simulator.sources.datasets import DATASETS, cache_root, cached

    console.print(f"cache: {cache_root(cache_dir)}")
    for ds in DATASETS.values():
        have = cached(ds.name, cache_dir)
        state = f"[green]cached[/] {have.directory}" if have else "not downloaded"
        check = "SHA-256" if ds.sha256 else "MD5" if ds.md5 else "no checksum known"
        logs = ", ".join(f"{log.kind}:{ds.name}" for log in ds.logs)
        console.print(f"[cyan]{ds.name}[/]: {ds.description}\n  --log {logs}; {check}; {ds.license}; {state}")


@data_app.command("get")
def data_get(
    name: str = typer.Argument(..., help="dataset name (see `simulate data list`)"),
    cache_dir: Optional[str] = typer.Option(None, help="cache directory (default $COLDSIM_DATA_DIR or "
                                            "~/.cache/coldsim/datasets)"),
    url: Optional[str] = typer.Option(None, help="download from this URL instead (a mirror or a file:// copy; "
                                      "the registry's checksums still apply)"),
    sha256: Optional[str] = typer.Option(None, help="expect this SHA-256 instead of the registry's"),
    force: bool = typer.Option(False, help="download again even if cached"),
):
    """Download a dataset from its official location, check its checksum and unpack it into the cache."""
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from simulator.sources.datasets import DatasetError, fetch, get_dataset

    try:
        ds = get_dataset(name)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task(f"downloading {name}", total=ds.size)
            got = fetch(ds, cache_dir=cache_dir, url=url, sha256=sha256, force=force,
                        progress=lambda done, total: bar.update(task, completed=done, total=total or ds.size))
    except DatasetError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from None
    if got.already_cached:
        console.print(f"{name} is already cached at {got.directory} (--force downloads it again)")
    else:
        console.print(f"downloaded {url or ds.url} ({got.size:,} bytes) into {got.directory}")
        if got.verified:
            console.print(f"verified: {', '.join(got.verified)} ({ds.checksum_source if not sha256 else '--sha256'})")
        else:
            console.print(f"[yellow]not verified:[/] no checksum is known for {name}; its SHA-256 is {got.sha256} "
                          "(compare it with a trusted copy before relying on it)")
    console.print(f"SHA-256 {got.sha256}\nuse it: " + ", ".join(f"--log {log.kind}:{name}" for log in ds.logs))


@app.command("fidelity")
def fidelity(
    budget: str = typer.Option("standard", help="quick (tiny world, one seed, 30 days of each log: minutes), standard "
                               "(small world, three A/B seeds) or full (default world, three seeds everywhere)"),
    log: Optional[list[str]] = typer.Option(None, "--log", help="a log to run the tables on as well (PATH or KIND:PATH, "
                                            "as for a run); repeat for several"),
    cached_logs: bool = typer.Option(True, "--cached-logs/--no-cached-logs", help="also every public dataset in the "
                                     "cache (`simulate data list`)"),
    doc: str = typer.Option("docs/fidelity.md", help="the report to write (its figures go to images/fidelity/ beside it)"),
    runtime: str = typer.Option("local", help="'local' (in-process, the default here) or 'ray': the same numbers"),
    tracking_uri: str = typer.Option("sqlite:///mlflow.db", help="MLflow tracking URI (every section is a run)"),
    experiment: str = typer.Option("coldsim-fidelity", help="MLflow experiment of the report's runs"),
    run_root: str = typer.Option("coldsim_runs", "--storage", help="where the A/B runs' directories go"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate the budget and logs, print what would run, stop"),
):
    """Every seed table of the three papers on the synthetic world and on public logs, with 95% intervals and a
    verdict per row, written to docs/fidelity.md (docs/fidelity.md explains the rule)."""
    from pathlib import Path

    from scenarios import get_scenario
    from simulator.run.fidelity import SECTIONS, default_sources, plan, run_fidelity, rows_markdown, session_runner
    from simulator.sources.datasets import DatasetError

    _no_ray_auto_connect()
    _quiet_ray_data()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    _show_coldsim_warnings()
    try:
        if runtime not in ("ray", "local"):
            raise ValueError(f"--runtime must be 'ray' or 'local', got '{runtime}'")
        cached, missing = default_sources(given=log) if cached_logs else ([], [])
        logs = list(dict.fromkeys([*(log or []), *cached]))
        scenarios = {name: get_scenario(name) for name, _ in SECTIONS.values()}
        if dry_run:
            console.print(plan(budget, logs, scenarios), highlight=False)
            return
        report = run_fidelity(budget, logs, scenarios, session_runner(tracking_uri, runtime, run_root, experiment),
                              Path(doc),
                              progress=lambda step: console.print(f"[bold]fidelity[/] {step}", highlight=False),
                              missing=missing)
    except (ValueError, FileNotFoundError, KeyError, DatasetError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=2) from None
    console.print(rows_markdown(report.rows), highlight=False, soft_wrap=True)
    console.print(f"{report.rows.height} rows in {report.wall_s / 60:.1f} min; written to {doc}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
