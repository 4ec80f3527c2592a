"""Offline protocol of Next-User Retrieval (paper Table 1): every variant trained on the same log stream,
scored by Recall@K of the next real interacting user on held-out later days.

Samples come from the log, in time order: each positive interaction (like/comment) of an item is a
positive sample whose sequence is the item's earlier positive users (last ``seq_len``); each
exposure without interaction is a negative sample with the sequence at its time. Days before
``train_frac`` of the log train (``epochs`` passes, in time order, ``samples_per_step`` at a time);
on later days, for a deterministic sample of positive events, u^_next of the item (its sequence
at that moment) is scored against the user-tower vector of every user active in the training
period (the candidates; events of users first seen after the split are not scored: no system
can retrieve a user it has never seen); users already in the visible sequence are excluded;
Recall@K = share of events whose real next user is in the top K. Random retrieval scores K / #candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from simulator.core.config import ArmSpec, Scenario
from simulator.core.schema import RESPONSE_TYPES, SECONDS_PER_DAY, Log
from simulator.metrics.offline_ci import event_bootstrap
from simulator.run.offline_pool import run_jobs
from serving.arms import next_user_configs
from trainers.arm_context import ArmContext, arm_context, model_configs
from trainers.tasks.next_user import NextUserTask

POSITIVE_EVENTS = ("like", "comment")


@dataclass
class NextUserSamples:
    """Aligned arrays, one row per sample, sorted by ts."""

    ts: np.ndarray
    user_id: np.ndarray
    item_row: np.ndarray
    positive: np.ndarray
    seq: np.ndarray  # (n, L) earlier positive users of the item, time order, -1 padded
    seq_len: np.ndarray


def build_samples(log: Log, seq_len: int) -> NextUserSamples:
    """Positive samples (each like/comment) and negatives (exposures without one), with the item's prior sequence."""
    ev = pl.from_arrow(log.events)
    item_ids = log.items["item_id"].to_numpy()
    pos = (ev.filter(pl.col("event").is_in(POSITIVE_EVENTS)).group_by(["user_id", "item_id"])
           .agg(pl.col("ts").min()).sort(["item_id", "ts", "user_id"]))
    # sorted: polars' unique() and anti-join give rows in an order that varies from run to run, and the order of
    # samples with the same ts is the order of training
    expo = ev.filter(pl.col("event") == "expose").select(["ts", "user_id", "item_id"]).unique().sort(
        ["ts", "user_id", "item_id"])
    neg = expo.join(pos.select(["user_id", "item_id"]), on=["user_id", "item_id"], how="anti", maintain_order="left")
    p_item = np.searchsorted(item_ids, pos["item_id"].to_numpy())
    p_ts, p_user = pos["ts"].to_numpy(), pos["user_id"].to_numpy()
    # global order of positives: by (item row, ts); an event's prior sequence = earlier positives of its item
    key = p_item.astype(np.int64) * (1 << 40) + (p_ts - p_ts.min() if len(p_ts) else p_ts)
    ts_base = int(p_ts.min()) if len(p_ts) else 0

    def prior(item_rows: np.ndarray, ts: np.ndarray):
        end = np.searchsorted(key, item_rows.astype(np.int64) * (1 << 40) + np.maximum(ts - ts_base, 0), side="left")
        first = np.searchsorted(key, item_rows.astype(np.int64) * (1 << 40))
        n = np.minimum(end - first, seq_len)
        idx = (end - n)[:, None] + np.arange(seq_len)[None, :]
        seq = np.where(np.arange(seq_len)[None, :] < n[:, None], p_user[np.minimum(idx, len(p_user) - 1)], -1)
        return seq.astype(np.int64), n.astype(np.int64)

    ps, pn = prior(p_item, p_ts)
    n_item = np.searchsorted(item_ids, neg["item_id"].to_numpy())
    ns, nn = prior(n_item, neg["ts"].to_numpy()) if neg.height else (np.zeros((0, seq_len), np.int64), np.zeros(0, np.int64))
    ts = np.concatenate([p_ts, neg["ts"].to_numpy()])
    order = np.argsort(ts, kind="stable")
    cat = lambda a, b: np.concatenate([a, b])[order]  # noqa: E731
    return NextUserSamples(ts=ts[order], user_id=cat(p_user, neg["user_id"].to_numpy()), item_row=cat(p_item, n_item),
                           positive=cat(np.ones(len(p_ts), bool), np.zeros(neg.height, bool)), seq=cat(ps, ns),
                           seq_len=cat(pn, nn))


