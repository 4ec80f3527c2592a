"""A whole scenario run (``simulate``'s ``run_scenario``): wall time, time by stage, exposures/s, peak memory, ATS.

Runs ``simulator.run.session.run_scenario`` with MLflow tracking to a temporary sqlite DB and run directory, for
the given scenario / scale / runtime, while a background thread samples memory (RSS every ``--interval``
seconds, PSS every ``--pss-interval`` seconds and at each 5 % rise of the RSS-sum's high: ``_common.MemorySampler``):
the summed RSS of this process and all its descendants (Ray's GCS, raylet and, under it, every worker: Serve
replicas, the Train worker, actors), plus orphaned processes started since whose command line contains
'ray::', 'raylet' or 'gcs_server' (Ray processes whose parent is alive outside this tree belong to another Ray
session on the machine and are not counted). The peak of that sum
is reported, together with the peak summed PSS (proportional set size: shared pages such as Ray's object
store mappings and shared libraries are split between the processes mapping them instead of counted in each,
so PSS is the fairer "memory the run needs"; RSS-sum is the conservative upper figure) and the driver's own
peak RSS. Requirements: default coldstart_ab <= 10 min on 2 cores / 24 GB; peak memory <= 8 GB.

Run: ``python benchmarks/bench_scenario.py --scale small --runtime local`` (a few minutes),
``python benchmarks/bench_scenario.py`` (default scale on Ray: the full requirement run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ForeignLoad, MemorySampler, fmt_table  # noqa: E402

class DirSizeSampler:
    """The peak size of a directory tree (the run directory: log partitions, exposures, checkpoints), sampled in a
    background thread every ``interval`` seconds and once more at exit."""

    def __init__(self, path: Path, interval: float = 1.0):
        import threading

        self.path, self.interval, self.peak = path, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def size(self) -> int:
        """The files' bytes now. The run writes and deletes under the walk (a checkpoint's temporary file renamed,
        old checkpoints' directories removed): what vanished meanwhile counts as gone, never as an error that would
        stop the sampling (``os.walk`` skips a directory it can no longer list; ``Path.rglob`` raised)."""
        total = 0
        for folder, _, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.stat(os.path.join(folder, name), follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.size())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.end = self.size()
        self.peak = max(self.peak, self.end)


STAGES = ("setup", "runtime_start", "replay", "serve", "world", "train", "metrics", "checkpoint")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="coldstart_ab")
    p.add_argument("--scale", default=None, help="named scale (tiny, small); default: the scenario's default scale")
    p.add_argument("--runtime", choices=["ray", "local"], default="ray")
    p.add_argument("--days", type=int, default=None, help="simulate only this many days")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="PATH=VALUE",
                   help="a scenario setting for this run, as simulate's --set (e.g. train.optimizer=lazy_adam); repeat")
    p.add_argument("--interval", type=float, default=0.5, help="RSS sampling period (s)")
    p.add_argument("--pss-interval", type=float, default=10.0,
                   help="PSS sampling period (s); PSS is also read whenever the RSS-sum exceeds by 5%% its "
                   "highest value at a PSS reading (reading PSS every 0.5 s cost the run ~100 CPU-s on 2 cores: "
                   "_common.MemorySampler)")
    p.add_argument("--no-pss", action="store_true", help="sample RSS only (PSS reads /proc/*/smaps_rollup)")
    p.add_argument("--keep", action="store_true", help="keep the temporary run directory and MLflow DB")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    p.add_argument("--reference-tick", type=Path,
                   default=Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "reference_tick.py",
                   help="the reference tick (a request's core work with no framework: the throughput ceiling), run "
                   "before and after the scenario and compared; skipped when the file is missing")
    p.add_argument("--reference-runs", type=int, default=3,
                   help="runs of the reference tick: one before the scenario, the rest after it; the run is compared "
                   "with their median (a single run of it moved 1.5x between runs minutes apart)")
    return p.parse_args(argv)


def reference_tick(path: Path) -> dict | None:
    """Run the reference tick script and parse its ``exposures/s`` (None when it fails)."""
    import re
    import subprocess

    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)
    match = re.search(r"exposures/s=([\d,]+)", done.stdout)
    if done.returncode != 0 or not match:
        print(f"reference tick failed: {done.stdout[-300:]} {done.stderr[-300:]}")
        return None
    return {"exposures_per_s": float(match.group(1).replace(",", "")), "line": done.stdout.strip()}


def reference_runs(path: Path, n: int) -> list[dict]:
    """``n`` runs of the reference tick, those that gave a figure."""
    return [r for r in (reference_tick(path) for _ in range(n)) if r is not None]


def reference_figures(before: list[dict], after: list[dict], exposures_per_s: float) -> dict | None:
    """The reference tick's runs before and after the scenario, their median and the run's share of it."""
    runs = [r["exposures_per_s"] for r in before + after]
    if not runs:
        return None
    median = float(statistics.median(runs))
    return {"before": [r["exposures_per_s"] for r in before], "after": [r["exposures_per_s"] for r in after],
            "median": median, "exposures_per_s": median, "share_of_median": exposures_per_s / median,
            "line": (before + after)[-1]["line"]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from scenarios import get_scenario
    from simulator.run.session import RunOptions, run_scenario
    from simulator.run.sweep import parse_settings

    sc = get_scenario(args.scenario)
    tmp = Path(tempfile.mkdtemp(prefix="coldsim-bench-"))
    opts = RunOptions(scenario=sc.name, scale=args.scale, days=args.days, seed=args.seed, runtime=args.runtime,
                      run_root=str(tmp / "runs"), experiment="bench", overrides=parse_settings(args.settings) or None)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    print(f"bench_scenario: {sc.name} scale={args.scale or 'default'} runtime={args.runtime} {args.settings or ''} "
          f"(run dir and MLflow DB under {tmp})", flush=True)
    runs = max(args.reference_runs, 0)
    if runs and not args.reference_tick.exists():
        print(f"reference tick: {args.reference_tick} not found, skipped")
        runs = 0
    before = reference_runs(args.reference_tick, min(runs, 1))
    t0 = time.perf_counter()
    sampler = MemorySampler(args.interval, with_pss=not args.no_pss, pss_interval=args.pss_interval)
    with ForeignLoad() as load, sampler as mem, DirSizeSampler(tmp / "runs") as disk:
        out = run_scenario(sc, opts, tracking_uri=uri)
    wall = time.perf_counter() - t0
    res = out.result
    t = {k: float(res.timings.get(k, 0.0)) for k in STAGES}
    other = wall - sum(t.values())
    ats = {arm: {"p50_min": v.get("ats_model_p50_min", float("nan")), "p95_min": v.get("ats_model_p95_min", float("nan"))}
           for arm, v in res.overall.items()}
    figures = {
        "scenario": sc.name, "scale": args.scale or "default", "runtime": args.runtime, "settings": args.settings,
        "days": res.days,
        "ticks_per_day": res.scenario.ticks_per_day, "arms": [a.name for a in res.scenario.arms],
        "n_users": res.scenario.synthetic.n_users, "n_creators": res.scenario.synthetic.n_creators,
        "wall_s": wall, "run_scenario_wall_s": out.wall_s, "stages_s": t, "other_s": other,
        "exposures": res.events, "exposures_per_s": res.events / wall,
        "pss_readings": mem.pss_samples, "peak_rss_sum_gb": mem.peak_rss / 1e9,
        "peak_pss_sum_gb": mem.peak_pss / 1e9 if mem.with_pss else None,
        "peak_driver_rss_gb": mem.peak_driver_rss / 1e9,
        "run_dir_peak_gb": disk.peak / 1e9, "run_dir_end_gb": disk.end / 1e9,
        "machine_used_rise_gb": (mem.peak_used - mem.base_used) / 1e9, "peak_processes": mem.peak_procs,
        "memory_samples": mem.samples, "load": load.as_dict(), "ats_model_min": ats,
        "peak_breakdown_gb": {k: {"rss": v[0] / 1e9, "pss": v[1] / 1e9, "processes": v[2]} for k, v in mem.peak_breakdown.items()}, "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(f"\n{sc.name} scale={figures['scale']} runtime={args.runtime}: {res.days} days x "
          f"{figures['ticks_per_day']} ticks, {len(figures['arms'])} arms, {figures['n_users']:,} users, "
          f"{figures['n_creators']:,} creators, {os.cpu_count()} CPUs")
    rows = [[k, f"{v:.1f}", f"{100 * v / wall:.1f}"] for k, v in t.items()]
    rows += [["other (log load, tracking, results)", f"{other:.1f}", f"{100 * other / wall:.1f}"],
             ["wall", f"{wall:.1f}", "100.0"]]
    print(fmt_table(rows, ["stage", "seconds", "% of wall"]))
    background = float(res.timings.get("checkpoint_background", 0.0))
    figures["checkpoint_background_s"] = background
    print(f"checkpoint writes in their background thread, beside the stages above: {background:.1f} s")
    print(f"simulated exposures: {res.events:,} ({res.events / wall:,.0f}/s of wall)")
    pss = f"{mem.peak_pss / 1e9:.2f} GB" if mem.with_pss else "n/a"
    print(f"peak memory (driver + descendants + Ray processes, {mem.samples} RSS samples every {args.interval}s, "
          f"{mem.pss_samples} PSS readings, "
          f"up to {mem.peak_procs} processes): RSS-sum {mem.peak_rss / 1e9:.2f} GB, PSS-sum {pss}; "
          f"driver alone {mem.peak_driver_rss / 1e9:.2f} GB; machine-wide used memory (MemTotal - MemAvailable) rose by "
          f"{(mem.peak_used - mem.base_used) / 1e9:.2f} GB at peak over the start (includes anything else running)")
    print(f"run directory: peak {disk.peak / 1e9:.3f} GB during the run (sampled every {disk.interval:.0f} s), "
          f"{disk.end / 1e9:.3f} GB at the end (checkpoints deleted on success)")
    print(f"contention check: {load.summary()}")
    print("CPU seconds by process: " + "; ".join(f"{name} {secs:.1f}" for name, secs in load.by_process().items()
                                                  if secs >= 0.5))
    if mem.peak_breakdown:
        top = sorted(mem.peak_breakdown.items(), key=lambda kv: -kv[1][0])
        print("at the RSS-sum peak, by process (name: RSS / PSS GB, count): " + "; ".join(
            f"{k}: {v[0] / 1e9:.2f} / {v[1] / 1e9:.2f} x{v[2]}" for k, v in top[:12]))
    for arm, a in ats.items():
        print(f"ATS (action -> served model reflects it), arm {arm}: p50 {a['p50_min']:.1f} min, p95 {a['p95_min']:.1f} min")
    after = reference_runs(args.reference_tick, runs - 1)
    ref = reference_figures(before, after, figures["exposures_per_s"])
    if ref is not None:
        figures["reference_tick"] = ref
        figures["share_of_reference"] = ref["share_of_median"]
        print(f"reference tick (same machine; its last run): {ref['line']}\n"
              f"reference tick exposures/s: before the run {', '.join(f'{x:,.0f}' for x in ref['before']) or '-'}; "
              f"after it {', '.join(f'{x:,.0f}' for x in ref['after']) or '-'}; median {ref['median']:,.0f}\n"
              f"this run: {figures['exposures_per_s']:,.0f} exposures/s = {100 * ref['share_of_median']:.1f} % "
              f"of the reference's median ({100 * figures['exposures_per_s'] / max(ref['before'] + ref['after']):.1f}"
              f"-{100 * figures['exposures_per_s'] / min(ref['before'] + ref['after']):.1f} % of its runs)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
