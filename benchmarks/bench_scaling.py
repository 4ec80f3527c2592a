"""Scaling: simulated exposures/s against Ray Train workers and against runs side by side, and a cost model that
extrapolates a scale too large for this machine.

Four measurements, each printed as a table with ratios to its first row:

1. **training workers**: the scenario on the Ray runtime with ``train.num_workers`` = 1, 2, ... (each worker
   ``--cpus-per-worker`` CPUs; ``--placement data_parallel``: data-parallel base models, strategy learners
   round-robin; ``by_learner``: the base learner alone on one worker, the strategy learners on the others): wall,
   the ``train`` stage (the driver waiting for the trainer), exposures/s, and whether the metrics equal one
   worker's (they must with ``by_learner``).
2. **runs side by side**: ``--replicates R`` with ``--parallel 1`` and ``--parallel P`` (``run_replicates``, local
   runtime, each run one Ray task of one CPU): the group's wall and its total simulated exposures/s.
3. **cost model**: one run per ``--model-scales`` (local runtime; wall, exposures, peak PSS of the process tree)
   fitted as wall = a * exposures^b and PSS = c + d * users, then evaluated at the ``large`` scale (the
   scenario's, if it has one; its users and an exposure count extrapolated from exposures per user-day).
   ``--default-figures`` adds a measured default-scale Ray run (``bench_scenario.py --json``) to the fit.

4. **shards**: the scenario on the Ray runtime with ``serve.arm_replicas`` = 1, 2, ... (``--shards``; every arm
   served by that many Serve replicas owning disjoint users, :mod:`serving.shards`): wall, the ``serve`` stage,
   exposures/s, and whether the metrics equal one shard's (they must).

Run: ``python benchmarks/bench_scaling.py --scale small`` (~8 min on 2 cores); ``--skip workers`` etc. to run
parts. On a machine with more cores raise ``--workers``, ``--shards`` and ``--parallel`` (e.g. ``--workers 1,2,4,8``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ForeignLoad, MemorySampler, fmt_table  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="coldstart_ab")
    p.add_argument("--scale", default="small", help="scale of the worker and side-by-side measurements")
    p.add_argument("--days", type=int, default=None)
    p.add_argument("--workers", default="1,2", help="Ray Train worker counts to measure")
    p.add_argument("--cpus-per-worker", type=float, default=0.5)
    p.add_argument("--placement", default="data_parallel", choices=["data_parallel", "by_learner"],
                   help="train.placement of the worker runs")
    p.add_argument("--replicates", type=int, default=2, help="runs in the side-by-side measurement")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time in the side-by-side measurement")
    p.add_argument("--model-scales", default="tiny,small", help="scales run for the cost model (local runtime)")
    p.add_argument("--default-figures", type=Path, default=None,
                   help="bench_scenario.py --json output of a default-scale run, added to the cost model")
    p.add_argument("--shards", default="1,2", help="shards per arm to measure (serve.arm_replicas)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: workers, parallel, model, shards")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def _scenario(name: str):
    from scenarios import get_scenario

    return get_scenario(name)


def measure_workers(args, root: Path) -> list[dict]:
    from simulator.run.session import RunOptions, run_scenario

    sc = _scenario(args.scenario)
    rows, first = [], None
    for workers in [int(w) for w in args.workers.split(",")]:
        opts = RunOptions(scenario=sc.name, scale=args.scale, days=args.days, runtime="ray",
                          run_root=str(root / f"workers{workers}"),
                          overrides={"train.num_workers": workers, "train.cpus_per_worker": args.cpus_per_worker,
                                     "train.placement": args.placement})
        start = time.perf_counter()
        out = run_scenario(sc, opts, tracking_uri=None)
        wall = time.perf_counter() - start
        first = first or out.result.overall
        rows.append({"workers": workers, "wall_s": wall, "train_s": out.result.timings.get("train", float("nan")),
                     "same_metrics": out.result.overall == first,
                     "exposures": out.result.events, "exposures_per_s": out.result.events / wall})
        print(f"  {workers} worker(s): {wall:.1f} s", flush=True)
    return rows


def measure_shards(args, root: Path) -> list[dict]:
    from simulator.run.session import RunOptions, run_scenario

    sc = _scenario(args.scenario)
    rows, first = [], None
    for shards in [int(k) for k in args.shards.split(",")]:
        opts = RunOptions(scenario=sc.name, scale=args.scale, days=args.days, runtime="ray",
                          run_root=str(root / f"shards{shards}"), overrides={"serve.arm_replicas": shards})
        start = time.perf_counter()
        out = run_scenario(sc, opts, tracking_uri=None)
        wall = time.perf_counter() - start
        first = first or out.result.overall
        rows.append({"shards": shards, "wall_s": wall, "serve_s": out.result.timings.get("serve", float("nan")),
                     "exposures": out.result.events, "exposures_per_s": out.result.events / wall,
                     "same_metrics": out.result.overall == first})
        print(f"  {shards} shard(s) per arm: {wall:.1f} s", flush=True)
    return rows


def measure_parallel(args, root: Path) -> list[dict]:
    from simulator.run.groups import run_replicates
    from simulator.run.session import RunOptions

    sc = _scenario(args.scenario)
    rows = []
    for parallel in (1, args.parallel):
        opts = RunOptions(scenario=sc.name, scale=args.scale, days=args.days, runtime="local",
                          run_root=str(root / f"parallel{parallel}"))
        start = time.perf_counter()
        group = run_replicates(sc, opts, args.replicates, tracking_uri=None, parallel=parallel)
        wall = time.perf_counter() - start
        events = sum(run.result.events for run in group.runs)
        rows.append({"parallel": parallel, "runs": args.replicates, "wall_s": wall, "exposures": events,
                     "exposures_per_s": events / wall})
        print(f"  {args.replicates} runs, {parallel} at a time: {wall:.1f} s", flush=True)
    return rows


def measure_model(args, root: Path) -> list[dict]:
    from simulator.run.session import RunOptions, resolve_scenario, run_scenario

    sc = _scenario(args.scenario)
    rows = []
    for scale in args.model_scales.split(","):
        opts = RunOptions(scenario=sc.name, scale=scale, runtime="local", run_root=str(root / f"model-{scale}"))
        resolved = resolve_scenario(sc, opts)
        start = time.perf_counter()
        with MemorySampler(0.5) as mem:
            out = run_scenario(sc, opts, tracking_uri=None)
        wall = time.perf_counter() - start
        rows.append({"scale": scale, "runtime": "local", "users": resolved.synthetic.n_users,
                     "creators": resolved.synthetic.n_creators, "days": resolved.days, "wall_s": wall,
                     "exposures": out.result.events, "peak_pss_gb": mem.peak_pss / 1e9})
        print(f"  {scale}: {wall:.1f} s, {out.result.events:,} exposures, {mem.peak_pss / 1e9:.2f} GB PSS", flush=True)
    if args.default_figures:
        d = json.loads(args.default_figures.read_text())
        rows.append({"scale": "default", "runtime": d["runtime"], "users": d["n_users"], "creators": d["n_creators"],
                     "days": d["days"], "wall_s": d["wall_s"], "exposures": d["exposures"],
                     "peak_pss_gb": d["peak_pss_sum_gb"]})
    return rows


def cost_model(rows: list[dict], scenario) -> dict:
    """wall = a * exposures^b and PSS = c + d * users, fitted on the measured scales (least squares on log-log and
    linear), and their value at the scenario's ``large`` scale."""
    exposures = np.array([r["exposures"] for r in rows], float)
    walls = np.array([r["wall_s"] for r in rows], float)
    users = np.array([r["users"] for r in rows], float)
    pss = np.array([r["peak_pss_gb"] for r in rows], float)
    b, log_a = np.polyfit(np.log(exposures), np.log(walls), 1)
    d, c = np.polyfit(users, pss, 1)
    per_user_day = float(np.mean(exposures / (users * np.array([r["days"] for r in rows], float))))
    out = {"wall_a": float(np.exp(log_a)), "wall_b": float(b), "pss_c_gb": float(c), "pss_d_gb_per_user": float(d),
           "exposures_per_user_day": per_user_day}
    if "large" in scenario.scales:
        large = scenario.at_scale("large")
        n_exp = per_user_day * large.synthetic.n_users * large.days
        out["large"] = {"users": large.synthetic.n_users, "creators": large.synthetic.n_creators, "days": large.days,
                        "exposures": n_exp, "wall_s": float(np.exp(log_a) * n_exp ** b),
                        "peak_pss_gb": float(c + d * large.synthetic.n_users)}
    return out


