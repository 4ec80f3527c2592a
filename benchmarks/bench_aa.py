"""A/A calibration: the share of (arm, metric) cells whose CI excludes 0 in the ``aa`` scenario, over seeds.

    python benchmarks/bench_aa.py --scale small --seeds 6 --base-models shared per_arm [--one-way] \
        [--optimizer lazy_adam]

Runs the ``aa`` scenario (three identical base arms) in-process for each seed and base-model mode
(:mod:`simulator.run.calibration`) and prints the false-positive rate over all defined cells, per metric
and for the CUPED lifts. A calibrated read-out is near 1 - ci_level (5%). ``--one-way`` bootstraps
every metric over its own unit only (the read-out before the two-way bootstrap). Figures:
docs/metrics.md, "A/A calibration".
"""

from __future__ import annotations

import argparse
import time

import polars as pl


def main() -> None:
    from scenarios import get_scenario
    from simulator.run.calibration import aa_comparisons, false_positive_rate
    from trainers.optim import OPTIMIZERS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="tiny")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--base-models", nargs="+", default=["shared", "per_arm"])
    ap.add_argument("--one-way", action="store_true", help="bootstrap each metric over its own unit only")
    ap.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                    help="the base models' optimiser (TrainConfig.optimizer; default: the scenario's)")
    args = ap.parse_args()
    sc = get_scenario("aa").at_scale(args.scale)
    if args.one_way:
        sc = sc._revalidated({"metrics": sc.metrics.model_copy(update={"bootstrap_two_way": False})})
    for mode in args.base_models:
        t = time.perf_counter()
        overrides = {"base_models": mode} | ({"optimizer": args.optimizer} if args.optimizer else {})
        comp = aa_comparisons(sc, list(range(args.seeds)), **overrides)
        fp, fp_cuped = false_positive_rate(comp), false_positive_rate(comp, cuped=True)
        optimizer = args.optimizer or sc.train.optimizer
        print(f"\n== base_models={mode}, optimizer={optimizer}, scale={args.scale}, {args.seeds} seeds"
              f"{', one-way' if args.one_way else ''}, "
              f"{time.perf_counter() - t:.0f}s: {fp.rate:.1%} of {fp.defined} defined cells flagged "
              f"({fp.undefined} undefined); CUPED lifts: {fp_cuped.rate:.1%} of {fp_cuped.defined}")
        with pl.Config(tbl_rows=40):
            print(fp.per_metric)


if __name__ == "__main__":
    main()
