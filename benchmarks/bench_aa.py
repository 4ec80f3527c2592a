"""A/A calibration: the share of (arm, metric) cells whose CI excludes 0 in the ``aa`` scenario, over seeds.

    python benchmarks/bench_aa.py --scale small --seeds 6 --base-models shared per_arm [--one-way] \
        [--optimizer lazy_adam] [--processes 2]

Runs the ``aa`` scenario (three identical base arms) in-process for each seed and base-model mode
(:mod:`simulator.run.calibration`) and prints the false-positive rate over all defined cells, per metric
and for the CUPED lifts. A calibrated read-out is near 1 - ci_level (5%). ``--one-way`` also reads the same
runs out with every metric bootstrapped over its own unit only (the read-out before the two-way bootstrap;
nothing replayed). Figures:
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
    ap.add_argument("--one-way", action="store_true",
                    help="also read the same runs out with each metric bootstrapped over its own unit only")
    ap.add_argument("--processes", type=int, default=1,
                    help="seeds played at a time, each in a process of its own (the same rates; less wall on more "
                    "cores)")
    ap.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                    help="the base models' optimiser (TrainConfig.optimizer; default: the scenario's)")
    args = ap.parse_args()
    sc = get_scenario("aa").at_scale(args.scale)
    read_outs = {"one-way": sc.metrics.model_copy(update={"bootstrap_two_way": False})} if args.one_way else {}
    for mode in args.base_models:
        t = time.perf_counter()
        overrides = {"base_models": mode} | ({"optimizer": args.optimizer} if args.optimizer else {})
        runs = aa_comparisons(sc, list(range(args.seeds)), read_outs=read_outs, processes=args.processes, **overrides)
        seconds = time.perf_counter() - t
        optimizer = args.optimizer or sc.train.optimizer
        for read_out in ["scenario", *read_outs]:
            comp = runs.filter(pl.col("read_out") == read_out)
            fp, fp_cuped = false_positive_rate(comp), false_positive_rate(comp, cuped=True)
            print(f"\n== base_models={mode}, optimizer={optimizer}, scale={args.scale}, {args.seeds} seeds, "
                  f"{'two-way (the scenario)' if read_out == 'scenario' else read_out} read-out, {seconds:.0f}s: "
                  f"{fp.rate:.1%} of {fp.defined} defined cells flagged ({fp.undefined} undefined); "
                  f"CUPED lifts: {fp_cuped.rate:.1%} of {fp_cuped.defined}")
            with pl.Config(tbl_rows=40):
                print(fp.per_metric)


if __name__ == "__main__":
    main()
