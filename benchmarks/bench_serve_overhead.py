"""Ray Serve overhead: the same arm policy called in-process vs through a Serve deployment handle, plus HTTP.

What it measures
  1. One arm (the scenario's control arm by default): ``ArmPolicy.recommend`` on a tick's worth of requests
     (``--users-per-call`` users per call, array payload) called directly in this process, and the same call
     through a real ``serving.app.ArmDeployment`` (one replica, ``serve.run`` + deployment handle, exactly as
     ``simulator.run.ray_runtime.RayRuntime`` calls it). Both copies of the arm are brought to the same state
     (same catalogue upload, same warm-up recommend/feedback rounds), get the same requests and seeds, and
     must return identical slates (checked). Per-call ms for both and the ratio serve / in-process
     (requirement: <= 1.5x). Also the latency of a no-op handle call and the payload size.
  2. Every arm of the scenario in one round, as the runtime does it: in-process one after another vs one
     concurrent handle call per arm (replicas are separate processes, so on 2 cores they can overlap).
  3. HTTP ingress (FastAPI ``Gateway`` on 127.0.0.1): a bounded number of single-user POST
     /arms/{arm}/recommend requests from ``--http-concurrency`` concurrent httpx clients, and sequentially;
     requests/s, latency percentiles and the mean ``@serve.batch`` size (observed by counting the policy
     calls inside an instrumented subclass of ArmDeployment).

Run: ``python benchmarks/bench_serve_overhead.py`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ForeignLoad, build_workload, cpu_seconds_by_process, fmt_table, pct, request_batches, warm_up  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="coldstart_ab", help="scenario whose arm specs are served")
    p.add_argument("--platform-users", type=int, default=20_000, help="users of the synthetic platform")
    p.add_argument("--creators", type=int, default=1_000, help="creators (about 3.7 items each: a few thousand items)")
    p.add_argument("--days", type=int, default=2, help="days of synthetic uploads in the catalogue")
    p.add_argument("--warmup-rounds", type=int, default=6, help="recommend -> respond -> feedback rounds before timing")
    p.add_argument("--warmup-users", type=int, default=4_000, help="users per warm-up round")
    p.add_argument("--users-per-call", type=int, default=5_000, help="requests per recommend call (a tick's round)")
    p.add_argument("--calls", type=int, default=10, help="timed calls per side")
    p.add_argument("--discard", type=int, default=2, help="untimed calls per side before timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-handle", action="store_true", help="skip sections 1 and 2 (handle vs in-process)")
    p.add_argument("--skip-multi-arm", action="store_true", help="skip the all-arms concurrent round")
    p.add_argument("--skip-http", action="store_true", help="skip the HTTP ingress measurement")
    p.add_argument("--http-requests", type=int, default=1_000, help="single-user HTTP requests per concurrency level")
    p.add_argument("--http-concurrency", type=int, nargs="+", default=[1, 8, 64], help="concurrent clients (levels)")
    p.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0: a free one)")
    p.add_argument("--gateway-max-ongoing", type=int, default=None,
                   help="override the Gateway's max_ongoing_requests (e.g. 5, Serve's default, to compare)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_slates(a, b) -> bool:
    return bool(np.array_equal(a.item_ids, b.item_ids) and np.allclose(a.score, b.score, equal_nan=True))


def replay_on_handle(handle, items, calls) -> None:
    handle.upload.remote(items).result()
    for users, ts, seed, fb in calls:
        handle.recommend.remote(users, ts, seed).result()
        handle.feedback.remote(*fb).result()


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as LocalRuntime and the Serve replica do
    from serving.arms import build_arm
    from scenarios import get_scenario

    sc = get_scenario(args.scenario)
    n_arms = len(sc.arms)
    print(f"building {n_arms} arm workload(s) of '{args.scenario}': {args.platform_users:,} users, "
          f"{args.creators:,} creators, {args.days} days of uploads ...", flush=True)
    wls = [build_workload(args.scenario, i, args.platform_users, args.creators, args.days, args.seed) for i in range(n_arms)]
    n_items = len(wls[0].items["item_id"])
    policies, warm_calls = [], []
    t = time.perf_counter()
    for wl in wls:
        pol = build_arm(wl.spec, wl.ctx)
        pol.upload_items(wl.items["item_id"], wl.items["creator_id"], wl.items["upload_ts"], wl.items["category"],
                         wl.items["dense"])
        warm_calls.append(warm_up(pol, wl, args.warmup_rounds, args.warmup_users, args.seed))
        policies.append(pol)
    st = policies[0].store
    print(f"in-process arms populated in {time.perf_counter() - t:.1f}s: {n_items:,} items, {len(st.users):,} users, "
          f"{len(st.seen):,} seen pairs, {int(st.item_inter.sum()):,} interactions (arm 0)", flush=True)
    batches = request_batches(wls[0], args.discard + args.calls, args.users_per_call, args.seed)

    import ray
    from ray import serve

    from serving.app import ArmDeployment, Gateway, deployment_name

    from simulator.run.ray_runtime import init_ray, start_serve

    init_ray()  # Ray as a coldsim run starts it (its system config and environment)
    out: dict = {"n_items": n_items, "users_per_call": args.users_per_call, "calls": args.calls}
    load = ForeignLoad().__enter__()
    try:
        apps = {}
        if not args.skip_handle:
            apps = handle_sections(args, wls, policies, warm_calls, batches, out)
        # ------------------------------------------------------------------ 3. HTTP ingress
        if not args.skip_http:
            if apps:  # restart Serve with its HTTP proxy (sections 1-2 ran without one, as the runtime does)
                for name in list(apps):
                    serve.delete(f"bench_{name}")
                serve.shutdown()
            port = args.port or free_port()
            start_serve({"host": "127.0.0.1", "port": port})
            counting = serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0},
                                        max_ongoing_requests=ArmDeployment._deployment_config.max_ongoing_requests
                                        )(CountingArm)
            wl = wls[0]
            arm = wl.spec.name
            gateway = Gateway if args.gateway_max_ongoing is None else \
                Gateway.options(max_ongoing_requests=args.gateway_max_ongoing)
            shards = [counting.options(name=deployment_name(arm)).bind(wl.spec, wl.ctx)]  # the arm as one shard
            serve.run(gateway.bind({arm: shards}),
                      name="bench_http", route_prefix="/")
            ah = serve.get_deployment_handle(deployment_name(arm), app_name="bench_http")
            replay_on_handle(ah, wl.items, warm_calls[0])
            gw_cfg = gateway._deployment_config
            print(f"\n== 3. HTTP ingress on 127.0.0.1:{port}: {args.http_requests} single-user POST "
                  f"/arms/{arm}/recommend per level (Gateway max_ongoing_requests={gw_cfg.max_ongoing_requests}, "
                  f"arm max_ongoing_requests={ArmDeployment._deployment_config.max_ongoing_requests}) ==", flush=True)
            rows, cpu_rows, out["http"] = [], [], []
            for c in args.http_concurrency:
                ah.reset_batches.remote().result()
                cpu0 = cpu_seconds_by_process()
                res = asyncio.run(http_load(port, arm, wl, args.http_requests, c, args.seed))
                cpu1 = cpu_seconds_by_process()
                sizes, busy = ah.batch_sizes.remote().result()
                cpu = {k: (cpu1[k] - cpu0.get(k, 0.0)) / args.http_requests * 1e3 for k in cpu1
                       if cpu1[k] - cpu0.get(k, 0.0) > 0.005 * res["wall_s"]}
                res |= {"concurrency": c, "policy_calls": len(sizes),
                        "mean_batch": float(np.mean(sizes)) if sizes else float("nan"),
                        "max_batch": int(max(sizes)) if sizes else 0, "policy_busy_share": busy / res["wall_s"],
                        "cpu_ms_per_request": cpu}
                out["http"].append(res)
                rows.append([c, res["ok"], res["rps"], res["p50_ms"], res["p95_ms"], res["mean_batch"], res["max_batch"],
                             f"{100 * busy / res['wall_s']:.0f}%"])
                cpu_rows.append([c] + [", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))])
            print(fmt_table(rows, ["concurrency", "ok", "requests/s", "p50 ms", "p95 ms", "mean batch", "max batch",
                                   "arm policy busy"]))
            print("CPU ms per request by process (driver = the httpx client):")
            print(fmt_table(cpu_rows, ["concurrency", "CPU ms / request"]))
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    load.__exit__(None, None, None)
    out["load"] = load.as_dict()
    print(f"\ncontention check: {load.summary()}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"figures written to {args.json}")
    return out


def handle_sections(args, wls, policies, warm_calls, batches, out: dict) -> dict:
    """Sections 1 and 2: the arms as Serve deployments (no HTTP proxy) vs the in-process policies."""
    from ray import serve

    from serving.app import ArmDeployment, deployment_name
    from simulator.run.ray_runtime import start_serve

    n_arms, st, n_items = len(wls), policies[0].store, len(wls[0].items["item_id"])
    start_serve({"location": "NoServer"})  # as the runtime starts Serve: no HTTP proxy, its controller settings
    apps = {}
    for i, wl in enumerate(wls):
        h = serve.run(ArmDeployment.options(name=deployment_name(wl.spec.name)).bind(wl.spec, wl.ctx),
                      name=f"bench_{wl.spec.name}", route_prefix=None)
        replay_on_handle(h, wl.items, warm_calls[i])
        apps[wl.spec.name] = h
        if args.skip_multi_arm:
            break
    handle = apps[wls[0].spec.name]
    stats = handle.stats.remote().result()
    assert stats["items"] == n_items and stats["users"] == len(st.users), (stats, n_items, len(st.users))
    pol = policies[0]
    t_in, t_sv, mismatches = [], [], 0
    for j, (users, ts, seed) in enumerate(batches):
        def run_in():
            t0 = time.perf_counter()
            r = pol.recommend(users, ts, seed)
            return r, time.perf_counter() - t0

        def run_sv():
            t0 = time.perf_counter()
            r = handle.recommend.remote(users, ts, seed).result()
            return r, time.perf_counter() - t0

        if j % 2 == 0:  # alternate which side goes first
            (a, da), (b, db) = run_in(), run_sv()
        else:
            (b, db), (a, da) = run_sv(), run_in()
        mismatches += not same_slates(a, b)
        if j >= args.discard:
            t_in.append(da)
            t_sv.append(db)
    noop = []
    for _ in range(50):
        t0 = time.perf_counter()
        handle.incarnation_token.remote().result()  # returns a string: Serve's own cost of a call
        noop.append(time.perf_counter() - t0)
    payload_req = len(pickle.dumps(batches[0], protocol=5))
    payload_resp = len(pickle.dumps(a, protocol=5))
    t0 = time.perf_counter()
    for _ in range(10):
        pickle.loads(pickle.dumps(a, protocol=5))
    ser_ms = (time.perf_counter() - t0) / 10 * 1e3
    m_in, m_sv = 1e3 * float(np.median(t_in)), 1e3 * float(np.median(t_sv))
    mean_in, mean_sv = 1e3 * float(np.mean(t_in)), 1e3 * float(np.mean(t_sv))
    out["one_arm"] = {"inproc_ms_median": m_in, "serve_ms_median": m_sv, "inproc_ms_mean": mean_in,
                      "serve_ms_mean": mean_sv, "ratio_median": m_sv / m_in, "ratio_mean": mean_sv / mean_in,
                      "inproc_ms_min": 1e3 * min(t_in), "serve_ms_min": 1e3 * min(t_sv),
                      "noop_handle_ms_median": 1e3 * float(np.median(noop)),
                      "request_bytes": payload_req, "response_bytes": payload_resp,
                      "pickle_roundtrip_ms": ser_ms, "slate_mismatches": mismatches}
    print(f"\n== 1. one arm ('{wls[0].spec.name}'), {args.users_per_call:,} users per call, "
          f"{args.calls} timed calls each, slates identical: {mismatches == 0} ==")
    print(fmt_table([
        ["in-process ArmPolicy.recommend", m_in, mean_in, 1e3 * min(t_in), 1e3 * max(t_in)],
        ["Serve handle (ArmDeployment)", m_sv, mean_sv, 1e3 * min(t_sv), 1e3 * max(t_sv)],
    ], ["path", "median ms", "mean ms", "min ms", "max ms"]))
    print(f"ratio serve / in-process: {m_sv / m_in:.3f}x (median), {mean_sv / mean_in:.3f}x (mean); "
          f"requirement <= 1.5x: {'PASS' if m_sv / m_in <= 1.5 else 'FAIL'}")
    print(f"no-op handle call (incarnation_token): {out['one_arm']['noop_handle_ms_median']:.2f} ms median; payload "
          f"request {payload_req / 1e3:.0f} kB, response {payload_resp / 1e3:.0f} kB, pickle round trip "
          f"{ser_ms:.2f} ms; per-user: in-process {m_in * 1e3 / args.users_per_call:.1f} us, "
          f"serve {m_sv * 1e3 / args.users_per_call:.1f} us", flush=True)

    # ------------------------------------------------------------------ 2. all arms, one round
    if not args.skip_multi_arm and n_arms > 1:
        rounds = request_batches(wls[0], args.discard + args.calls, args.users_per_call, args.seed + 1)
        seq, conc, mism = [], [], 0
        for j, (users, ts, seed) in enumerate(rounds):
            t0 = time.perf_counter()
            loc = [p.recommend(users, ts, seed) for p in policies]
            d_seq = time.perf_counter() - t0
            t0 = time.perf_counter()
            futs = [apps[wl.spec.name].recommend.remote(users, ts, seed) for wl in wls]
            rem = [f.result() for f in futs]
            d_conc = time.perf_counter() - t0
            mism += sum(not same_slates(x, y) for x, y in zip(loc, rem))
            if j >= args.discard:
                seq.append(d_seq)
                conc.append(d_conc)
        ms_seq, ms_conc = 1e3 * float(np.median(seq)), 1e3 * float(np.median(conc))
        out["all_arms"] = {"arms": n_arms, "inproc_sequential_ms_median": ms_seq,
                           "serve_concurrent_ms_median": ms_conc, "ratio": ms_conc / ms_seq, "slate_mismatches": mism}
        print(f"\n== 2. all {n_arms} arms, one round of {args.users_per_call:,} users each, slates identical: "
              f"{mism == 0} ==")
        print(fmt_table([["in-process, arms one after another", ms_seq],
                         ["Serve, one concurrent handle call per arm", ms_conc]], ["path", "median ms"]))
        print(f"ratio serve / in-process: {ms_conc / ms_seq:.3f}x", flush=True)
    return apps


async def http_load(port: int, arm: str, wl, n: int, concurrency: int, seed: int) -> dict:
    import httpx

    rng = np.random.default_rng([seed, concurrency, 0x477])
    users = rng.integers(0, wl.n_users, n)
    sem = asyncio.Semaphore(concurrency)
    lat, ok = [], 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120.0, limits=limits) as client:
        async def one(u: int):
            nonlocal ok
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(f"/arms/{arm}/recommend", json={"user_ids": [int(u)], "ts": int(wl.t_req)})
                lat.append(time.perf_counter() - t0)
                ok += r.status_code == 200 and len(r.json()["slates"]) == 1

        await one(int(users[0]))  # connection warm-up, not counted
        lat.clear()
        ok = 0
        t0 = time.perf_counter()
        await asyncio.gather(*(one(int(u)) for u in users))
        wall = time.perf_counter() - t0
    return {"ok": ok, "wall_s": wall, "rps": n / wall, "p50_ms": 1e3 * pct(lat, 50), "p95_ms": 1e3 * pct(lat, 95)}


def _counting_base():
    from serving.app import ArmDeployment

    return ArmDeployment.func_or_class


class CountingArm(_counting_base()):
    """ArmDeployment whose policy records the size of every recommend call (= merged @serve.batch size)."""

    def __init__(self, spec, ctx):
        super().__init__(spec, ctx)
        self._sizes: list[int] = []
        self._busy = 0.0
        inner = self.policy.recommend

        def counted(user_ids, ts, seed):
            self._sizes.append(len(user_ids))
            t0 = time.perf_counter()
            try:
                return inner(user_ids, ts, seed)
            finally:
                self._busy += time.perf_counter() - t0

        self.policy.recommend = counted

    async def reset_batches(self) -> None:
        self._sizes.clear()
        self._busy = 0.0

    async def batch_sizes(self) -> tuple[list[int], float]:
        """Sizes of the policy calls since the reset, and the seconds spent in them."""
        return list(self._sizes), self._busy


if __name__ == "__main__":
    main()
