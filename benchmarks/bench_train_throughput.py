"""Online training throughput: ``OnlineLearner.train_tick`` samples/s on one thread, as in the runtime.

A synthetic tick batch shaped like the arms' feature-logged traffic (ids, user/item/pair dense features,
five response labels drawn at the synthetic platform's base rates) of ``--samples`` exposures, trained with
the scenario's TrainConfig (minibatch ``batch_size``, ``epochs_per_tick``): ranker on every exposure,
two-tower on the positives (any response, views included). The default ``--samples`` is one arm's tick at the
default scale of coldstart_ab (about 1.36M exposures / 14 days / 4 ticks / 2 arms ~= 12k).
Prints seconds per tick, samples/s, and what that implies for a whole default-scale run.

Run: ``python benchmarks/bench_train_throughput.py`` (under a minute).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ForeignLoad, fmt_table  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="coldstart_ab")
    p.add_argument("--samples", type=int, default=12_000, help="exposures in one tick batch (one arm)")
    p.add_argument("--ticks", type=int, default=8, help="timed ticks")
    p.add_argument("--warmup", type=int, default=2, help="untimed ticks first")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the runtime uses 1)")
    p.add_argument("--run-exposures", type=float, default=1_356_456,
                   help="exposures of a whole run, to extrapolate training time (default: a measured default-scale run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def synthetic_batch(n: int, n_item_dense: int, seed: int) -> dict[str, np.ndarray]:
    from simulator.schema import RESPONSE_TYPES
    from simulator.sources.synthetic import BASE_RATES

    rng = np.random.default_rng([seed, 0x7A1])
    rates = np.array([BASE_RATES[e] for e in RESPONSE_TYPES])
    return {
        "user_id": rng.integers(0, 20_000, n).astype(np.int64),
        "item_id": rng.integers(0, 40_000, n).astype(np.int64),
        "creator_id": rng.integers(0, 2_000, n).astype(np.int64),
        "category": rng.integers(0, 16, n).astype(np.int64),
        "user_dense": rng.random((n, 3)).astype(np.float32),
        "item_dense": rng.lognormal(0, 0.5, (n, n_item_dense)).astype(np.float32),
        "pair_dense": rng.random((n, 3)).astype(np.float32),
        "labels": rng.random((n, len(RESPONSE_TYPES))) < rates,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from scenarios import get_scenario
    from serving.arms import ArmContext
    from trainers.online import make_learner, tick_seed

    sc = get_scenario(args.scenario)
    ctx = ArmContext(model=sc.model, slate_size=sc.synthetic.slate_size, n_item_dense=1, seed=sc.seed)
    learner = make_learner(ctx, sc.train, 0)
    batch = synthetic_batch(args.samples, 1, args.seed)
    pos = float((batch["labels"].sum(1) > 0).mean())
    times, w_times = [], []
    load = ForeignLoad().__enter__()
    for t in range(args.warmup + args.ticks):
        t0 = time.perf_counter()
        learner.train_tick(batch, tick_seed(learner.seed, t))
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        learner.weights()  # what the worker exports after every tick
        dw = time.perf_counter() - t0
        if t >= args.warmup:
            times.append(dt)
            w_times.append(dw)
    load.__exit__(None, None, None)
    s_tick = float(np.median(times))
    rate = args.samples / s_tick
    n_params = sum(p.numel() for p in learner.two_tower.parameters()) + sum(p.numel() for p in learner.ranker.parameters())
    out = {"samples_per_tick": args.samples, "minibatch": sc.train.batch_size, "epochs": sc.train.epochs_per_tick,
           "positive_share": pos, "threads": args.threads, "s_per_tick_median": s_tick, "samples_per_s": rate,
           "weights_export_ms": 1e3 * float(np.median(w_times)), "params": n_params,
           "run_exposures": args.run_exposures, "implied_run_train_s": args.run_exposures / rate}
    print(f"OnlineLearner ({n_params:,} parameters), minibatch {sc.train.batch_size}, "
          f"{sc.train.epochs_per_tick} epoch(s)/tick, {args.threads} thread(s); tick batch {args.samples:,} exposures, "
          f"{pos:.1%} with a positive (two-tower samples)")
    print(fmt_table([[args.samples, 1e3 * s_tick, 1e3 * min(times), rate, out["weights_export_ms"]]],
                    ["samples/tick", "median ms/tick", "min ms/tick", "samples/s", "weights() ms"]))
    print(f"implied training time for {args.run_exposures:,.0f} exposures (one pass): "
          f"{out['implied_run_train_s']:.0f}s of one core")
    out["load"] = load.as_dict()
    print(f"contention check: {load.summary()}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"figures written to {args.json}")
    return out


if __name__ == "__main__":
    main()