def user_features(log: Log, until_ts: int) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, (U, 3) dense features) of the users active in the training period: log requests, log
    interactions, rate. Only they are retrieval candidates: a user the system has never seen has no vector."""
    ev = pl.from_arrow(log.events).filter(pl.col("ts") < until_ts)
    users = np.unique(ev["user_id"].to_numpy())
    agg = ev.group_by("user_id").agg((pl.col("event") == "expose").sum().alias("e"),
                                     pl.col("event").is_in(["like", "comment", "follow"]).sum().alias("i"))
    e = np.zeros(len(users))
    i = np.zeros(len(users))
    if agg.height:
        r = np.searchsorted(users, agg["user_id"].to_numpy())
        e[r], i[r] = agg["e"].to_numpy(), agg["i"].to_numpy()
    dense = np.stack([np.log1p(e / 8.0), np.log1p(i), (i + 0.1) / (e + 2.0)], 1).astype(np.float32)
    return users, dense


def _batch(s: NextUserSamples, rows: np.ndarray, log: Log, item_dense: np.ndarray, users: np.ndarray,
           udense: np.ndarray) -> dict[str, np.ndarray]:
    it = s.item_row[rows]
    labels = np.zeros((len(rows), 5), bool)
    labels[:, 0] = s.positive[rows]
    return {
        "item_id": log.items["item_id"].to_numpy()[it], "creator_id": log.items["creator_id"].to_numpy()[it],
        "category": log.items["category"].to_numpy()[it], "item_dense": item_dense[it],
        "nu_seq": s.seq[rows], "nu_len": s.seq_len[rows], "user_id": s.user_id[rows],
        "user_dense": udense[np.searchsorted(users, s.user_id[rows])], "labels": labels,
    }


@torch.no_grad()
def recall_at_k(task: NextUserTask, s: NextUserSamples, rows: np.ndarray, log: Log, item_dense: np.ndarray,
                users: np.ndarray, udense: np.ndarray, ks: list[int], ranks: list | None = None) -> dict[str, float]:
    """Recall@K of the real next user among all users (sequence users excluded) for positive sample ``rows``;
    ``ranks``: a list that receives each event's rank of the real next user (for confidence intervals)."""
    task.model.eval()
    task.user_tower.eval()
    U = task.user_tower(torch.from_numpy(users), torch.from_numpy(udense))  # (U, d)
    hits = {k: 0 for k in ks}
    for a in range(0, len(rows), 1024):
        r = rows[a : a + 1024]
        b = _batch(s, r, log, item_dense, users, udense)
        out = task.model({"item_id": torch.from_numpy(b["item_id"]), "category": torch.from_numpy(b["category"]),
                          "creator_id": torch.from_numpy(b["creator_id"]), "item_dense": torch.from_numpy(b["item_dense"]),
                          "seq_users": torch.from_numpy(b["nu_seq"]), "seq_len": torch.from_numpy(b["nu_len"])})
        _count_hits(hits, (out.u_next @ U.T).numpy(), b["nu_seq"], b["user_id"], users, ranks)
    return {f"recall_{k}": hits[k] / max(len(rows), 1) for k in ks}


def _count_hits(hits: dict[int, int], scores: np.ndarray, seq: np.ndarray, true_users: np.ndarray, users: np.ndarray,
                ranks: list | None = None) -> None:
    """Add to ``hits[k]`` the events whose real next user ranks in the top k of ``scores`` (m, U) over the
    candidates ``users``; users already in the event's visible sequence are excluded (they interacted). ``ranks``
    receives the events' ranks."""
    in_seq = (seq >= 0) & np.isin(seq, users)
    scores[np.nonzero(in_seq)[0], np.searchsorted(users, seq[in_seq])] = -np.inf
    true_score = scores[np.arange(len(true_users)), np.searchsorted(users, true_users)]
    rank = (scores > true_score[:, None]).sum(1)  # users strictly better than the real next user
    for k in hits:
        hits[k] += int((rank < k).sum())
    if ranks is not None:
        ranks.append(rank)


FLOORS = {
    "most_active": "candidates by their positives in the training days",
    "user_knn": "co-like cosine to the item's visible users (training positives), most active breaks ties",
    "truth": "the synthetic world's true P(like or comment) times the user's training exposures (a ceiling, "
             "not a baseline: no model sees it)",
}
"""User-side floors of the protocol (and the world's ceiling): scored on the same events, candidates and exclusions."""