def _ratio_table(rows: list[dict], keys: list[str], header: list[str]) -> str:
    """``keys`` of each row, then its exposures/s and their ratio to the first row's."""
    def cell(value):
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"

    first = rows[0]["exposures_per_s"]
    return fmt_table([[cell(r[k]) for k in keys] + [f"{r['exposures_per_s']:,.0f}", f"{r['exposures_per_s'] / first:.2f}x"]
                      for r in rows], header + ["exposures/s", "vs first"])


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    skip = set(filter(None, args.skip.split(",")))
    root = Path(tempfile.mkdtemp(prefix="coldsim-scaling-"))
    figures: dict = {"scenario": args.scenario, "scale": args.scale, "cpus": os.cpu_count(),
                     "date": time.strftime("%Y-%m-%d %H:%M")}
    try:
        with ForeignLoad() as load:
            if "workers" not in skip:
                print("training workers (Ray runtime):", flush=True)
                figures["workers"] = measure_workers(args, root)
            if "shards" not in skip:
                print("shards per arm (Ray runtime):", flush=True)
                figures["shards"] = measure_shards(args, root)
            if "parallel" not in skip:
                print("runs side by side (local runtime, Ray tasks):", flush=True)
                figures["parallel"] = measure_parallel(args, root)
            if "model" not in skip:
                print("cost model runs (local runtime):", flush=True)
                figures["model_runs"] = measure_model(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nbench_scaling: {args.scenario}, {os.cpu_count()} CPUs")
    if "workers" in figures:
        print(f"\ntraining workers, scale {args.scale}, Ray runtime, {args.cpus_per_worker} CPU per worker, "
              f"placement {args.placement}")
        print(_ratio_table(figures["workers"], ["workers", "wall_s", "train_s", "same_metrics"],
                           ["workers", "wall s", "train stage s", "same metrics"]))
    if "shards" in figures:
        print(f"\nshards per arm, scale {args.scale}, Ray runtime (every shard holds the arm; metrics must equal one's)")
        print(_ratio_table(figures["shards"], ["shards", "wall_s", "serve_s", "same_metrics"],
                           ["shards", "wall s", "serve stage s", "same metrics"]))
    if "parallel" in figures:
        print(f"\n{args.replicates} runs of scale {args.scale} (local runtime), one after another vs side by side")
        print(_ratio_table(figures["parallel"], ["parallel", "wall_s", "exposures"], ["at a time", "wall s", "exposures"]))
    if "model_runs" in figures and len(figures["model_runs"]) >= 2:
        rows = figures["model_runs"]
        model = cost_model(rows, _scenario(args.scenario))
        figures["cost_model"] = model
        print("\ncost model runs")
        print(fmt_table([[r["scale"], r["runtime"], f"{r['users']:,}", r["days"], f"{r['exposures']:,}",
                          f"{r['wall_s']:.1f}", f"{r['peak_pss_gb']:.2f}"] for r in rows],
                        ["scale", "runtime", "users", "days", "exposures", "wall s", "peak PSS GB"]))
        print(f"wall = {model['wall_a']:.3g} * exposures^{model['wall_b']:.2f} s; "
              f"PSS = {model['pss_c_gb']:.2f} GB + {model['pss_d_gb_per_user'] * 1e3:.3f} GB per 1,000 users; "
              f"{model['exposures_per_user_day']:.2f} exposures per user-day")
        if "large" in model:
            lg = model["large"]
            print(f"large ({lg['users']:,} users, {lg['creators']:,} creators, {lg['days']} days): ~{lg['exposures']:,.0f} "
                  f"exposures, ~{lg['wall_s'] / 60:.0f} min and ~{lg['peak_pss_gb']:.1f} GB PSS on one machine like this")
    print(f"contention check: {load.summary()}")
    figures["load"] = load.as_dict()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")
    return figures


if __name__ == "__main__":
    main()
