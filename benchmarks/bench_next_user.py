"""Next-User Retrieval costs on one thread: training samples/s, u_next regeneration and index update per item.

Builds a `next_user` arm (the coldstart_ab spec), uploads ``--items`` synthetic items, gives them positive-user
sequences of realistic cold-item lengths (geometric, mean ~3, capped at 50), then measures:
  * ``NextUserTask.train`` samples/s on a tick-sized batch of cold-item exposures (``--samples``),
  * ``NextUserChannel.generate`` (u^_next for a batch of items) per 1k items,
  * the in-place hnswlib update (``ANNIndex.add`` of existing labels) per 1k items,
  * the cost of one tick's regeneration at the default scale (likes on cold items per arm and tick,
    measured in a default coldstart_ab run: ``--likes-per-tick``).

Run: ``python benchmarks/bench_next_user.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=8000)
    p.add_argument("--samples", type=int, default=8192)
    p.add_argument("--likes-per-tick", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from scenarios import get_scenario
    from serving.arms import arm_tasks, build_arm
    from trainers.arm_context import ArmContext
    from simulator.core.config import ModelConfig
    from trainers.online import make_learner

    sc = get_scenario("coldstart_ab")
    spec = next(x for x in sc.arms if x.kind == "next_user")
    ctx = ArmContext(model=ModelConfig(), slate_size=8, n_item_dense=1, seed=0)
    policy = build_arm(spec, ctx)
    rng = np.random.default_rng(0)
    ids = np.arange(a.items)
    t = time.perf_counter()
    policy.upload_items(ids, ids % 1000, np.zeros(a.items, np.int64), ids % 16, rng.random((a.items, 1)).astype(np.float32))
    upload_s = time.perf_counter() - t
    n_likes = np.minimum(rng.geometric(0.3, a.items), 50)
    users = rng.integers(0, 20000, n_likes.sum())
    items = np.repeat(ids, n_likes)
    y = np.zeros((len(users), 5), bool)
    y[:, 0] = True
    policy.feedback(users, items, np.arange(len(users)), y)
    ch = next(c for c in policy.channels if c.name == "next_user")

    rows = np.arange(a.items)
    gen = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        vecs = ch.generate(policy, rows)
        gen.append(time.perf_counter() - t)
    add = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        ch.index.add(rows, vecs)
        add.append(time.perf_counter() - t)
    tick_rows = rng.choice(rows, min(a.likes_per_tick, a.items), replace=False)
    t = time.perf_counter()
    ch.on_feedback(policy, tick_rows, now=3600)
    tick_s = time.perf_counter() - t

    learner = make_learner(spec, ctx, sc.train, 0, arm_tasks)
    task = learner.extra_tasks[0]
    n = a.samples
    it = rng.integers(0, a.items, n)
    seq, ln = policy.store.sequences(it)
    labels = np.zeros((n, 5), bool)
    labels[rng.random(n) < 0.08, 0] = True
    batch = {"user_id": rng.integers(0, 20000, n), "item_id": it, "creator_id": it % 1000, "category": it % 16,
             "user_dense": rng.random((n, 3)).astype(np.float32), "item_dense": rng.random((n, 1)).astype(np.float32),
             "pair_dense": np.zeros((n, 3), np.float32), "labels": labels, "nu_seq": seq, "nu_len": ln}
    tr = []
    for r in range(a.repeats):
        t = time.perf_counter()
        task.train(batch, r)
        tr.append(time.perf_counter() - t)
    k = a.items / 1000
    print(f"items {a.items}, mean sequence length {n_likes.mean():.2f}; upload (prefix-only u_next + index insert): {upload_s:.2f}s")
    print(f"| what | figure |\n|---|---|")
    print(f"| NextUserTask.train | {n / np.median(tr):,.0f} samples/s ({np.median(tr):.2f}s for {n} samples) |")
    print(f"| u_next regeneration | {np.median(gen) / k * 1000:.1f} ms per 1k items |")
    print(f"| hnswlib in-place update | {np.median(add) / k * 1000:.1f} ms per 1k items |")
    print(f"| one tick's regeneration ({len(tick_rows)} liked cold items) | {tick_s * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
