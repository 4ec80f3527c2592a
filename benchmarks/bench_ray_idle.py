"""Ray at rest: the CPU that a started coldsim runtime uses while it has no work.

Starts the Ray runtime of a scenario exactly as a run does (``Simulation`` with ``RayRuntime``: Ray, one Serve app
per arm, the Train worker group and its coordinator, Ray Data's reader), waits ``--settle`` seconds for every
process to finish starting (the Train worker group starts in the background), then measures the CPU each process
uses over ``--seconds`` seconds in which nothing is asked of the runtime. That CPU is a tax on every run: on a
2-core machine it is a share of the machine the simulation cannot use (docs/performance.md, "Ray at rest").

Run: ``python benchmarks/bench_ray_idle.py`` (about 2.5 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import busy_cpu_seconds, cpu_seconds_by_process, fmt_table  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="coldstart_ab")
    p.add_argument("--scale", default="tiny", help="the scale of the started runtime (its idle cost barely depends on it)")
    p.add_argument("--settle", type=float, default=70.0, help="seconds to wait after the runtime started")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds measured")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from scenarios import get_scenario
    from simulator.run.loop import Simulation
    from simulator.run.ray_runtime import RayRuntime
    from simulator.sources.synthetic import generate_synthetic

    sc = get_scenario(args.scenario).at_scale(args.scale).model_copy(update={"days": 1})
    sim = Simulation(sc, generate_synthetic(sc.synthetic, sc.seed), RayRuntime,
                     Path(tempfile.mkdtemp(prefix="coldsim-idle-")) / "run", progress=False, checkpoints=False)
    try:
        time.sleep(args.settle)
        before, busy0, t0 = cpu_seconds_by_process(), busy_cpu_seconds(), time.perf_counter()
        time.sleep(args.seconds)
        after, busy1, dt = cpu_seconds_by_process(), busy_cpu_seconds(), time.perf_counter() - t0
    finally:
        sim.runtime.shutdown()
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    total = sum(used.values())
    cores = os.cpu_count() or 1
    rows = [[name, cpu, 100 * cpu / dt] for name, cpu in sorted(used.items(), key=lambda kv: -kv[1]) if cpu > 0.005]
    print(f"{sc.name} scale={args.scale} on Ray, at rest for {dt:.0f} s ({args.settle:.0f} s after it started), "
          f"{cores} cores")
    print(fmt_table(rows, ["process", "CPU-s", "% of a core"]))
    print(f"all of them: {total:.1f} CPU-s in {dt:.0f} s = {100 * total / dt:.1f} % of a core, "
          f"{100 * total / dt / cores:.1f} % of the machine; the machine was busy {busy1 - busy0:.1f} CPU-s")
    out = {"scenario": sc.name, "scale": args.scale, "seconds": dt, "cores": cores, "cpu_s_by_process": used,
           "total_cpu_s": total, "share_of_machine": total / dt / cores, "machine_busy_cpu_s": busy1 - busy0}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
