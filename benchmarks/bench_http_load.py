"""HTTP under load while a simulation runs: latency percentiles, throughput and memory of the whole process tree.

Starts ``simulate --http`` (this interpreter's ``python -m simulator.run.cli``) in a subprocess (Ray runtime, the Serve ingress on 127.0.0.1), waits for ``/healthz``,
lets the run go on alone for ``--warmup`` seconds, then ``--clients`` concurrent httpx clients send
``POST /arms/{arm}/recommend`` (one user each, from a bounded pool of ``--users`` ids, arms in turn) for
``--seconds`` or until the run ends. Memory (PSS of the simulation's process tree and Ray's processes) is sampled
every second throughout. Prints requests/s, p50/p90/p99/max latency, errors by kind (with the first error bodies),
PSS when the load starts and its peak, the PSS slope without load (the warm-up's second half: the run's own
growth) and under load (the load's second half: bounded memory means no steeper), and whether the run finished
(exit code 0) with its wall time.

HTTP traffic during a run changes the arms' state (the requests are served and counted), so the run's metrics are
not reproducible; this measures the platform, not the experiment.

Run: ``python benchmarks/bench_http_load.py`` (default scale, 64 clients, 60 s; ~6 min on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ForeignLoad, fmt_table, tree_pids, _pss  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="coldstart_ab")
    p.add_argument("--scale", default="default")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=60.0, help="seconds the run goes on alone before the load")
    p.add_argument("--users", type=int, default=1000, help="user ids the clients draw from (a bounded pool)")
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pss_of_tree(root: int) -> float:
    """GB of PSS of ``root``'s process tree and Ray's processes."""
    return sum(_pss(p) for p in tree_pids(root)) / 1e9


async def load(port: int, arms: list[str], args, run: subprocess.Popen, memory: list) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    samples: list[str] = []  # the first error bodies
    rng = np.random.default_rng(0)
    stop_at = time.monotonic() + args.seconds

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60.0, limits=limits) as client:
        async def worker(k: int):
            i = k
            while time.monotonic() < stop_at and run.poll() is None:
                body = {"user_ids": [int(rng.integers(args.users))], "ts": 2_000_000_000}
                t = time.perf_counter()
                try:
                    r = await client.post(f"/arms/{arms[i % len(arms)]}/recommend", json=body)
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t)
                    else:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                        if len(samples) < 3:
                            samples.append(r.text[:300])
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                i += len(arms)

        async def sampler():
            start = time.monotonic()
            while time.monotonic() < stop_at and run.poll() is None:
                memory.append((time.monotonic() - start, pss_of_tree(run.pid)))
                await asyncio.sleep(1.0)

        start = time.perf_counter()
        await asyncio.gather(sampler(), *(worker(k) for k in range(args.clients)))
        seconds = time.perf_counter() - start
    lat = np.array(latencies) * 1e3
    pct = {f"p{q}": float(np.percentile(lat, q)) if len(lat) else float("nan") for q in (50, 90, 99)}
    return {"seconds": seconds, "requests": len(lat), "requests_per_s": len(lat) / seconds, **pct,
            "max_ms": float(lat.max()) if len(lat) else float("nan"), "errors": errors, "error_samples": samples}


def _slope(series: list[tuple[float, float]]) -> float:
    """GB per minute over the second half of a (seconds, GB) series (least squares)."""
    if not series:
        return float("nan")
    half = [(t, m) for t, m in series if t >= series[-1][0] / 2]
    return float(np.polyfit(*zip(*half), 1)[0]) * 60 if len(half) >= 3 else float("nan")


def main(argv=None) -> dict:
    import httpx

    args = parse_args(argv)
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="coldsim-httpload-"))
    cmd = [sys.executable, "-m", "simulator.run.cli", "--scenario", args.scenario, "--scale", args.scale, "--http", "--set", f"serve.port={port}",
           "--storage", str(work / "runs"), "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--no-progress"]
    start = time.perf_counter()
    run = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    figures: dict = {"scenario": args.scenario, "scale": args.scale, "clients": args.clients, "cpus": os.cpu_count(),
                     "date": time.strftime("%Y-%m-%d %H:%M")}
    with ForeignLoad() as foreign:
        deadline = time.monotonic() + args.startup_timeout
        arms = None
        while time.monotonic() < deadline and run.poll() is None:
            try:
                arms = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["arms"]
                break
            except (httpx.HTTPError, ValueError, KeyError):
                time.sleep(1.0)
        if arms is None:
            run.kill()
            raise SystemExit(f"the run's HTTP ingress did not answer within {args.startup_timeout:.0f} s: "
                             f"{(run.stdout.read() if run.stdout else '')[-2000:]}")
        figures["ready_s"] = time.perf_counter() - start
        quiet: list[tuple[float, float]] = []
        warm_start = time.monotonic()
        while time.monotonic() - warm_start < args.warmup and run.poll() is None:
            quiet.append((time.monotonic() - warm_start, pss_of_tree(run.pid)))
            time.sleep(1.0)
        memory: list[tuple[float, float]] = []
        figures["load"] = asyncio.run(load(port, arms, args, run, memory))
        output = run.communicate()[0]
    figures["run_exit_code"] = run.returncode
    figures["run_wall_s"] = time.perf_counter() - start
    figures["memory"], figures["memory_warmup"] = memory, quiet
    slope, quiet_slope = _slope(memory), _slope(quiet)
    figures["pss_start_gb"] = memory[0][1] if memory else float("nan")
    figures["pss_peak_gb"] = max(m for _, m in memory) if memory else float("nan")
    figures["pss_slope_gb_per_min"], figures["pss_slope_warmup_gb_per_min"] = slope, quiet_slope
    ld = figures["load"]
    print(f"\nbench_http_load: {args.scenario} {args.scale}, {args.clients} clients, {os.cpu_count()} CPUs")
    print(fmt_table([[f"{ld['seconds']:.1f}", f"{ld['requests']:,}", f"{ld['requests_per_s']:,.0f}", f"{ld['p50']:.1f}",
                      f"{ld['p90']:.1f}", f"{ld['p99']:.1f}", f"{ld['max_ms']:.1f}", json.dumps(ld["errors"])]],
                    ["load s", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"]))
    for sample in ld["error_samples"]:
        print(f"  error: {sample}")
    print(f"PSS at the load's start {figures['pss_start_gb']:.2f} GB, peak {figures['pss_peak_gb']:.2f} GB; slope "
          f"without load {quiet_slope:+.3f} GB/min, under load {slope:+.3f} GB/min (second halves)")
    print(f"the run: exit code {run.returncode}, {figures['run_wall_s']:.0f} s wall, HTTP ready after "
          f"{figures['ready_s']:.0f} s")
    if run.returncode != 0:
        print(output[-3000:])
    print(f"contention check: {foreign.summary()}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
