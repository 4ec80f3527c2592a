"""The IHM channel (papers/item_history_model_ihm.txt sections 3-4): an HNSW index of cold items' IHM embeddings,
kept fresh by real-time re-inference, queried with the requesting user's SASRec vector.

Real-time serving, in simulated (event) time:

* **Feature logging.** Feedback appends to {item: users who liked/commented} (the arm's
  :class:`serving.features.FeatureStore` item sequences) and {user: items} (its user sequences).
* **Inference triggers.** A like/comment on a cold item triggers a re-inference of its embedding at
  the action's time; so does every ``impressions_trigger``-th impression (at the feedback batch's
  time). **Rate limit**: two inferences of an item are at least ``rate_limit_s`` apart; a trigger
  inside the gap queues one inference for the moment the gap expires (further triggers merge into
  it), run at the first later feedback, request batch or day end whose time has passed it. An
  inference at time T reads the item's history up to T.
* **KV store and index.** Each inference writes (vector, inference time) to the KV store
  (``kv_vec``, ``kv_ts``, by item row) and the vector to the ANN index in place (hnswlib replaces a
  label's vector), one batch per call. Items enter at upload with their empty-history embedding
  (E_S). At the end of each day the index is rebuilt from the KV store with the still-cold items
  (no inference: a compaction, like the paper's daily global index update).
* **ATS.** For every like/comment on an indexed (cold) item, the simulated time until an inference
  whose history includes it has updated the index: inference time minus action time. Per day
  ``ihm.ats_p50_min`` / ``ihm.ats_p95_min`` and over the run so far ``ihm.run.ats_p50_min`` /
  ``ihm.run.ats_p95_min`` (pooled over every sample, not averaged over days). An action the arm sees only
  after an inference of its item timed later than the action (the driver serves a tick in rounds, not
  in time order) is *late*: it waits for the next allowed inference; ``ihm.late`` counts them and the
  ``ats_ontime_*`` percentiles leave them out.

Model weights come from the arm's :class:`trainers.ihm_online_task.IHMTask` through ``on_weights``; a
weight load re-infers every cold item and rebuilds the index. The task freezes after its
``train_days`` (its weights stop changing, so there is nothing new to load), after which embeddings
change only through new interactions: the inductive setting. Ablations (``IHMArmSpec``):
``realtime=False`` infers nothing on feedback and re-infers every cold item once a day, at the
day's end, where it also applies the day's weights (daily batch inference); ``static_only=True``
embeds items by E_S alone and does no feedback work.

Ray-free: the arm's Serve deployment calls these hooks through :class:`serving.stack.ArmPolicy`.
"""

from __future__ import annotations

import io
import pickle
import time

import numpy as np
import torch

from simulator.core.config import IHMArmSpec
from simulator.core.schema import SECONDS_PER_DAY
from serving.features import grow_rows
from serving.index import ANNIndex
from serving.stack import RequestContext
from trainers.ihm_online_task import split_weights
from trainers.models.ihm import IHMConfig, ItemHistoryModel
from trainers.models.sasrec import SASRecConfig, SASRecUserTower

NEVER = np.iinfo(np.int64).min // 4  # "no time": never inferred / nothing queued
CHUNK = 4096
OVERFETCH = 2  # index neighbours fetched per candidate kept (items that stopped being cold are skipped)


