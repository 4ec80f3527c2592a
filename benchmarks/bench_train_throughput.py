"""Online training throughput: ``OnlineLearner.train_tick`` samples/s on one thread, as in the runtime.

For each arm of the scenario (``--arms``; default all), its learner (``trainers.online.make_learner``: two-tower
+ ranker, plus the arm kind's extra tasks such as Next-User) trains on a synthetic tick batch shaped like the
arm's feature-logged traffic: ids, user/item/pair dense features, five response labels drawn at the synthetic
platform's base rates, and for arms with a Next-User task the cold-item sequence features (``nu_seq``,
``nu_len``; ``--cold-share`` of the exposures are of cold items, sequences of random length). TrainConfig from
the scenario (minibatch ``batch_size``, ``epochs_per_tick``). The default ``--samples`` is one arm's tick at
the default scale (about 1.36M exposures / 14 days / 4 ticks / 2 arms ~= 12k). Prints ms per tick, samples/s,
the weight export cost and what that implies for a whole default-scale run.

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
    p.add_argument("--arms", nargs="*", default=None, help="arm names (default: every arm of the scenario)")
    p.add_argument("--cold-share", type=float, default=0.3, help="share of exposures of cold items (Next-User samples)")
    p.add_argument("--samples", type=int, default=12_000, help="exposures in one tick batch (one arm)")
    p.add_argument("--ticks", type=int, default=8, help="timed ticks")
    p.add_argument("--warmup", type=int, default=2, help="untimed ticks first")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the runtime uses 1)")
    p.add_argument("--run-exposures", type=float, default=1_356_456,
                   help="exposures of a whole run, to extrapolate training time (default: a measured default-scale run)")
    p.add_argument("--optimizer", default=None, help="the base models' optimiser, 'adam' or 'lazy_adam' "
                   "(TrainConfig.optimizer; default: the scenario's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def add_next_user_features(batch: dict[str, np.ndarray], seq_len: int, cold_share: float, seed: int) -> None:
    """``nu_seq`` (n, L) positive-user ids before the exposure, -1 padded; ``nu_len`` (n,), -1 = not a cold item."""
    rng = np.random.default_rng([seed, 0x2E0])
    n = len(batch["user_id"])
    length = np.where(rng.random(n) < cold_share, rng.integers(0, seq_len + 1, n), -1)
    seq = rng.integers(0, 20_000, (n, seq_len))
    batch["nu_seq"] = np.where(np.arange(seq_len)[None, :] < np.maximum(length, 0)[:, None], seq, -1).astype(np.int64)
    batch["nu_len"] = length.astype(np.int64)


def synthetic_batch(n: int, n_item_dense: int, seed: int) -> dict[str, np.ndarray]:
    from simulator.core.schema import RESPONSE_TYPES
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
    from trainers.arm_context import ArmContext
    from serving.arms import arm_tasks
    from simulator.run.sweep import apply_point
    from trainers.online import make_learner, tick_seed

    sc = get_scenario(args.scenario)
    if args.optimizer:  # validated as simulate's --set train.optimizer=... is
        sc = apply_point(sc, {"train.optimizer": args.optimizer})
    ctx = ArmContext(model=sc.model, slate_size=sc.synthetic.slate_size, n_item_dense=1, seed=sc.seed)
    names = args.arms or [a.name for a in sc.arms]
    out: dict = {"samples_per_tick": args.samples, "minibatch": sc.train.batch_size, "optimizer": sc.train.optimizer,
                 "epochs": sc.train.epochs_per_tick, "threads": args.threads, "run_exposures": args.run_exposures, "arms": {}}
    rows = []
    load = ForeignLoad().__enter__()
    for name in names:
        i = [a.name for a in sc.arms].index(name)
        spec = sc.arms[i]
        learner = make_learner(spec, ctx, sc.train, i, arm_tasks)
        batch = synthetic_batch(args.samples, 1, args.seed)
        if learner.extra_tasks:
            add_next_user_features(batch, spec.next_user.seq_len if spec.next_user else 50, args.cold_share, args.seed)
        pos = float((batch["labels"].sum(1) > 0).mean())
        times, w_times = [], []
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
        s_tick = float(np.median(times))
        rate = args.samples / s_tick
        params = sum(p.numel() for m in (learner.two_tower, learner.ranker) for p in m.parameters())
        extra = [getattr(x, "name", type(x).__name__) for x in learner.extra_tasks]
        out["arms"][name] = {"kind": spec.kind, "extra_tasks": extra, "positive_share": pos, "params_tt_ranker": params,
                             "s_per_tick_median": s_tick, "s_per_tick_min": min(times), "samples_per_s": rate,
                             "weights_export_ms": 1e3 * float(np.median(w_times)),
                             "implied_run_train_s": args.run_exposures / len(sc.arms) / rate}
        rows.append([name, "+".join(["two_tower", "ranker"] + extra), 1e3 * s_tick, 1e3 * min(times), rate,
                     1e3 * float(np.median(w_times)), out["arms"][name]["implied_run_train_s"]])
    load.__exit__(None, None, None)
    print(f"OnlineLearner per arm of '{sc.name}': {sc.train.optimizer}, minibatch {sc.train.batch_size}, "
          f"{sc.train.epochs_per_tick} "
          f"epoch(s)/tick, {args.threads} torch thread(s); tick batch {args.samples:,} exposures "
          f"({pos:.1%} with a positive response: two-tower samples; {args.cold_share:.0%} cold for Next-User)")
    print(fmt_table(rows, ["arm", "models", "median ms/tick", "min ms/tick", "samples/s", "weights() ms",
                           "implied run s (1 core)"]))
    print(f"implied: one pass over {args.run_exposures:,.0f} exposures split evenly over {len(sc.arms)} arms")
    out["load"] = load.as_dict()
    print(f"contention check: {load.summary()}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"figures written to {args.json}")
    return out


if __name__ == "__main__":
    main()
