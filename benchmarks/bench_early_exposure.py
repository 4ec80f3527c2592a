"""Scarce early exposure: first-day coverage of new items by the base stack, for a grid of supply and exploration.

    python benchmarks/bench_early_exposure.py                       # the default platform and stack
    python benchmarks/bench_early_exposure.py --grid                # the calibration table of docs/world.md

One ``base`` arm with half of the default platform's users and creators (share 0.5), 3 days, in-process,
read with :func:`simulator.metrics.daily.early_exposure`. Figures: docs/world.md, "Scarce early exposure".
"""

from __future__ import annotations

import argparse
import tempfile
import time

GRID = [  # (uploads per creator-day, fresh_k, fresh_popularity_power, new_item_boost)
    (0.35, 30, 0.0, 0.15), (0.35, 0, 0.0, 0.0), (1.0, 2, 1.0, 0.05),
    (0.1, 0, 1.0, 0.0), (0.1, 0, 1.0, 0.05), (0.1, 1, 1.0, 0.0), (0.1, 2, 1.0, 0.05), (0.1, 0.05, 1.0, 0.01),
    (0.2, 0, 1.0, 0.0), (0.2, 0.1, 1.0, 0.01),
]


def measure(uploads: float | None, fresh_k: float | None, power: float | None, boost: float | None, days: int = 3,
            seed: int = 0) -> dict[str, float]:
    from simulator.core.config import ArmSpec, Scenario, StackConfig, SyntheticConfig
    from simulator.run.loop import Simulation
    from simulator.metrics.daily import early_exposure
    from simulator.run.runtime import LocalRuntime
    from simulator.sources.synthetic import generate_synthetic

    stack = {k: v for k, v in (("fresh_k", fresh_k), ("fresh_popularity_power", power), ("new_item_boost", boost))
             if v is not None}
    syn = {"days": days} | ({"uploads_per_creator_day": uploads} if uploads is not None else {})
    sc = Scenario(name="early", description="early exposure", control="base", days=days, seed=seed,
                  arms=[ArmSpec(name="base", kind="base", share=0.5, stack=StackConfig(**stack))],
                  synthetic=SyntheticConfig(**syn))
    log = generate_synthetic(sc.synthetic, seed)
    with tempfile.TemporaryDirectory(prefix="coldsim-early-") as tmp:
        sim = Simulation(sc, log, LocalRuntime, tmp, progress=False, checkpoints=False)
        sim.run()
        data = sim.arms[0].data(0.5)
    return early_exposure(data, sim.t0, sim.days)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="store_true", help="the calibration grid instead of the defaults")
    args = ap.parse_args()
    rows = GRID if args.grid else [(None, None, None, None)]
    print("| uploads/creator-day | fresh_k | power | boost | first-day coverage | q50 / q90 / q99 | top 10% share | s |")
    print("|---|---|---|---|---|---|---|---|")
    for up, k, p, b in rows:
        t = time.perf_counter()
        e = measure(up, k, p, b)
        print(f"| {up or 'default'} | {k if k is not None else 'default'} | {p if p is not None else 'default'} | "
              f"{b if b is not None else 'default'} | {e['early.coverage']:.1%} of {e['early.items']:.0f} | "
              f"{e['early.expo_q50']:.0f} / {e['early.expo_q90']:.0f} / {e['early.expo_q99']:.0f} | "
              f"{e['early.top10_share']:.0%} | {time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
