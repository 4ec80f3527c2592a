"""IHM real-time serving costs on one thread: item-embedding inference and in-place index update per 1k items.

Builds the ``ihm`` arm of the ihm_ab scenario (default model sizes), uploads ``--items`` synthetic items,
gives them positive-user histories of cold-item lengths (geometric, mean ~3, capped at 50) and users
positive-item sequences, then measures:
  * ``IHMChannel.infer`` (e_i of a batch of items, histories read up to a time) per 1k items,
  * the in-place hnswlib update (``ANNIndex.add`` of existing labels) per 1k items,
  * one real-time feedback call with ``--likes`` likes on distinct cold items (``IHMChannel.on_feedback``:
    triggers, rate limit, inference, KV store and index update),
  * the SASRec user vectors and the feature logging of the channel per 1k requests,
  * ``IHMTask.train`` samples/s on a tick of ``--samples`` logged positives.

With ``--scale tiny|small|default`` it instead runs the ihm_ab scenario at that scale in-process (no MLflow)
and prints, per IHM arm, the ATS percentiles pooled over the run, the inference counts and the wall time
its channel spent in inference and in index updates per tick (``IHMChannel.seconds``).

Run: ``python benchmarks/bench_ihm.py`` (under a minute); ``python benchmarks/bench_ihm.py --scale small``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _median_s(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return float(np.median(out))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=8000)
    p.add_argument("--likes", type=int, default=300, help="likes in the timed feedback call (one round of an arm)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--scale", choices=["tiny", "small", "default"], help="run ihm_ab at this scale instead")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.scale:
        return run_scenario_costs(a.scale)
    from scenarios import get_scenario
    from serving.arms import arm_tasks, build_arm
    from trainers.arm_context import ArmContext
    from serving.channels.base import RequestContext
    from simulator.core.config import ModelConfig
    from trainers.online import make_learner

    sc = get_scenario("ihm_ab")
    spec = next(x for x in sc.arms if x.name == "ihm")
    ctx = ArmContext(model=ModelConfig(), slate_size=8, n_item_dense=1, seed=0)
    policy = build_arm(spec, ctx)
    ch = next(c for c in policy.channels if c.name == "ihm")
    rng = np.random.default_rng(0)
    t0 = 1_767_225_600
    ids = np.arange(a.items)
    t = time.perf_counter()
    policy.upload_items(ids, ids % 1000, np.full(a.items, t0), ids % 16, rng.random((a.items, 1)).astype(np.float32))
    upload_s = time.perf_counter() - t
    n_likes = np.minimum(rng.geometric(0.3, a.items), 50)
    users = rng.integers(0, 20000, n_likes.sum())
    items = np.repeat(ids, n_likes)
    y = np.zeros((len(users), 5), bool)
    y[:, 0] = True
    s = policy.store
    s.record(users, items, t0 + 60 + np.arange(len(users)) % 3600, y)  # histories, without the channel's work
    ch.seq_seen[: s.n_items] = s.item_seq_count[: s.n_items]
    ch.expo_seen[: s.n_items] = s.item_expo[: s.n_items]
    rows = np.arange(a.items)
    at = np.full(a.items, t0 + 7200, np.int64)
    infer_s = _median_s(lambda: ch.infer(policy, rows, at), a.repeats)
    vecs = ch.infer(policy, rows, at)
    add_s = _median_s(lambda: ch.index.add(rows, vecs), a.repeats)

    # one real-time feedback call: likes on distinct cold items, none inside the rate limit
    fb = []
    for r in range(a.repeats):
        tick_items = rng.choice(ids, min(a.likes, a.items), replace=False)
        ts = np.full(len(tick_items), t0 + 10_000 + 1000 * r, np.int64)
        yy = np.zeros((len(tick_items), 5), bool)
        yy[:, 0] = True
        liked = s.record(rng.integers(20000, 40000, len(tick_items)), tick_items, ts, yy)  # what ArmPolicy.feedback does
        t = time.perf_counter()
        ch.on_feedback(policy, liked, int(ts.max()))  # ... then its channels' hook
        fb.append(time.perf_counter() - t)
    feedback_s = float(np.median(fb))

    req_users = policy.store.ensure_users(rng.integers(0, 20000, a.requests))
    user_s = _median_s(lambda: ch.user_vectors(policy, req_users), a.repeats)
    rctx = RequestContext(req_users, np.full(a.requests, t0 + 20_000, np.int64), rng, policy)
    slate_rows = rng.integers(0, a.items, (a.requests, 8))
    log_s = _median_s(lambda: ch.log_features(policy, rctx, slate_rows, np.ones(slate_rows.shape, bool)), a.repeats)

    learner = make_learner(spec, ctx, sc.train, 0, arm_tasks)
    task = learner.extra_tasks[0]
    n = a.samples
    ri = rng.integers(0, a.requests, n)
    feats = ch.log_features(policy, rctx, slate_rows, np.ones(slate_rows.shape, bool))
    it = slate_rows[ri, 0]
    labels = np.zeros((n, 5), bool)
    labels[:, 0] = True
    batch = {"user_id": policy.store.users.ids[req_users[ri]], "item_id": it, "creator_id": it % 1000,
             "category": it % 16, "item_dense": policy.store.item_dense[it], "labels": labels,
             **{k: v[ri, 0] for k, v in feats.items()}}
    train_s = _median_s(lambda: task.train(batch, 0), max(1, a.repeats // 2))

    k = a.items / 1000
    print(f"items {a.items}, mean history length {n_likes.mean():.2f}; upload (E_S + index insert): {upload_s:.2f}s")
    print("| what | figure |\n|---|---|")
    print(f"| IHM inference (item tower, history up to a time) | {infer_s / k * 1000:.1f} ms per 1k items |")
    print(f"| hnswlib in-place update | {add_s / k * 1000:.1f} ms per 1k items |")
    print(f"| real-time feedback call, {a.likes} likes on distinct items | {feedback_s * 1000:.1f} ms "
          f"({feedback_s / a.likes * 1e6:.0f} us per like) |")
    print(f"| SASRec user vectors | {user_s / a.requests * 1e6:.0f} ms per 1k requests |")
    print(f"| feature logging (log_features, slate 8) | {log_s / a.requests * 1e6:.0f} ms per 1k requests |")
    print(f"| IHMTask.train | {n / train_s:,.0f} samples/s ({train_s:.2f}s for {n}) |")


def run_scenario_costs(scale: str) -> None:
    import tempfile
    from pathlib import Path

    from scenarios import get_scenario
    from simulator.run.loop import Simulation
    from simulator.run.runtime import LocalRuntime
    from simulator.run.logs import load_log

    sc = get_scenario("ihm_ab").at_scale(scale)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        sim = Simulation(sc, load_log(None, sc), LocalRuntime, Path(d), tracker=None, progress=False)
        res = sim.run()
        wall = time.perf_counter() - t
        ticks = sim.days * sim.ticks_per_day
        print(f"ihm_ab --scale {scale}: {sim.days} days x {sim.ticks_per_day} ticks, {res.events:,} exposures, {wall:.0f}s wall "
              f"(serve {res.timings['serve']:.0f}s, train {res.timings['train']:.0f}s)")
        print("| arm | ATS p50 / p95 (min, pooled) | on time: p50 / p95 | ATS samples | late | triggered inferences | "
              "deferred | batch inferences | inference ms/tick | index update ms/tick |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for arm, pol in sim.runtime.policies.items():
            ch = next((c for c in pol.channels if c.name == "ihm"), None)
            if ch is None:
                continue
            o, diag = res.overall[arm], res.diagnostics[arm]
            tot = lambda c: float(diag[c].sum()) if c in diag.columns else 0.0  # noqa: E731
            print(f"| {arm} | {o.get('ihm.run.ats_p50_min', float('nan')):.2f} / "
                  f"{o.get('ihm.run.ats_p95_min', float('nan')):.2f} | "
                  f"{o.get('ihm.run.ats_ontime_p50_min', float('nan')):.2f} / "
                  f"{o.get('ihm.run.ats_ontime_p95_min', float('nan')):.2f} | {o.get('ihm.run.ats_samples', 0):.0f} | "
                  f"{tot('ihm.late'):.0f} | {tot('ihm.inferences'):.0f} | {tot('ihm.deferred'):.0f} | "
                  f"{tot('ihm.batch_inferences'):.0f} | {ch.seconds['infer'] / ticks * 1000:.1f} | "
                  f"{ch.seconds['index'] / ticks * 1000:.1f} |")


if __name__ == "__main__":
    main()
