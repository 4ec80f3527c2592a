"""IHMChannel: IHM retrieval with real-time inference, a KV store of item embeddings and ATS measurement (the
serving side of the IHM strategy; :mod:`serving.channels.ihm` describes how it works)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from simulator.core.config import IHMArmSpec
from simulator.core.schema import SECONDS_PER_DAY
from serving.channels.base import Channel, OracleCandidates, RequestContext, Retrieval
from serving.channels.cold import ColdItemIndex
from serving.channels.ihm.realtime import NEVER, ATSTracker, RateLimiter, ats_percentiles
from serving.features import grow_rows, sequence_tail
from serving.row_invariant import row_invariant
from trainers.checkpoint import capture, index_bytes, restore, torch_state
from trainers.models.ihm import IHMConfig, ItemHistoryModel
from trainers.models.sasrec import SASRecConfig, SASRecUserTower
from trainers.weights import unpack_weights

CHUNK = 4096
COUNTS = ("inferences", "deferred", "late", "batch_inferences", "upload_inferences", "index_updates", "weight_loads")
"""The day's counters, logged as ``ihm.<name>``."""


@dataclass
class IHMChannelState:
    """What an :class:`IHMChannel` checkpoints."""

    item_model: dict = torch_state()
    user_tower: dict = torch_state()
    index: bytes = index_bytes()
    kv_vec: np.ndarray
    kv_ts: np.ndarray
    limiter: RateLimiter
    ats: ATSTracker
    expo_seen: np.ndarray
    seq_seen: np.ndarray
    counts: dict[str, int]
    run_inferences: int
    clock: int
    steps_loaded: int
    first_day: int | None
    pending_weights: tuple | None