def floor_recalls(s: NextUserSamples, rows: np.ndarray, log: Log, users: np.ndarray, split_ts: int, ks: list[int],
                  seed: int = 0, chunk: int = 256, ranks: dict | None = None) -> dict[str, dict[str, float]]:
    """Recall@K of the :data:`FLOORS` on positive sample ``rows`` (``truth`` only when the log carries one);
    ``ranks``: a dict that receives each floor's per-event ranks (arrays).

    Ties are broken by a seeded jitter far below one count, so a tie never counts as a hit by luck of order."""
    from scipy import sparse

    train = np.flatnonzero((s.ts < split_ts) & s.positive & np.isin(s.user_id, users))
    u_row = np.searchsorted(users, s.user_id[train])
    n_items = log.items.num_rows
    active = np.bincount(u_row, minlength=len(users)).astype(np.float64)
    jitter = np.random.default_rng([seed, 0xF100]).random(len(users)) * 1e-3
    x = sparse.csr_matrix((np.ones(len(train)), (u_row, s.item_row[train])), shape=(len(users), n_items))
    x.data[:] = 1.0  # a user-item pair counts once
    norm = np.sqrt(np.asarray(x.sum(1)).ravel())
    xn = sparse.diags(1.0 / np.maximum(norm, 1.0)) @ x
    exposures = np.zeros(len(users))
    if log.truth is not None:
        ev = pl.from_arrow(log.events).filter((pl.col("ts") < split_ts) & (pl.col("event") == "expose"))
        agg = ev.group_by("user_id").len()
        keep = np.isin(agg["user_id"].to_numpy(), users)
        exposures[np.searchsorted(users, agg["user_id"].to_numpy()[keep])] = agg["len"].to_numpy()[keep]
    item_ids = log.items["item_id"].to_numpy()
    names = [n for n in FLOORS if n != "truth" or log.truth is not None]
    hits = {n: {k: 0 for k in ks} for n in names}
    parts: dict[str, list] = {n: [] for n in names}
    base = active[None, :] + jitter[None, :]  # (1, U) most_active's score
    knn_tie_break = 1e-6 * base / max(base.max(), 1.0)
    positive_columns = [RESPONSE_TYPES.index(e) for e in POSITIVE_EVENTS]
    log_exposures, truth_jitter = np.log(exposures + 1.0)[None, :], jitter[None, :] * 1e-3
    for a in range(0, len(rows), chunk):
        r = rows[a : a + chunk]
        seq, true = s.seq[r], s.user_id[r]
        _count_hits(hits["most_active"], np.repeat(base, len(r), 0), seq, true, users, parts["most_active"])
        known = (seq >= 0) & np.isin(seq, users)
        event = np.nonzero(known)[0]
        q = sparse.csr_matrix((np.ones(len(event)), (event, np.searchsorted(users, seq[known]))), shape=(len(r), len(users)))
        sim = np.asarray(((q @ xn) @ xn.T).todense())
        _count_hits(hits["user_knn"], sim + knn_tie_break, seq, true, users, parts["user_knn"])
        if "truth" in hits:
            it = np.repeat(item_ids[s.item_row[r]], len(users))
            p = log.truth.probs(np.tile(users, len(r)), it)[:, positive_columns].reshape(len(r), len(users), -1)
            p_pos = 1.0 - np.prod(1.0 - p, axis=2)
            _count_hits(hits["truth"], np.log(p_pos + 1e-12) + log_exposures + truth_jitter, seq, true, users,
                        parts["truth"])
    if ranks is not None:
        ranks.update({n: np.concatenate(p) if p else np.zeros(0, np.int64) for n, p in parts.items()})
    return {n: {f"recall_{k}": hits[n][k] / max(len(rows), 1) for k in ks} for n in names}