def _last(seq: np.ndarray, length: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``L`` entries of left-aligned, -1 padded rows, left-aligned again: ((n, L), (n,))."""
    n = np.minimum(length, L)
    if seq.shape[1] == 0:
        return np.full((len(seq), L), -1, np.int64), n
    idx = (length - n)[:, None] + np.arange(L)[None, :]
    out = np.take_along_axis(seq, np.minimum(idx, seq.shape[1] - 1), 1)
    return np.where(np.arange(L)[None, :] < n[:, None], out, -1), n


class IHMChannel:
    """IHM retrieval with real-time inference, a KV store of item embeddings and ATS measurement."""

    name = "ihm"

    def __init__(self, spec: IHMArmSpec, item_cfg: IHMConfig, user_cfg: SASRecConfig, m: int, ef_construction: int,
                 ef: int, seed: int):
        torch.manual_seed(seed)
        self.spec = spec
        self.item_model = ItemHistoryModel(item_cfg).eval()
        self.user_tower = SASRecUserTower(user_cfg, self.item_model.static).eval()
        self.index = ANNIndex(item_cfg.dim, m=m, ef_construction=ef_construction, ef=ef, seed=seed)
        self.gap = int(round(spec.rate_limit_s))
        self.max_age_s = int(spec.cold_max_age_hours * 3600)
        self.history_work = not spec.static_only  # feedback can change an embedding
        # KV store, by item row: the served embedding and when it was inferred
        self.kv_vec = np.zeros((0, item_cfg.dim), np.float32)
        self.kv_ts = np.full(0, NEVER, np.int64)
        # trigger state, by item row
        self.last_infer = np.full(0, NEVER, np.int64)  # time of the last triggered inference (the rate limit)
        self.due = np.full(0, NEVER, np.int64)  # time of the queued inference, NEVER when none
        self.expo_seen = np.zeros(0, np.int64)  # item exposures at the last impressions check
        self.seq_seen = np.zeros(0, np.int64)  # positives of the item already seen by on_feedback
        # ATS: positives (item row, time) the index does not reflect yet; samples (seconds)
        self.pos_item = np.zeros(0, np.int64)
        self.pos_ts = np.zeros(0, np.int64)
        self.pos_late = np.zeros(0, bool)  # seen after a later-timed inference of its item (round order)
        self.ats_day: list[np.ndarray] = []  # (2, m): seconds, late flag
        self.ats_run = np.zeros((2, 0), np.int64)
        self.counts = dict.fromkeys(("inferences", "deferred", "late", "batch_inferences", "upload_inferences",
                                     "index_updates", "weight_loads"), 0)  # today's
        self.run_inferences = 0
        self.clock = NEVER  # the latest simulated time seen
        self.steps_loaded = -1
        self.first_day: int | None = None
        self._pending_weights: tuple | None = None  # daily mode: applied at the day's end
        self.seconds = {"infer": 0.0, "index": 0.0}  # wall time (benchmarks; not logged: not deterministic)

    # ------------------------------------------------------------------ helpers
    def _grow_items(self, n: int) -> None:
        self.kv_vec = grow_rows(self.kv_vec, n)
        self.kv_ts = grow_rows(self.kv_ts, n, NEVER)
        self.last_infer = grow_rows(self.last_infer, n, NEVER)
        self.due = grow_rows(self.due, n, NEVER)
        self.expo_seen = grow_rows(self.expo_seen, n)
        self.seq_seen = grow_rows(self.seq_seen, n)

    def _tick(self, now: int) -> None:
        self.clock = max(self.clock, int(now))

    def cold(self, policy, rows: np.ndarray, now) -> np.ndarray:
        s = policy.store
        return (s.item_expo[rows] < self.spec.cold_max_exposures) & (np.asarray(now) - s.item_upload_ts[rows] < self.max_age_s)

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

    def _resolve(self, job_item: np.ndarray, job_t: np.ndarray) -> None:
        """ATS: each pending positive is reflected by its item's first inference at or after its time."""
        if len(self.pos_item) == 0 or len(job_item) == 0:
            return
        base = min(int(job_t.min()), int(self.pos_ts.min()))
        span = max(int(job_t.max()), int(self.pos_ts.max())) - base + 1
        jk = job_item * span + (job_t - base)
        order = np.argsort(jk, kind="stable")
        jk, ji, jt = jk[order], job_item[order], job_t[order]
        pk = self.pos_item * span + (self.pos_ts - base)
        i = np.minimum(np.searchsorted(jk, pk, side="left"), len(jk) - 1)
        hit = (ji[i] == self.pos_item) & (jt[i] >= self.pos_ts)
        if hit.any():
            self.ats_day.append(np.stack([jt[i[hit]] - self.pos_ts[hit], self.pos_late[hit]]))
        self._keep_pending(~hit)

    def _keep_pending(self, keep: np.ndarray) -> None:
        self.pos_item, self.pos_ts, self.pos_late = self.pos_item[keep], self.pos_ts[keep], self.pos_late[keep]

    def _schedule(self, items: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rate-limited inference jobs (item, time) for triggers (item, time); updates the queue."""
        ji, jt = [], []
        order = np.lexsort((times, items))
        items, times = items[order].tolist(), times[order].tolist()
        gap = self.gap
        k = 0
        while k < len(items):
            r = items[k]
            last, due = int(self.last_infer[r]), int(self.due[r])
            while k < len(items) and items[k] == r:
                t = times[k]
                k += 1
                if due != NEVER and due <= t:  # the queued inference ran before this trigger
                    ji.append(r), jt.append(due)
                    last, due = due, NEVER
                if due != NEVER:
                    continue  # merged into the queued inference
                if t >= last + gap:
                    ji.append(r), jt.append(t)
                    last = t
                else:
                    due = last + gap
                    self.counts["deferred"] += 1
            self.last_infer[r], self.due[r] = last, due
        return np.array(ji, np.int64), np.array(jt, np.int64)

    def _run(self, policy, job_item: np.ndarray, job_t: np.ndarray) -> None:
        """Queued inferences now due join the jobs; every job counts; the latest per item is computed and indexed."""
        due = self.due[: policy.store.n_items]
        q = np.flatnonzero((due != NEVER) & (due <= self.clock))
        if len(q):
            job_item, job_t = np.concatenate([job_item, q]), np.concatenate([job_t, self.due[q]])
            self.last_infer[q] = self.due[q]
            self.due[q] = NEVER
        if len(job_item) == 0:
            return
        self._resolve(job_item, job_t)
        self.counts["inferences"] += len(job_item)
        order = np.lexsort((job_t, job_item))
        ji, jt = job_item[order], job_t[order]
        last = np.r_[ji[1:] != ji[:-1], True]  # an item's later job supersedes its earlier ones in this call
        rows, at = ji[last], jt[last]
        self._write(rows, self.infer(policy, rows, at), at)

    def _reinfer_all(self, policy, now: int) -> None:
        """Batch inference of every cold item at ``now`` and an index rebuild (weight loads, daily mode)."""
        s = policy.store
        rows = np.arange(s.n_items)
        rows = rows[self.cold(policy, rows, now)]
        at = np.full(len(rows), now, np.int64)
        self._write(rows, self.infer(policy, rows, at), at, rebuild_with=rows)
        self.counts["batch_inferences"] += len(rows)
        self._resolve(rows, at)
        self.due[: s.n_items] = NEVER  # queued inferences are covered by this one

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
    def on_upload(self, policy, rows: np.ndarray) -> None:
        """New items enter the KV store and (when cold) the index with their empty-history embedding E_S."""
        if len(rows) == 0:
            return
        s = policy.store
        self._grow_items(s.n_items)
        self.seq_seen[rows] = s.item_seq_count[rows]
        self.expo_seen[rows] = s.item_expo[rows]
        vec = self.infer(policy, rows)
        self.counts["upload_inferences"] += len(rows)
        cold = self.cold(policy, rows, max(self.clock, int(s.item_upload_ts[rows].max())))
        self.kv_vec[rows] = vec
        self.kv_ts[rows] = s.item_upload_ts[rows]
        t = time.perf_counter()
        self.index.add(rows[cold], vec[cold])
        self.seconds["index"] += time.perf_counter() - t

    def on_feedback(self, policy, rows: np.ndarray, now: int) -> None:
        s = policy.store
        self._grow_items(s.n_items)
        self._tick(now)
        if not self.history_work:
            return
        item, ts = self._new_positives(policy, rows)
        cold = self.cold(policy, item, ts)
        item, ts = item[cold], ts[cold]
        late = ts < self.last_infer[item]  # an inference later than the action ran before it was seen
        self.counts["late"] += int(late.sum())
        self.pos_item, self.pos_ts = np.concatenate([self.pos_item, item]), np.concatenate([self.pos_ts, ts])
        self.pos_late = np.concatenate([self.pos_late, late])
        if not self.spec.realtime:
            return
        X = self.spec.impressions_trigger
        n = s.n_items
        if X:
            crossed = np.flatnonzero(s.item_expo[:n] // X > self.expo_seen[:n] // X)
            crossed = crossed[self.cold(policy, crossed, now)]
            item = np.concatenate([item, crossed])
            ts = np.concatenate([ts, np.full(len(crossed), now, np.int64)])
        self.expo_seen[:n] = s.item_expo[:n]
        self._run(policy, *self._schedule(item, ts))

    def on_weights(self, policy, weights: dict, now: int | None) -> None:
        if self.name not in weights:
            return
        item_w, user_w, steps = split_weights(weights[self.name])
        if steps == self.steps_loaded:
            return  # frozen: the task's weights did not change
        if self.spec.realtime or not self.history_work:
            self._load(item_w, user_w, steps)
            if now is not None:
                self._tick(now)
            self._reinfer_all(policy, self.clock)
        else:
            self._pending_weights = (item_w, user_w, steps)

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
            if self._pending_weights is not None:
                self._load(*self._pending_weights)
                self._pending_weights = None
            self._reinfer_all(policy, self.clock)
        else:
            if self.history_work:
                self._run(policy, np.zeros(0, np.int64), np.zeros(0, np.int64))
            cold = rows[self.cold(policy, rows, self.clock)]
            t = time.perf_counter()
            self.index.build(cold, self.kv_vec[cold])  # compaction: the still-cold items, no inference
            self.seconds["index"] += time.perf_counter() - t
        # positives of items that left the index will never be reflected
        self._keep_pending(self.cold(policy, self.pos_item, self.clock))
        return {f"ihm.{k}": v for k, v in self._diagnostics().items()}

    def _diagnostics(self) -> dict[str, float]:
        day = np.concatenate(self.ats_day, 1) if self.ats_day else np.zeros((2, 0), np.int64)
        self.ats_run = np.concatenate([self.ats_run, day], 1)
        self.run_inferences += self.counts["inferences"]
        out = {k: float(v) for k, v in self.counts.items()}
        out.update({"index_size": float(len(self.index)), "pending_positives": float(len(self.pos_item)),
                    "ats_samples": float(day.shape[1]), "run.ats_samples": float(self.ats_run.shape[1]),
                    "run.inferences": float(self.run_inferences)})
        for name, a in (("", day), ("run.", self.ats_run)):
            for sub, x in (("", a[0]), ("ontime_", a[0, a[1] == 0])):  # ontime: without the round-order late ones
                if len(x):
                    out[f"{name}ats_{sub}p50_min"] = float(np.percentile(x, 50) / 60)
                    out[f"{name}ats_{sub}p95_min"] = float(np.percentile(x, 95) / 60)
        self.ats_day = []
        self.counts = dict.fromkeys(self.counts, 0)
        return out

    # ------------------------------------------------------------------ retrieval
    def user_features(self, policy, user_rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The users' last ``seq_len`` positive items as the user tower's inputs: ({key: (n, L, ...)}, (n,) lengths)."""
        s = policy.store
        L = min(self.user_tower.cfg.seq_len, s.max_user_seq)
        rows, n = _last(*s.user_sequences(user_rows), L)
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
            out.append(self.user_tower(seq).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.item_model.cfg.dim), np.float32)

    def retrieve(self, ctx: RequestContext) -> np.ndarray:
        policy = ctx.policy
        if ctx.n:
            self._tick(int(ctx.ts.max()))
            if self.history_work and self.spec.realtime:
                self._grow_items(policy.store.n_items)
                self._run(policy, np.zeros(0, np.int64), np.zeros(0, np.int64))  # queued inferences now due
        if len(self.index) == 0 or ctx.n == 0:
            return np.full((ctx.n, 0), -1, np.int64)
        k = self.spec.k
        labels, _ = self.index.query(self.user_vectors(policy, ctx.user_rows), OVERFETCH * k)
        ok = labels >= 0
        ok &= self.cold(policy, np.maximum(labels, 0), ctx.ts[:, None])
        ok &= np.cumsum(ok, axis=1) <= k  # the first k cold hits of each row, in similarity order
        out = np.where(ok, labels, -1)
        order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(out, order, 1)

    # ------------------------------------------------------------------ feature logging for training
    def log_features(self, policy, ctx: RequestContext, rows: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """Per slate slot: the item's history at serve time and the user's recent items at request time
        (``ihm_ulen = -1``: not a sample), and the request's day. Widths are 0 once training is frozen."""
        n, S = rows.shape
        if n and self.first_day is None:
            self.first_day = int(ctx.ts.min()) // SECONDS_PER_DAY
        day = np.broadcast_to((ctx.ts // SECONDS_PER_DAY)[:, None], (n, S)).astype(np.int64)
        frozen = n > 0 and self.frozen(int(ctx.ts.min()))
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
            seq, ln = _last(*policy.store.sequences(rows[ri, si]), M)
            hist[ri, si], hlen[ri, si] = seq, ln
            f, un = self.user_features(policy, ctx.user_rows)
            for k in useq:
                useq[k][ri, si] = f[k][ri]
            udense[ri, si] = f["item_dense"][ri]
            ulen[ri, si] = un[ri]
        return {"ihm_hist": hist, "ihm_hlen": hlen, "ihm_useq": useq["item_id"], "ihm_useq_creator": useq["creator_id"],
                "ihm_useq_cat": useq["category"], "ihm_useq_dense": udense, "ihm_ulen": ulen, "ihm_day": day}

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> bytes:
        buf = io.BytesIO()
        rest = {k: v for k, v in self.__dict__.items() if k not in ("item_model", "user_tower", "index", "spec", "seconds")}
        torch.save({"item": self.item_model.state_dict(), "user": self.user_tower.state_dict(),
                    "index": self.index.to_bytes(), "rest": pickle.dumps(rest)}, buf)
        return buf.getvalue()

    def load_state(self, data: bytes) -> None:
        st = torch.load(io.BytesIO(data), weights_only=False)
        self.item_model.load_state_dict(st["item"])
        self.user_tower.load_state_dict(st["user"])
        self.index.from_bytes(st["index"])
        self.__dict__.update(pickle.loads(st["rest"]))