class IHMChannel(Channel):
    """IHM retrieval with real-time inference, a KV store of item embeddings and ATS measurement."""

    name = "ihm"
    NOT_SAVED = ("spec", "history_work", "seconds")

    def __init__(self, spec: IHMArmSpec, item_cfg: IHMConfig, user_cfg: SASRecConfig, m: int, ef_construction: int,
                 ef: int, seed: int):
        torch.manual_seed(seed)
        self.spec = spec
        self.item_model = ItemHistoryModel(item_cfg).eval()
        self.user_tower = SASRecUserTower(user_cfg, self.item_model.static).eval()
        self.index = ColdItemIndex(item_cfg.dim, spec.cold_max_exposures, int(spec.cold_max_age_hours * 3600), m=m,
                                   ef_construction=ef_construction, ef=ef, seed=seed)
        self.history_work = not spec.static_only  # feedback can change an embedding
        # KV store, by item row: the served embedding and when it was inferred
        self.kv_vec = np.zeros((0, item_cfg.dim), np.float32)
        self.kv_ts = np.full(0, NEVER, np.int64)
        self.limiter = RateLimiter(int(round(spec.rate_limit_s)))  # trigger state, by item row
        self.ats = ATSTracker()
        self.expo_seen = np.zeros(0, np.int64)  # item exposures at the last impressions check
        self.seq_seen = np.zeros(0, np.int64)  # positives of the item already seen by on_feedback
        self.counts = dict.fromkeys(COUNTS, 0)  # today's
        self.run_inferences = 0
        self.clock = NEVER  # the latest simulated time seen
        self.steps_loaded = -1
        self.first_day: int | None = None
        self.pending_weights: tuple | None = None  # daily mode: applied at the day's end
        self.seconds = {"infer": 0.0, "index": 0.0}  # wall time (benchmarks; not logged: not deterministic)

    # ------------------------------------------------------------------ helpers
    def _grow_items(self, n: int) -> None:
        self.kv_vec = grow_rows(self.kv_vec, n)
        self.kv_ts = grow_rows(self.kv_ts, n, NEVER)
        self.limiter.grow(n)
        self.expo_seen = grow_rows(self.expo_seen, n)
        self.seq_seen = grow_rows(self.seq_seen, n)

    def _tick(self, now: int) -> None:
        self.clock = max(self.clock, int(now))

    def frozen(self, ts: int) -> bool:
        """Past the training days (without periodic retraining): nothing is logged for training."""
        return (not self.spec.periodic_retrain and self.first_day is not None
                and int(ts) // SECONDS_PER_DAY >= self.first_day + self.spec.train_days)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(self, policy, rows: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """e_i (n, d) for item rows from their features and positive users (only those up to ``at``, when given)."""
        s = policy.store
        out = []
        t = time.perf_counter()
        for a in range(0, len(rows), CHUNK):
            r = rows[a : a + CHUNK]
            seq, n, ts = s.sequences(r, with_ts=True)
            if at is not None:
                keep = (np.arange(seq.shape[1])[None, :] < n[:, None]) & (ts <= at[a : a + CHUNK, None])
                order = np.argsort(~keep, axis=1, kind="stable")  # kept users first, in their order
                n = keep.sum(1)
                seq = np.where(np.arange(seq.shape[1])[None, :] < n[:, None], np.take_along_axis(seq, order, 1), -1)
            batch = {
                "item_id": torch.from_numpy(s.items.ids[r]), "creator_id": torch.from_numpy(s.item_creator[r]),
                "category": torch.from_numpy(s.item_category[r]), "item_dense": torch.from_numpy(s.item_dense[r]),
                "hist_users": torch.from_numpy(seq), "hist_len": torch.from_numpy(n.astype(np.int64)),
            }
            out.append(self.item_model(batch).numpy())
        self.seconds["infer"] += time.perf_counter() - t
        return np.concatenate(out) if out else np.zeros((0, self.item_model.cfg.dim), np.float32)

    def _write(self, rows: np.ndarray, vec: np.ndarray, at: np.ndarray, rebuild_with: np.ndarray | None = None) -> None:
        """KV store, then the index: in place (``add`` replaces labels) or rebuilt from ``rebuild_with`` rows."""
        self.kv_vec[rows] = vec
        self.kv_ts[rows] = at
        t = time.perf_counter()
        if rebuild_with is None:
            self.index.add(rows, vec)
            self.counts["index_updates"] += len(rows)
        else:
            self.index.build(rebuild_with, self.kv_vec[rebuild_with])
        self.seconds["index"] += time.perf_counter() - t

    def _run(self, policy, job_item: np.ndarray, job_t: np.ndarray) -> None:
        """Queued inferences now due join the jobs; every job counts; the latest per item is computed and indexed."""
        due_items, due_times = self.limiter.take_due(policy.store.n_items, self.clock)
        if len(due_items):
            job_item, job_t = np.concatenate([job_item, due_items]), np.concatenate([job_t, due_times])
        if len(job_item) == 0:
            return
        self.ats.resolve(job_item, job_t)
        self.counts["inferences"] += len(job_item)
        order = np.lexsort((job_t, job_item))
        ji, jt = job_item[order], job_t[order]
        last = np.r_[ji[1:] != ji[:-1], True]  # an item's later job supersedes its earlier ones in this call
        rows, at = ji[last], jt[last]
        self._write(rows, self.infer(policy, rows, at), at)

    def _schedule(self, items: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rate-limited inference jobs (item, time) for triggers (item, time)."""
        job_item, job_t, deferred = self.limiter.schedule(items, times)
        self.counts["deferred"] += deferred
        return job_item, job_t

    def _reinfer_all(self, policy, now: int) -> None:
        """Batch inference of every cold item at ``now`` and an index rebuild (weight loads, daily mode)."""
        s = policy.store
        rows = np.arange(s.n_items)
        rows = rows[self.index.is_cold(s, rows, now)]
        at = np.full(len(rows), now, np.int64)
        self._write(rows, self.infer(policy, rows, at), at, rebuild_with=rows)
        self.counts["batch_inferences"] += len(rows)
        self.ats.resolve(rows, at)
        self.limiter.clear_queue(s.n_items)  # queued inferences are covered by this one

    def _new_positives(self, policy, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item row, time) of positives appended to these items' sequences since the last call."""
        s = policy.store
        L = s.max_seq
        cnt = s.item_seq_count[rows]
        new = np.minimum(cnt - self.seq_seen[rows], L)
        self.seq_seen[rows] = cnt
        item = np.repeat(rows, new)
        j = np.repeat(cnt, new) - (np.arange(int(new.sum())) - np.repeat(np.cumsum(new) - new, new)) - 1
        return item, s.item_seq_ts[item, j % L]

    # ------------------------------------------------------------------ hooks called by ArmPolicy
    def on_upload(self, policy, rows: np.ndarray, oracle: OracleCandidates | None) -> dict[int, list[int]]:
        """New items enter the KV store and (when cold) the index with their empty-history embedding E_S."""
        if len(rows) == 0:
            return {}
        s = policy.store
        self._grow_items(s.n_items)
        self.seq_seen[rows] = s.item_seq_count[rows]
        self.expo_seen[rows] = s.item_expo[rows]
        vec = self.infer(policy, rows)
        self.counts["upload_inferences"] += len(rows)
        cold = self.index.is_cold(s, rows, max(self.clock, int(s.item_upload_ts[rows].max())))
        self.kv_vec[rows] = vec
        self.kv_ts[rows] = s.item_upload_ts[rows]
        t = time.perf_counter()
        self.index.add(rows[cold], vec[cold])
        self.seconds["index"] += time.perf_counter() - t
        return {}

    def on_feedback(self, policy, rows: np.ndarray, now: int) -> None:
        """Positives on cold items trigger (rate-limited) re-inference; so does every ``impressions_trigger``-th
        impression; ATS starts counting for each positive."""
        s = policy.store
        self._grow_items(s.n_items)
        self._tick(now)
        if not self.history_work:
            return
        item, ts = self._new_positives(policy, rows)
        cold = self.index.is_cold(s, item, ts)
        item, ts = item[cold], ts[cold]
        late = ts < self.limiter.last_infer[item]  # an inference later than the action ran before it was seen
        self.counts["late"] += int(late.sum())
        self.ats.add(item, ts, late)
        if not self.spec.realtime:
            return
        X = self.spec.impressions_trigger
        n = s.n_items
        if X:
            crossed = np.flatnonzero(s.item_expo[:n] // X > self.expo_seen[:n] // X)
            crossed = crossed[self.index.is_cold(s, crossed, now)]
            item = np.concatenate([item, crossed])
            ts = np.concatenate([ts, np.full(len(crossed), now, np.int64)])
        self.expo_seen[:n] = s.item_expo[:n]
        self._run(policy, *self._schedule(item, ts))

    def on_weights(self, policy, weights: dict, now: int | None) -> None:
        """Load new task weights and re-infer every cold item (real time), or keep them for the day's end (daily)."""
        if self.name not in weights:
            return
        item_w, user_w = unpack_weights(weights[self.name], "item", "user")
        steps = int(weights[self.name]["meta.steps"])
        if steps == self.steps_loaded:
            return  # frozen: the task's weights did not change
        if self.spec.realtime or not self.history_work:
            self._load(item_w, user_w, steps)
            if now is not None:
                self._tick(now)
            self._reinfer_all(policy, self.clock)
        else:
            self.pending_weights = (item_w, user_w, steps)

    def _load(self, item_w: dict, user_w: dict, steps: int) -> None:
        self.item_model.load_state_dict(item_w)
        self.user_tower.load_state_dict(user_w)
        self.steps_loaded = steps
        self.counts["weight_loads"] += 1

    def on_day_end(self, policy, ts: int) -> dict[str, float]:
        s = policy.store
        self._grow_items(s.n_items)
        self._tick(ts)
        rows = np.arange(s.n_items)
        if self.history_work and not self.spec.realtime:  # daily batch inference
            if self.pending_weights is not None:
                self._load(*self.pending_weights)
                self.pending_weights = None
            self._reinfer_all(policy, self.clock)
        else:
            if self.history_work:
                self._run(policy, np.zeros(0, np.int64), np.zeros(0, np.int64))
            cold = rows[self.index.is_cold(policy.store, rows, self.clock)]
            t = time.perf_counter()
            self.index.build(cold, self.kv_vec[cold])  # compaction: the still-cold items, no inference
            self.seconds["index"] += time.perf_counter() - t
        # positives of items that left the index will never be reflected
        self.ats.keep_pending(self.index.is_cold(s, self.ats.pending_item, self.clock))
        return {f"ihm.{k}": v for k, v in self._diagnostics().items()}

    def _diagnostics(self) -> dict[str, float]:
        today, run = self.ats.close_day()
        self.run_inferences += self.counts["inferences"]
        out = {k: float(v) for k, v in self.counts.items()}
        out.update({"index_size": float(len(self.index)), "pending_positives": float(len(self.ats.pending_item)),
                    "ats_samples": float(today.shape[1]), "run.ats_samples": float(run.shape[1]),
                    "run.inferences": float(self.run_inferences)})
        out.update(ats_percentiles(today, run))
        self.counts = dict.fromkeys(self.counts, 0)
        return out

    # ------------------------------------------------------------------ retrieval
    def user_features(self, policy, user_rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The users' last ``seq_len`` positive items as the user tower's inputs: ({key: (n, L, ...)}, (n,) lengths)."""
        s = policy.store
        L = min(self.user_tower.cfg.seq_len, s.max_user_seq)
        rows, n = sequence_tail(*s.user_sequences(user_rows), L)
        r = np.maximum(rows, 0)
        if s.n_items == 0:
            z = np.zeros(rows.shape, np.int64)
            return {"item_id": z - 1, "creator_id": z, "category": z,
                    "item_dense": np.zeros(rows.shape + (s.n_item_dense,), np.float32)}, n
        return {"item_id": np.where(rows >= 0, s.items.ids[r], -1), "creator_id": s.item_creator[r],
                "category": s.item_category[r], "item_dense": s.item_dense[r]}, n

    @torch.no_grad()
    def user_vectors(self, policy, user_rows: np.ndarray) -> np.ndarray:
        out = []
        for a in range(0, len(user_rows), CHUNK):
            f, n = self.user_features(policy, user_rows[a : a + CHUNK])
            seq = {k: torch.from_numpy(v) for k, v in f.items()} | {"seq_len": torch.from_numpy(n)}
            out.append(row_invariant(self.user_tower, seq).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.item_model.cfg.dim), np.float32)

    def on_requests(self, policy, ctx: RequestContext) -> None:
        """Moves the clock and runs the queued inferences now due; the first request's day starts the training
        window."""
        if ctx.n:
            self._tick(int(ctx.ts.max()))
            if self.history_work and self.spec.realtime:
                self._grow_items(policy.store.n_items)
                self._run(policy, np.zeros(0, np.int64), np.zeros(0, np.int64))  # queued inferences now due
            if self.first_day is None:
                self.first_day = int(ctx.ts.min()) // SECONDS_PER_DAY

    def retrieve(self, ctx: RequestContext) -> Retrieval:
        """The cold items nearest to each user's SASRec vector."""
        policy = ctx.policy
        if len(self.index) == 0 or ctx.n == 0:
            return Retrieval.empty(ctx.n)
        query = self.user_vectors(policy, ctx.user_rows)
        return Retrieval(self.index.nearest_cold(policy.store, query, ctx.ts, self.spec.k))

    # ------------------------------------------------------------------ feature logging for training
    def log_features(self, policy, ctx: RequestContext, rows: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """Per slate slot: the item's history at serve time and the user's recent items at request time
        (``ihm_ulen = -1``: not a sample), and the request's day. Widths are 0 once training is frozen."""
        n, S = rows.shape
        day = np.broadcast_to((ctx.ts // SECONDS_PER_DAY)[:, None], (n, S)).astype(np.int64)
        frozen = len(ctx.batch_ts) > 0 and self.frozen(int(ctx.batch_ts.min()))  # the whole batch's: one width
        M = 0 if frozen else self.item_model.cfg.max_history
        L = 0 if frozen else min(self.user_tower.cfg.seq_len, policy.store.max_user_seq)
        F = policy.store.n_item_dense
        hist = np.full((n, S, M), -1, np.int64)
        hlen = np.full((n, S), -1, np.int64)
        useq = {k: np.full((n, S, L), -1 if k == "item_id" else 0, np.int64) for k in ("item_id", "creator_id", "category")}
        udense = np.zeros((n, S, L, F), np.float32)
        ulen = np.full((n, S), -1, np.int64)
        ri, si = np.nonzero(valid)
        if len(ri) and not frozen:
            seq, ln = sequence_tail(*policy.store.sequences(rows[ri, si]), M)
            hist[ri, si], hlen[ri, si] = seq, ln
            f, un = self.user_features(policy, ctx.user_rows)
            for k in useq:
                useq[k][ri, si] = f[k][ri]
            udense[ri, si] = f["item_dense"][ri]
            ulen[ri, si] = un[ri]
        return {"ihm_hist": hist, "ihm_hlen": hlen, "ihm_useq": useq["item_id"], "ihm_useq_creator": useq["creator_id"],
                "ihm_useq_cat": useq["category"], "ihm_useq_dense": udense, "ihm_ulen": ulen, "ihm_day": day}

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> IHMChannelState:
        return capture(self, IHMChannelState)

    def load_state(self, state: IHMChannelState) -> None:
        restore(self, state)