def run_next_user_offline(scenario: Scenario, log: Log, days: int | None = None, progress=None,
                          replicates: int = 1) -> tuple[pl.DataFrame, dict]:
    """Train every arm's Next-User variant on the same stream; returns (Table-1 layout, per-variant figures).

    ``days``: use only the log's first days (default: the whole log). ``replicates``: seeds ``seed``,
    ``seed + 1``, ...; each draws its held-out events and training negatives and initialises the models; the
    figures are the means over the seeds and the intervals cover seeds and events (two-level bootstrap).
    """
    oc = scenario.offline
    t0, n_days = log.t0, min(log.n_days, days) if days else log.n_days
    split_day = max(1, int(round(n_days * oc.train_frac)))
    split_ts = t0 + split_day * SECONDS_PER_DAY
    end_ts = t0 + n_days * SECONDS_PER_DAY
    feature_cols = [c for c in log.items.column_names if c.startswith("f_")]
    item_dense = (np.stack([log.items[c].to_numpy().astype(np.float32) for c in feature_cols], 1)
                  if feature_cols else np.zeros((log.items.num_rows, 1), np.float32))
    users, udense = user_features(log, split_ts)
    max_len = max((a.next_user.seq_len if a.next_user else 50) for a in scenario.arms)
    samples = build_samples(log, max_len)
    seeds = [scenario.seed + r for r in range(replicates)]
    per_seed: list[dict] = []  # per seed: variant -> figures
    ranks: dict[str, list[np.ndarray]] = {arm.name: [] for arm in scenario.arms}
    floor_ranks: dict[str, list[np.ndarray]] = {}
    floor_parts = []
    items_only = _Items(log.items)  # what a variant's training reads of the log (shipped to its process)
    jobs, splits = [], []
    for seed in seeds:  # a seed draws the held-out sample and the training negatives, and initialises the models
        seeded = scenario.model_copy(update={"seed": seed})
        ctx = ArmContext(model=scenario.model, slate_size=scenario.synthetic.slate_size,
                         n_item_dense=item_dense.shape[1], seed=seed)
        train_rows, test_pos = split_rows(seeded, samples, users, split_ts, end_ts)
        splits.append((train_rows, test_pos))
        jobs += [(arm, arm_context(ctx, i), seeded, samples, train_rows, test_pos, items_only, item_dense, users, udense)
                 for i, arm in enumerate(scenario.arms)]
    names = [arm.name for arm in scenario.arms]
    done = None if progress is None else (lambda j: progress(names[j % len(names)]))
    results = run_jobs(_variant_job, jobs, oc.workers, done)  # every variant of every seed, each in a fresh process
    for r, seed in enumerate(seeds):
        figures = {}
        for i, arm in enumerate(scenario.arms):
            figures[arm.name], rank = results[r * len(names) + i]
            ranks[arm.name].append(rank)
        per_seed.append(figures)
        train_rows, test_pos = splits[r]
        seed_floor_ranks: dict = {}
        floor_parts.append(floor_recalls(samples, test_pos, log, users, split_ts, oc.recall_k, seed=seed,
                                         ranks=seed_floor_ranks))
        for name, rank in seed_floor_ranks.items():
            floor_ranks.setdefault(name, []).append(rank)
    # every figure is the mean over the seeds
    figures = {arm.name: {key: float(np.mean([f[arm.name][key] for f in per_seed])) for key in per_seed[0][arm.name]}
               for arm in scenario.arms}
    floors = {name: {key: float(np.mean([f[name][key] for f in floor_parts])) for key in floor_parts[0][name]}
              for name in floor_parts[0]}
    table = pl.DataFrame([{"variant": arm.name, **figures[arm.name]} for arm in scenario.arms])
    ks = [f"recall_{k}" for k in oc.recall_k]
    ctrl = table.filter(pl.col("variant") == scenario.control).row(0, named=True)
    table = table.with_columns([((pl.col(k) / ctrl[k]) - 1.0).alias(f"{k}_rel") for k in ks])
    table = table.join(recall_intervals(ranks, scenario.control, oc.recall_k, scenario.seed), on="variant",
                       how="left", maintain_order="left")
    for interval in recall_intervals(floor_ranks, next(iter(floor_ranks)), oc.recall_k, scenario.seed).iter_rows(named=True):
        floors[interval["variant"]].update({key: value for key, value in interval.items()
                                            if key.endswith(("_lo", "_hi")) and "_rel_" not in key})
    meta = {"split_day": split_day, "days": n_days, "seeds": seeds, "train_samples": int(len(train_rows)),
            "test_events": int(len(test_pos)),
            "users": int(len(users)), **{f"random_recall_{k}": min(1.0, k / max(len(users), 1)) for k in oc.recall_k},
            **{f"floor_{n}_{m}": v for n, f in floors.items() for m, v in f.items()}}
    return table, {"figures": figures, "floors": floors, **meta}


