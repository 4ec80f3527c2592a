"""hnswlib recall: serving.index.ANNIndex vs exact inner-product search at the configured M / ef_construction / ef.

Two vector sets, both L2-normalised as the arms index them:
  (a) ``two_tower``: item vectors of a randomly initialised two-tower ItemTower over a synthetic catalogue
      (what an arm's index holds before its first weight push), queried with the UserTower vectors of
      synthetic users (the real query distribution);
  (b) ``clustered``: ``--n`` points in ``--dim`` dimensions around ``--clusters`` random unit centres,
      queried with fresh points from the same mixture.
For each set and each ef in ``--efs`` (the configured ``StackConfig().hnsw_ef`` is always included):
recall@k (k = 10, 50, 100) = |ANN top-k  intersect  exact top-k| / k averaged over queries, single-thread build
time and query time per 1k queries (``ANNIndex`` uses one thread, as in serving). Requirement: recall@k >= 0.9
at the configured ef.

Run: ``python benchmarks/bench_hnsw_recall.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ForeignLoad, fmt_table, item_batch  # noqa: E402


def parse_args(argv=None):
    from simulator.core.config import StackConfig

    st = StackConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="points of the clustered set")
    p.add_argument("--dim", type=int, default=32, help="dimension of the clustered set")
    p.add_argument("--clusters", type=int, default=64)
    p.add_argument("--spread", type=float, default=0.15,
                   help="per-coordinate noise std around a unit cluster centre (before normalising)")
    p.add_argument("--catalogue-creators", type=int, default=5_000,
                   help="creators of the synthetic catalogue for the two-tower set (~3.35 items each + uploads)")
    p.add_argument("--catalogue-days", type=int, default=3, help="days of uploads added to the catalogue")
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--ks", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--m", type=int, default=st.hnsw_m, help="HNSW M (StackConfig default)")
    p.add_argument("--ef-construction", type=int, default=st.hnsw_ef_construction, help="(StackConfig default)")
    p.add_argument("--ef", type=int, default=st.hnsw_ef, help="configured query ef (StackConfig default)")
    p.add_argument("--efs", type=int, nargs="*", default=[50, 100], help="extra ef values for context")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


def clustered(n: int, q: int, dim: int, clusters: int, spread: float, seed: int):
    rng = np.random.default_rng([seed, 0xC1])
    centres = unit(rng.standard_normal((clusters, dim)))
    w = rng.dirichlet(np.ones(clusters))

    def draw(m):
        c = rng.choice(clusters, m, p=w)
        return unit(centres[c] + spread * rng.standard_normal((m, dim)))

    return draw(n), draw(q)


def two_tower_vectors(creators: int, days: int, q: int, seed: int):
    """Random-init ItemTower vectors over a synthetic catalogue and UserTower vectors of its users."""
    import torch

    from scenarios import get_scenario
    from trainers.arm_context import model_configs
    from serving.features import FeatureStore
    from simulator.core.config import SyntheticConfig
    from simulator.sources.synthetic import generate_synthetic
    from trainers.models.two_tower import TwoTower

    sc = get_scenario("coldstart_ab")
    log = generate_synthetic(SyntheticConfig(n_users=max(q, 2_000), n_creators=creators, days=days), seed)
    it = item_batch(log)
    tt_cfg, _ = model_configs(sc.model, it["dense"].shape[1])
    torch.manual_seed(seed)
    model = TwoTower(tt_cfg).eval()
    rng = np.random.default_rng([seed, 0x77])
    with torch.no_grad():
        v = model.item(torch.from_numpy(it["item_id"]), torch.from_numpy(it["creator_id"]),
                       torch.from_numpy(it["category"]), torch.from_numpy(it["dense"])).numpy()
        users = rng.choice(log.users.num_rows, q, replace=False).astype(np.int64)
        # user dense features as the feature store builds them (log requests, log interactions, rate)
        req = rng.poisson(4, q).astype(np.float32)
        inter = rng.binomial(req.astype(np.int64) * 8, 0.1).astype(np.float32)
        dense = np.stack([np.log1p(req), np.log1p(inter), (inter + 0.1) / (req * 8 + 2.0)], 1).astype(np.float32)
        assert dense.shape[1] == FeatureStore.N_USER_DENSE
        u = model.user(torch.from_numpy(users), torch.from_numpy(dense)).numpy()
    return v.astype(np.float32), u.astype(np.float32)


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k labels, best first (brute force in chunks of queries)."""
    out = np.empty((len(queries), k), np.int64)
    for a in range(0, len(queries), 256):
        s = queries[a : a + 256] @ base.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1)
        out[a : a + 256] = np.take_along_axis(part, order, 1)
    return out


