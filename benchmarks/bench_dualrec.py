"""DualRec serving costs on one thread: creator-side matching per uploaded item, the daily work, the user-side overhead.

Builds a `dualrec_v5` arm (the coldstart_ab spec) with ``--users`` known users (one request and a like each),
``--items`` catalogue items with positive users, ends a day (activity model fit, user index build), then measures:
  * matching per uploaded item (retrieval from the user index + item-sim + user-sim, ranking, UAC store),
    on upload batches of ``--batch`` items (a default-scale tick uploads ~60 items per arm),
  * the end-of-day work (lightgbm fit on the visit history + user index rebuild) per 10k users,
  * ``recommend`` for ``--request-users`` users with the DualRec channel vs the same arm's base channels only
    (the result-cache channel, eq. 14 boost and budget): the user-side overhead as a ratio.

Run: ``python benchmarks/bench_dualrec.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

DAY = 86_400


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--items", type=int, default=5_000)
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--request-users", type=int, default=5_000)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from scenarios import get_scenario
    from serving.arms import build_arm
    from trainers.arm_context import ArmContext
    from simulator.core.config import ModelConfig

    spec = next(x for x in get_scenario("coldstart_ab").arms if x.kind == "dualrec")
    ctx = ArmContext(model=ModelConfig(), slate_size=8, n_item_dense=1, seed=0)
    policy = build_arm(spec, ctx)
    rng = np.random.default_rng(0)
    t0 = 1_000 * DAY
    ids = np.arange(a.items)
    policy.upload_items(ids, ids % 1000, np.full(a.items, t0 - DAY), ids % 16, rng.random((a.items, 1)).astype(np.float32))
    users = np.arange(10**6, 10**6 + a.users)
    for chunk in np.array_split(users, max(1, a.users // 5000)):
        sl = policy.recommend(chunk, np.full(len(chunk), t0 + 100), seed=0)
        y = np.zeros(sl.item_ids.shape + (5,), bool)
        y[:, 0, 0] = True
        ok = sl.item_ids >= 0
        policy.feedback(np.repeat(chunk, ok.sum(1)), sl.item_ids[ok], np.full(ok.sum(), t0 + 200), y[ok])
    t = time.perf_counter()
    policy.end_day(t0 + DAY)
    day_end_s = time.perf_counter() - t
    ch = policy.channels[0]
    match_s, n_targets = [], []
    for b in range(a.batches):
        new = 10**7 + b * a.batch + np.arange(a.batch)
        t = time.perf_counter()
        policy.upload_items(new, new % 1000, np.full(a.batch, t0 + DAY + 60 * b), new % 16,
                            rng.random((a.batch, 1)).astype(np.float32))
        match_s.append(time.perf_counter() - t)
        n_targets += [len(v) for v in policy.last_targets.values()]
    req = users[: a.request_users]
    ts = np.full(len(req), t0 + DAY + 3600)
    t = time.perf_counter()
    policy.recommend(req, ts, seed=1)
    with_dr = time.perf_counter() - t
    channels = policy.channels
    policy.channels = channels[1:]  # the same arm without its DualRec channel
    policy.channel_names = [c.name for c in policy.channels]
    t = time.perf_counter()
    policy.recommend(req, ts, seed=1)
    without_dr = time.perf_counter() - t
    policy.channels, policy.channel_names = channels, [c.name for c in channels]
    per_item_ms = 1000 * float(np.median(match_s)) / a.batch
    out = {
        "users": a.users, "items": a.items, "match_ms_per_item": per_item_ms,
        "targets_per_item": float(np.mean(n_targets)), "day_end_s": day_end_s,
        "day_end_s_per_10k_users": day_end_s * 10_000 / a.users, "user_index": len(ch.creator_side.user_index),
        "recommend_s_with_dualrec": with_dr, "recommend_s_base_channels": without_dr,
        "recommend_ratio": with_dr / without_dr,
    }
    print(f"matching: {per_item_ms:.1f} ms per uploaded item (batches of {a.batch}; {out['targets_per_item']:.0f} targets "
          f"per item of T=200; user index {len(ch.creator_side.user_index):,} users)")
    print(f"end of day: {day_end_s:.2f} s for {a.users:,} users (activity model fit + user index rebuild)")
    print(f"recommend {len(req):,} users: {with_dr:.3f} s with the DualRec channel vs {without_dr:.3f} s without "
          f"({out['recommend_ratio']:.2f}x)")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