def recall_intervals(ranks: dict[str, list[np.ndarray]], control: str, ks: list[int], seed: int) -> pl.DataFrame:
    """Per variant and K: the 95% interval of Recall@K and of its relative difference from ``control``, and
    whether that difference is significant (paired bootstrap over the held-out events of each seed, and over the
    seeds when there are several: :func:`simulator.metrics.offline_ci.event_bootstrap`). ``ranks``: variant ->
    the events' ranks, one array per seed."""
    rows = {name: {"variant": name} for name in ranks}
    for k in ks:
        cells = event_bootstrap({name: [(r < k).astype(np.float64) for r in per_seed] for name, per_seed in ranks.items()},
                                control, seed=seed)
        for name, cell in cells.items():
            rows[name].update({f"recall_{k}_lo": cell["lo"], f"recall_{k}_hi": cell["hi"],
                               f"recall_{k}_rel_lo": cell["rel_lo"], f"recall_{k}_rel_hi": cell["rel_hi"],
                               f"recall_{k}_sig": cell["significant"]})
    return pl.DataFrame(list(rows.values()))


def split_rows(scenario: Scenario, samples: NextUserSamples, users: np.ndarray, split_ts: int,
               end_ts: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows in time order, held-out positive rows): samples of known users before/after the split,
    training negatives subsampled and held-out events sampled deterministically from the scenario's seed. Samples
    with the same timestamp have no order of their own (a MovieLens user rates many films in one second): the seed
    draws the order they train in, so seed replicates cover it (it moves Recall by tens of percent on ml-100k)."""
    oc = scenario.offline
    train_rows = np.flatnonzero(samples.ts < split_ts)
    known = np.isin(samples.user_id, users)
    train_rows = train_rows[known[train_rows]]
    rng = np.random.default_rng([scenario.seed, 0x7E57])
    neg = train_rows[~samples.positive[train_rows]]
    n_neg = int(oc.negatives_per_positive * samples.positive[train_rows].sum())
    if len(neg) > n_neg:
        drop = np.setdiff1d(neg, rng.choice(neg, n_neg, replace=False))
        train_rows = np.setdiff1d(train_rows, drop)  # stays in time order (rows are sorted by ts)
    ties = np.random.default_rng([scenario.seed, 0x7135]).random(len(train_rows))
    train_rows = train_rows[np.lexsort((ties, samples.ts[train_rows]))]  # by ts; within a ts, the seed's order
    test_pos = np.flatnonzero((samples.ts >= split_ts) & (samples.ts < end_ts) & samples.positive & known)
    if len(test_pos) > oc.max_eval:
        test_pos = np.sort(rng.choice(test_pos, oc.max_eval, replace=False))
    return train_rows, test_pos


@dataclass(frozen=True)
class _Items:
    """The one part of the log a variant's training and scoring read (``_batch``): the item table."""

    items: object


def _variant_job(arm: ArmSpec, ctx: ArmContext, sc: Scenario, s: NextUserSamples, train_rows: np.ndarray,
                 test_rows: np.ndarray, log, item_dense, users, udense) -> tuple[dict[str, float], np.ndarray]:
    """One variant of one seed: its figures and the held-out events' ranks (:func:`run_jobs` runs it)."""
    parts: list = []
    figures = _train_and_score(arm, ctx, sc, s, train_rows, test_rows, log, item_dense, users, udense, parts)
    return figures, np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _train_and_score(arm: ArmSpec, ctx: ArmContext, sc: Scenario, s: NextUserSamples, train_rows: np.ndarray,
                     test_rows: np.ndarray, log: Log, item_dense, users, udense, ranks: list) -> dict[str, float]:
    torch.set_num_threads(1)
    tt, _ = model_configs(ctx.model, ctx.n_item_dense)
    nu, cfg, loss = next_user_configs(arm, ctx)
    oc = sc.offline
    task = NextUserTask(cfg, loss, tt, lr=sc.train.lr, batch_size=oc.batch_size, seed=ctx.seed,
                        max_samples=oc.samples_per_step)
    import time

    t = time.perf_counter()
    step = 0
    for _ in range(oc.epochs):
        for a in range(0, len(train_rows), oc.samples_per_step):
            rows = train_rows[a : a + oc.samples_per_step]
            task.train(_batch(s, rows, log, item_dense, users, udense), int(np.random.SeedSequence([ctx.seed, step]).generate_state(1)[0]))
            step += 1
    train_s = time.perf_counter() - t
    rec = recall_at_k(task, s, test_rows, log, item_dense, users, udense, oc.recall_k, ranks)
    return {**rec, "train_s": train_s, "train_samples_per_s": len(train_rows) * oc.epochs / max(train_s, 1e-9)}
