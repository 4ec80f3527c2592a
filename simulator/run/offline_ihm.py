"""Offline decay protocol of the Item History Model (papers/item_history_model_ihm.txt, section 5.1): train
once on the positives before the median timestamp, then score the later half in equal time windows
without retraining; HitRate@K and NDCG@K overall, on tail items and on head items, per window.

Positives are the log's likes and comments, one per (user, item) (its first time), in time order.

* **Split.** Positives with ``ts`` < the median positive timestamp train; the rest are the test
  period, cut into ``windows`` equal-duration windows.
* **Training.** Every training positive (u, i, t) is one target: the user tower's output after u's
  earlier positives (SASRec's all-position training over each user's time-ordered sequence, see
  :class:`Chunks`), the item tower on i's features and (IHM) the last ``max_history`` users who liked i
  before t. Every model sees the same chunks, shuffled, ``epochs`` passes.
* **Scoring.** For each test positive (u, i, t): the user vector from u's positives before t (the
  sequence grows with test interactions, for every model); the item vectors of every item
  uploaded by t. Inductive variants re-infer every item embedding from its history every
  ``refresh_hours`` (the history grows with test-window interactions as they arrive); nothing is
  retrained. The target's rank is the number of candidates scoring strictly higher; candidates are
  all items uploaded by t (``eval_negatives = 0``) or ``eval_negatives`` deterministic uniform draws
  from them, u's earlier positives excluded either way.
* **Subsets.** Tail items have fewer than ``tail_max`` training positives (items first seen in the
  test period included), head items the rest.

Variants (the scenario's arms, by ``kind``; :data:`VARIANTS`): ``ihm`` (live histories), ``ihm_frozen``
(histories frozen at the split: no real-time inference), ``ihm_static`` (the trained IHM with e_i = E_S:
no inductive structure), ``transductive`` (the same two-tower trained without history), ``sasrec``
(id-only SASRec next-item). The three IHM variants share one trained model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch

from simulator.core.config import IHMOfflineConfig, Scenario
from simulator.core.schema import SECONDS_PER_DAY, Log
from trainers.ihm_task import RETRIEVAL_MODELS, RetrievalSizes, RetrievalTask
from trainers.models.ihm import IHMConfig
from trainers.models.sasrec import SASRecConfig

POSITIVE_EVENTS = ("like", "comment")
SUBSETS = ("overall", "tail", "head")


@dataclass(frozen=True)
class Variant:
    """A row of the tables: which trained model, and which item histories it reads at test time."""

    model: str  # key of trainers.ihm_task.RETRIEVAL_MODELS
    history: Literal["live", "frozen", "none"]


VARIANTS: dict[str, Variant] = {
    "ihm": Variant("ihm", "live"),
    "ihm_frozen": Variant("ihm", "frozen"),
    "ihm_static": Variant("ihm", "none"),
    "transductive": Variant("transductive", "none"),
    "sasrec": Variant("sasrec", "none"),
}
"""Arm kind -> variant of the protocol (the only place these kinds map to code)."""


# ----------------------------------------------------------------------------------- data


class Timeline:
    """Values of dense groups in time order (user -> item rows, item -> user ids), queried strictly before a time."""

    def __init__(self, group: np.ndarray, ts: np.ndarray, value: np.ndarray):
        self.t_lo = int(ts.min()) if len(ts) else 0
        self.span = (int(ts.max()) - self.t_lo + 2) if len(ts) else 2
        key = group.astype(np.int64) * self.span + (ts - self.t_lo)
        order = np.argsort(key, kind="stable")
        self.key, self.value = key[order], value[order]

    def bounds(self, g: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[first, end) positions of group g's values with ts < t."""
        base = g.astype(np.int64) * self.span
        first = np.searchsorted(self.key, base, side="left")
        end = np.searchsorted(self.key, base + np.clip(np.asarray(t) - self.t_lo, 0, self.span - 1), side="left")
        return first, end

    def last(self, g: np.ndarray, t: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
        """((n, L) the last L values before t in time order, -1 padded; (n,) their count)."""
        first, end = self.bounds(g, t)
        n = np.minimum(end - first, L)
        idx = (end - n)[:, None] + np.arange(L)[None, :]
        vals = self.value[np.minimum(idx, max(len(self.value) - 1, 0))] if len(self.value) else np.zeros_like(idx)
        return np.where(np.arange(L)[None, :] < n[:, None], vals, -1).astype(np.int64), n.astype(np.int64)

    def pairs(self, g: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, value) of every value before t (all of them, not only the last L)."""
        first, end = self.bounds(g, t)
        lens = end - first
        rows = np.repeat(np.arange(len(g)), lens)
        idx = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(first, lens)
        return rows, self.value[idx]


@dataclass
class ItemTable:
    """Item features by row (torch), plus upload times and row lookup."""

    item_id: np.ndarray  # sorted
    upload_ts: np.ndarray
    t: dict[str, torch.Tensor]  # item_id, creator_id, category (N,), item_dense (N, F)

    @classmethod
    def of(cls, log: Log) -> "ItemTable":
        items = pl.from_arrow(log.items).sort("item_id")
        dense_cols = [c for c in items.columns if c.startswith("f_")]
        dense = (items.select(dense_cols).to_numpy().astype(np.float32) if dense_cols
                 else np.zeros((items.height, 1), np.float32))
        t = {k: torch.from_numpy(items[k].to_numpy().astype(np.int64)) for k in ("item_id", "creator_id", "category")}
        t["item_dense"] = torch.from_numpy(np.ascontiguousarray(dense))
        return cls(item_id=items["item_id"].to_numpy(), upload_ts=items["upload_ts"].to_numpy(), t=t)

    def __len__(self) -> int:
        return len(self.item_id)

    def features(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The item features at ``rows`` (any shape; -1 padding reads row 0)."""
        r = torch.from_numpy(np.maximum(rows, 0))
        return {k: v[r] for k, v in self.t.items()}


@dataclass
class Positives:
    """One row per (user, item) positive, at its first time, sorted by ts."""

    ts: np.ndarray
    user: np.ndarray  # raw user ids
    user_idx: np.ndarray  # dense 0..U-1
    item: np.ndarray  # item rows

    @classmethod
    def of(cls, log: Log, items: ItemTable, until_ts: int | None = None) -> "Positives":
        ev = pl.from_arrow(log.events).filter(pl.col("event").is_in(POSITIVE_EVENTS))
        if until_ts is not None:
            ev = ev.filter(pl.col("ts") < until_ts)
        pos = ev.group_by(["user_id", "item_id"]).agg(pl.col("ts").min()).sort(["ts", "user_id", "item_id"])
        user = pos["user_id"].to_numpy()
        _, user_idx = np.unique(user, return_inverse=True)
        return cls(ts=pos["ts"].to_numpy(), user=user, user_idx=user_idx.astype(np.int64),
                   item=np.searchsorted(items.item_id, pos["item_id"].to_numpy()))

    def __len__(self) -> int:
        return len(self.ts)


@dataclass
class Split:
    """The protocol's time split and windows, and the training counts behind tail/head."""

    split_ts: int
    end_ts: int
    edges: np.ndarray  # (W+1,) window boundaries
    train: np.ndarray  # positive rows
    test: np.ndarray  # positive rows (sampled per window), sorted by ts
    window: np.ndarray  # (len(test),) 0..W-1
    train_count: np.ndarray  # (N items,) training positives per item

    @classmethod
    def of(cls, p: Positives, n_items: int, oc: IHMOfflineConfig, seed: int) -> "Split":
        if len(p) < 4:
            raise ValueError(f"the log has {len(p)} positive interactions; the IHM protocol needs a few at least")
        split_ts = int(np.median(p.ts))
        train = np.flatnonzero(p.ts < split_ts)
        test_all = np.flatnonzero(p.ts >= split_ts)
        end_ts = int(p.ts.max()) + 1
        edges = split_ts + (end_ts - split_ts) * np.arange(oc.windows + 1) / oc.windows
        w_all = np.clip(np.searchsorted(edges, p.ts[test_all], side="right") - 1, 0, oc.windows - 1)
        rng = np.random.default_rng([seed, 0x1B4])
        keep = []
        for w in range(oc.windows):
            rows = test_all[w_all == w]
            if len(rows) > oc.max_eval_per_window:
                rows = np.sort(rng.choice(rows, oc.max_eval_per_window, replace=False))
            keep.append(rows)
        test = np.sort(np.concatenate(keep))
        window = np.clip(np.searchsorted(edges, p.ts[test], side="right") - 1, 0, oc.windows - 1)
        return cls(split_ts=split_ts, end_ts=end_ts, edges=edges, train=train, test=test, window=window,
                   train_count=np.bincount(p.item[train], minlength=n_items))


# ----------------------------------------------------------------------------------- batches


class Batches:
    """Builds model batches: item rows + their histories at given times, user sequences at given times."""

    def __init__(self, p: Positives, items: ItemTable, spec_seq_len: int, spec_history: int,
                 known_users: np.ndarray | None = None):
        self.p, self.items = p, items
        self.user_items = Timeline(p.user_idx, p.ts, p.item)  # user -> item rows
        self.item_users = Timeline(p.item, p.ts, p.user)  # item row -> raw user ids
        # test-time histories: only the users in ``known_users`` (bool by user_idx), when given
        keep = known_users[p.user_idx] if known_users is not None else np.ones(len(p), bool)
        self.item_users_eval = Timeline(p.item[keep], p.ts[keep], p.user[keep]) if known_users is not None else self.item_users
        self.L, self.M = spec_seq_len, spec_history

    def item_batch(self, rows: np.ndarray, hist_ts: np.ndarray | None, test: bool = False) -> dict:
        """Item features at ``rows``; histories: users before ``hist_ts`` (None: no history; ``test``:
        only the known users)."""
        b = self.items.features(rows)
        if hist_ts is None:
            b["hist_users"] = torch.zeros((len(rows), 1), dtype=torch.int64)
            b["hist_len"] = torch.zeros(len(rows), dtype=torch.int64)
        else:
            h, n = (self.item_users_eval if test else self.item_users).last(rows, hist_ts, self.M)
            b["hist_users"], b["hist_len"] = torch.from_numpy(h), torch.from_numpy(n)
        b["item_row"] = torch.from_numpy(np.asarray(rows, np.int64))
        return b

    def seq_batch(self, user_idx: np.ndarray, ts: np.ndarray) -> dict:
        seq, n = self.user_items.last(user_idx, ts, self.L)
        b = self.items.features(seq)
        b["seq_len"] = torch.from_numpy(n)
        return b

    def train_batch(self, chunks: "Chunks", ids: np.ndarray) -> dict:
        """The batch of chunks ``ids``: their sequences and every target in them (all-position training)."""
        p = self.p
        sel = np.concatenate([np.arange(chunks.t_start[c], chunks.t_start[c + 1]) for c in ids])
        target = chunks.t_row[sel]  # positive rows
        local = np.repeat(np.arange(len(ids)), chunks.t_start[ids + 1] - chunks.t_start[ids])
        b = self.item_batch(p.item[target], p.ts[target])
        b["seq"] = self.items.features(chunks.seq[ids])
        b["seq"]["seq_len"] = torch.from_numpy(chunks.seq_len[ids])
        b["target_seq"] = torch.from_numpy(local)
        b["target_pos"] = torch.from_numpy(chunks.t_pos[sel])
        return b


@dataclass
class Chunks:
    """Training sequences: each user's training positives in time order, cut into windows of at most L
    items ending every S = L // 2 items from the last one; a window's targets are its last S items (all of
    them for the user's first window), so every positive is a target once, with at least L - S items
    of context when the user has them (SASRec's all-position training)."""

    seq: np.ndarray  # (C, L) item rows, -1 padded
    seq_len: np.ndarray  # (C,)
    t_start: np.ndarray  # (C+1,) chunk c's targets are t_row[t_start[c]:t_start[c+1]]
    t_row: np.ndarray  # positive rows
    t_pos: np.ndarray  # position in the chunk's sequence whose output predicts the target

    @classmethod
    def of(cls, p: Positives, rows: np.ndarray, L: int) -> "Chunks":
        S = max(1, L // 2)
        rows = rows[np.lexsort((p.ts[rows], p.user_idx[rows]))]
        users = p.user_idx[rows]
        cuts = np.flatnonzero(np.diff(users)) + 1
        seqs, lens, starts, t_row, t_pos = [], [], [0], [], []
        for r in np.split(rows, cuts):
            T, e = len(r), len(r)
            while e > 0:
                a = max(0, e - L)
                lo = 0 if a == 0 else e - S
                seqs.append(np.pad(p.item[r[a:e]], (0, L - (e - a)), constant_values=-1))
                lens.append(e - a)
                t_row.append(r[lo:e])
                t_pos.append(np.arange(lo, e) - a)
                starts.append(starts[-1] + e - lo)
                if a == 0:
                    break
                e -= S
        if not seqs:
            return cls(np.zeros((0, L), np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64),
                       np.zeros(0, np.int64))
        return cls(np.stack(seqs).astype(np.int64), np.array(lens, np.int64), np.array(starts, np.int64),
                   np.concatenate(t_row), np.concatenate(t_pos).astype(np.int64))

    def __len__(self) -> int:
        return len(self.seq_len)


# ----------------------------------------------------------------------------------- metrics


def hit_ndcg(rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per event: HitRate@k (rank < k) and NDCG@k (1 / log2(rank + 2) when hit, one relevant item);
    ``rank`` = candidates scoring strictly higher than the target (0 = first)."""
    hit = rank < k
    return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)


def summarize(variant: str, rank: np.ndarray, window: np.ndarray, tail: np.ndarray, k: int, windows: int) -> pl.DataFrame:
    """Long table: one row per (window, subset) with events, hr, ndcg; window 0 = all windows together."""
    hit, ndcg = hit_ndcg(rank, k)
    rows = []
    for w in range(windows + 1):
        in_w = np.ones_like(tail) if w == 0 else window == w - 1
        for subset, m in (("overall", in_w), ("tail", in_w & tail), ("head", in_w & ~tail)):
            n = int(m.sum())
            rows.append({"variant": variant, "window": w, "subset": subset, "events": n,
                         "hr": float(hit[m].mean()) if n else float("nan"),
                         "ndcg": float(ndcg[m].mean()) if n else float("nan")})
    return pl.DataFrame(rows)


def decay_slopes(long: pl.DataFrame) -> pl.DataFrame:
    """Per variant and subset: least-squares slope of HitRate@K over windows 1..W, absolute and
    relative to the mean (share lost per window; negative = decay)."""
    rows = []
    for (variant, subset), g in long.filter(pl.col("window") > 0).group_by(["variant", "subset"], maintain_order=True):
        g = g.filter(pl.col("hr").is_not_nan()).sort("window")
        x, y = g["window"].to_numpy().astype(float), g["hr"].to_numpy()
        slope = float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")
        mean = float(y.mean()) if len(y) else float("nan")
        rows.append({"variant": variant, "subset": subset, "slope": slope,
                     "rel_slope": slope / mean if mean and mean == mean else float("nan")})
    return pl.DataFrame(rows)


# ----------------------------------------------------------------------------------- train / score


def train(task: RetrievalTask, b: Batches, chunks: Chunks, epochs: int, batch_size: int, seed: int) -> dict:
    """``epochs`` shuffled passes over the training chunks, ``batch_size`` chunks per step."""
    g = np.random.default_rng([seed, 0x7A1])
    t0 = time.perf_counter()
    losses = []
    for _ in range(epochs):
        perm = g.permutation(len(chunks))
        for a in range(0, len(perm), batch_size):
            mb = perm[a : a + batch_size]
            if chunks.t_start[mb + 1].sum() - chunks.t_start[mb].sum() >= 2:
                losses.append(task.step(b.train_batch(chunks, mb)))
    s = time.perf_counter() - t0
    n = len(chunks.t_row) * epochs
    return {"train_s": s, "train_targets_per_s": n / max(s, 1e-9), "train_steps": float(len(losses)),
            "final_loss": float(np.mean(losses[-20:])) if losses else float("nan")}


@torch.no_grad()
def item_vectors(task: RetrievalTask, b: Batches, hist_ts: int | None, chunk: int = 4096) -> torch.Tensor:
    """(N, d) every item's vector, histories as of ``hist_ts`` (None: no history)."""
    N = len(b.items)
    out = []
    for a in range(0, N, chunk):
        rows = np.arange(a, min(N, a + chunk))
        out.append(task.items(b.item_batch(rows, None if hist_ts is None else np.full(len(rows), hist_ts), test=True)))
    return torch.cat(out)


@torch.no_grad()
def user_vectors(task: RetrievalTask, b: Batches, s: Split, chunk: int = 2048) -> torch.Tensor:
    """(len(s.test), d) each test positive's user vector: the user's positives strictly before it."""
    p = b.p
    out = [task.users(b.seq_batch(p.user_idx[ev], p.ts[ev])) for ev in np.array_split(s.test, max(1, -(-len(s.test) // chunk)))]
    return torch.cat(out) if out else torch.zeros(0, 1)


@torch.no_grad()
def score(task: RetrievalTask, variant: Variant, b: Batches, s: Split, oc: IHMOfflineConfig, seed: int,
          users: torch.Tensor | None = None, chunk: int = 1024) -> np.ndarray:
    """Rank of each test positive's item (candidates strictly higher), in ``s.test`` order.
    ``users``: :func:`user_vectors` of the task (computed when not given)."""
    p, items = b.p, b.items
    test = s.test
    users_all = user_vectors(task, b, s) if users is None else users
    refresh = max(1, int(round(oc.refresh_hours * 3600)))
    bucket = (p.ts[test] - s.split_ts) // refresh if variant.history == "live" else np.zeros(len(test), np.int64)
    by_upload = np.argsort(items.upload_ts, kind="stable")
    upload_sorted = items.upload_ts[by_upload]
    rng = np.random.default_rng([seed, 0x5C0])
    rank = np.zeros(len(test), np.int64)
    V = None
    for bk in np.unique(bucket):
        idx = np.flatnonzero(bucket == bk)
        hist_ts = {"live": s.split_ts + int(bk) * refresh, "frozen": s.split_ts, "none": None}[variant.history]
        if V is None or variant.history == "live":
            V = item_vectors(task, b, hist_ts)  # (N, d)
        for a in range(0, len(idx), chunk):
            ev = test[idx[a : a + chunk]]
            m, ts, target = len(ev), p.ts[ev], p.item[ev]
            U = users_all[idx[a : a + chunk]]  # (m, d)
            seen_row, seen_item = b.user_items.pairs(p.user_idx[ev], ts)
            if oc.eval_negatives == 0:
                sc = (U @ V.T).numpy()  # (m, N)
                sc[items.upload_ts[None, :] > ts[:, None]] = -np.inf
                sc[seen_row, seen_item] = -np.inf
                true = sc[np.arange(m), target].copy()  # (m,)
                sc[np.arange(m), target] = -np.inf  # the target never outranks itself
                rank[idx[a : a + chunk]] = (sc > true[:, None]).sum(1)
            else:
                avail = np.searchsorted(upload_sorted, ts, side="right")  # (m,) items uploaded by ts
                cand = by_upload[(rng.random((m, oc.eval_negatives)) * avail[:, None]).astype(np.int64)]  # (m, n)
                sc = (U[:, None, :] * V[torch.from_numpy(cand)]).sum(-1).numpy()  # (m, n)
                excl = cand == target[:, None]
                if len(seen_row):
                    seen = np.zeros((m, len(items)), bool)
                    seen[seen_row, seen_item] = True
                    excl |= seen[np.arange(m)[:, None], cand]
                sc[excl] = -np.inf
                true = (U * V[torch.from_numpy(target)]).sum(-1).numpy()
                rank[idx[a : a + chunk]] = (sc > true[:, None]).sum(1)
    return rank


def sizes_of(sc: Scenario, n_item_dense: int) -> RetrievalSizes:
    oc, m = sc.ihm_offline, sc.ihm_offline.model
    return RetrievalSizes(
        ihm=IHMConfig(dim=sc.model.dim, heads=m.heads, max_history=m.max_history, id_buckets=sc.model.id_buckets,
                      n_item_dense=n_item_dense, history_dropout=m.history_dropout),
        sasrec=SASRecConfig(dim=sc.model.dim, layers=m.layers, heads=m.attn_heads, ff=2 * sc.model.dim,
                            dropout=m.dropout, seq_len=m.seq_len),
        tau=m.tau, lr=oc.lr, seed=sc.seed)


def run_ihm_offline(scenario: Scenario, log: Log, days: int | None = None, progress=None) -> tuple[pl.DataFrame, dict]:
    """Train each variant's model once, score every window; returns (window-1 Table-1 layout, meta).

    meta: ``figures`` (per-variant scalars for the child runs), ``long`` (every window x subset),
    ``decay`` (slopes), counts. ``days``: use only the log's first days.
    """
    torch.set_num_threads(1)
    oc = scenario.ihm_offline
    unknown = sorted({a.kind for a in scenario.arms} - set(VARIANTS))
    if unknown:
        raise ValueError(f"ihm_offline: arm kinds {unknown} are not variants of the protocol; known: {sorted(VARIANTS)}")
    items = ItemTable.of(log)
    p = Positives.of(log, items, until_ts=log.t0 + days * SECONDS_PER_DAY if days else None)
    s = Split.of(p, len(items), oc, scenario.seed)
    known = np.zeros(int(p.user_idx.max()) + 1, bool)
    known[p.user_idx[s.train]] = True
    b = Batches(p, items, oc.model.seq_len, oc.model.max_history, known if oc.known_users_only else None)
    sizes = sizes_of(scenario, items.t["item_dense"].shape[1])
    log_q = torch.from_numpy(np.log(np.maximum(s.train_count, 1) / max(len(s.train), 1)))
    tail = s.train_count[p.item[s.test]] < oc.tail_max
    chunks = Chunks.of(p, s.train, oc.model.seq_len)
    trained: dict[str, tuple[RetrievalTask, dict, torch.Tensor]] = {}
    longs, figures = [], {}
    for arm in scenario.arms:
        v = VARIANTS[arm.kind]
        if v.model not in trained:
            task = RETRIEVAL_MODELS[v.model](sizes, log_q)
            stats = train(task, b, chunks, oc.epochs, oc.batch_size, scenario.seed)
            trained[v.model] = (task, stats, user_vectors(task, b, s))
        task, stats, users = trained[v.model]
        t0 = time.perf_counter()
        rank = score(task, v, b, s, oc, scenario.seed, users=users)
        long = summarize(arm.name, rank, s.window, tail, oc.k, oc.windows)
        longs.append(long)
        figures[arm.name] = {**stats, "score_s": time.perf_counter() - t0,
                             **{f"{r['subset']}.w{r['window']}.{m}": r[m] for r in long.iter_rows(named=True)
                                for m in ("hr", "ndcg")}}
        if progress is not None:
            progress(arm.name)
    long = pl.concat(longs)
    decay = decay_slopes(long)
    for r in decay.iter_rows(named=True):
        figures[r["variant"]][f"{r['subset']}.decay_slope"] = r["slope"]
        figures[r["variant"]][f"{r['subset']}.decay_rel_slope"] = r["rel_slope"]
    test_tail = int(tail.sum())
    meta = {"figures": figures, "long": long, "decay": decay, "train_positives": int(len(s.train)),
            "test_events": int(len(s.test)), "test_tail_events": test_tail, "items": int(len(items)),
            "tail_items": int((s.train_count < oc.tail_max).sum()), "split_ts": s.split_ts,
            "window_days": float((s.end_ts - s.split_ts) / oc.windows / SECONDS_PER_DAY),
            "window_events": [int((s.window == w).sum()) for w in range(oc.windows)]}
    return table1(long, oc.k), meta


def table1(long: pl.DataFrame, k: int, window: int = 1) -> pl.DataFrame:
    """The paper's Table 1 layout for one window: a row per variant, HR/NDCG overall, tail, head."""
    w = long.filter(pl.col("window") == window)
    out = None
    for subset in SUBSETS:
        part = w.filter(pl.col("subset") == subset).select(
            "variant", pl.col("hr").alias(f"{subset}_hr{k}"), pl.col("ndcg").alias(f"{subset}_ndcg{k}"))
        out = part if out is None else out.join(part, on="variant", how="left", maintain_order="left")
    return out


def format_table(table: pl.DataFrame, k: int) -> str:
    """Markdown of :func:`table1`."""
    head = (f"| Method | Overall HR@{k} | Overall NDCG@{k} | Tail HR@{k} | Tail NDCG@{k} | Head HR@{k} | Head NDCG@{k} |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = [f"| {r['variant']} | " + " | ".join(f"{r[f'{s}_{m}{k}']:.4f}" for s in SUBSETS for m in ("hr", "ndcg")) + " |"
            for r in table.iter_rows(named=True)]
    return head + "\n".join(rows) + "\n"


def format_decay(long: pl.DataFrame, decay: pl.DataFrame) -> str:
    """Markdown: HitRate per window (tail / head) and the decay slopes, one row per variant."""
    W = int(long["window"].max())
    head = ("| Method | " + " | ".join(f"w{w} tail / head" for w in range(1, W + 1))
            + " | slope overall | slope tail | slope head |\n|---|" + "---|" * (W + 3) + "\n")
    lines = []
    for variant in long["variant"].unique(maintain_order=True):
        g = long.filter(pl.col("variant") == variant)
        cell = lambda w, s: g.filter((pl.col("window") == w) & (pl.col("subset") == s))["hr"][0]  # noqa: E731
        d = decay.filter(pl.col("variant") == variant)
        sl = {r["subset"]: r for r in d.iter_rows(named=True)}
        lines.append(f"| {variant} | " + " | ".join(f"{cell(w, 'tail'):.4f} / {cell(w, 'head'):.4f}" for w in range(1, W + 1))
                     + " | " + " | ".join(f"{sl[s]['slope']:+.4f} ({100 * sl[s]['rel_slope']:+.1f}%)" for s in SUBSETS) + " |")
    return head + "\n".join(lines) + "\n"


def plot_decay(long: pl.DataFrame, control: str, path: Path, k: int = 10) -> Path:
    """HitRate@K per window, one subplot per subset (overall, tail, head), one line per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.6, 3.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(SUBSETS))
    for ax, subset in zip(axes, SUBSETS, strict=True):
        for variant in long["variant"].unique(maintain_order=True):
            g = long.filter((pl.col("variant") == variant) & (pl.col("subset") == subset) & (pl.col("window") > 0)).sort("window")
            style = {"color": "black", "linestyle": "--", "linewidth": 1.8} if variant == control else {"linewidth": 1.6}
            ax.plot(g["window"].to_numpy(), g["hr"].to_numpy(), marker="o", markersize=3, label=variant, **style)
        ax.set_title(f"{subset} items")
        ax.set_xlabel("test window (no retraining)")
        ax.set_ylabel(f"HitRate@{k}")
        ax.grid(alpha=0.3)
    axes[0].legend(title="variant")
    fig.suptitle("Decay over time windows after one training (IHM paper Fig. 3)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