def recall(ann: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(np.intersect1d(a[a >= 0], e, assume_unique=True)) for a, e in zip(ann, exact)]
    return float(np.mean(hits)) / exact.shape[1]


def evaluate(name: str, base: np.ndarray, queries: np.ndarray, args) -> list[dict]:
    from serving.index import ANNIndex

    kmax = max(args.ks)
    exact_sorted = exact_topk(base, queries, kmax)  # exact top-k for a smaller k is its first k columns
    idx = ANNIndex(base.shape[1], m=args.m, ef_construction=args.ef_construction, ef=args.ef, seed=args.seed)
    t0 = time.perf_counter()
    idx.build(np.arange(len(base)), base)
    build_s = time.perf_counter() - t0
    rows = []
    for ef in sorted(set([args.ef, *args.efs])):
        idx.ef = ef
        for k in args.ks:
            t0 = time.perf_counter()
            labels, _ = idx.query(queries, k)
            q_s = time.perf_counter() - t0
            r = recall(labels, exact_sorted[:, :k])
            rows.append({"set": name, "n": len(base), "dim": base.shape[1], "ef": ef, "ef_used": max(ef, k), "k": k, "recall": r,
                         "build_s": build_s, "query_ms_per_1k": 1e3 * q_s / len(queries) * 1000,
                         "configured": ef == args.ef})
    idx.ef = args.ef
    return rows


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    v_tt, q_tt = two_tower_vectors(args.catalogue_creators, args.catalogue_days, args.queries, args.seed)
    # spread of the random-init item vectors: how concentrated the set is (mean cosine to the mean direction)
    mean_dir = unit(v_tt.mean(0, keepdims=True))[0]
    conc = float(np.mean(v_tt @ mean_dir))
    print(f"two-tower set: {len(v_tt):,} item vectors (dim {v_tt.shape[1]}), {len(q_tt):,} user queries; "
          f"mean cosine to the mean direction {conc:.2f} (built in {time.perf_counter() - t0:.1f}s)", flush=True)
    v_cl, q_cl = clustered(args.n, args.queries, args.dim, args.clusters, args.spread, args.seed)
    print(f"clustered set: {len(v_cl):,} vectors (dim {args.dim}, {args.clusters} clusters), {len(q_cl):,} queries", flush=True)
    with ForeignLoad() as load:
        rows = evaluate("two_tower (random init)", v_tt, q_tt, args) + evaluate("clustered", v_cl, q_cl, args)
    print(f"\nANNIndex M={args.m} ef_construction={args.ef_construction}; configured ef={args.ef} (marked *); "
          f"one thread for build and queries")
    table = [[r["set"], f"{r['n']:,}", f"{r['ef']}{'*' if r['configured'] else ''}", r["ef_used"], r["k"],
              f"{r['recall']:.4f}", f"{r['build_s']:.2f}", f"{r['query_ms_per_1k']:.1f}"] for r in rows]
    print(fmt_table(table, ["set", "n", "ef", "ef used = max(ef, k)", "k", "recall@k", "build s", "query ms / 1k"]))
    conf = [r for r in rows if r["configured"]]
    worst = min(conf, key=lambda r: r["recall"])
    print(f"\nat the configured ef={args.ef}: min recall@k = {worst['recall']:.4f} ({worst['set']}, k={worst['k']}); "
          f"requirement >= 0.9: {'PASS' if worst['recall'] >= 0.9 else 'FAIL'}")
    print(f"contention check: {load.summary()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"figures written to {args.json}")
    return rows


if __name__ == "__main__":
    main()
