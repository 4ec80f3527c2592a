"""DualRec (papers/dualrec_creator_side.txt, SPEC section 5): creator-side matching on upload, UAC and the boosted
combined ranking, as one channel of an arm's stack.

On every upload batch (``on_upload``), for each new item:
  retrieval into candidate users: (a) the creator-side two-tower, its user ANN index queried with the
  item's vector; (b, v3+) item similarity: the recent likers of the items most similar in content;
  (c, v4+) user similarity: users near (in the same user index) the creator's recent audience;
  ranking: the creator-side multi-task ranker, integrated as s = sum_k w_k p_k (/ b_u from v5, eq. 10);
  UAC: the top T users in the available set A = {u : a_u = 1 and |M_u| < N} get the item in their
  matching set M_u (eq. 12-13), kept in a result cache with an expiry. The upload returns them.
When a user visits (``retrieve``), M_u is a retrieval channel; ``rerank`` gives its items
s' = s + alpha * s_item (eq. 14) and lets at most ``budget`` of the batch's slots go to them.
At the end of each simulated day (``on_day_end``) the activity model is refitted on the arm's own
visit history, the user index is rebuilt with the day's creator-side two-tower, and the UAC
diagnostics are computed: hit rate with the activity model and without it (a shadow matching
from the same ranked lists), the |M_u| histogram with and without the store, and the new-item
coverage of creator-side and user-side retrieval.

Ray-free: the arm's Serve deployment calls these hooks through :class:`serving.stack.ArmPolicy`.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import torch

from simulator.core.config import DualRecSpec
from simulator.core.schema import RESPONSE_TYPES, SECONDS_PER_DAY
from serving.dualrec import budget_mask, combined_scores, integrate_scores
from serving.features import grow_rows
from serving.index import ANNIndex
from serving.stack import RequestContext
from serving.uac import ActivityPredictor, AvailableUserStore, MatchingCache
from trainers.dualrec_task import split_weights
from trainers.models.creator_ranker import CreatorRanker, CreatorRankerConfig
from trainers.models.two_tower import TwoTower, TwoTowerConfig

CONTENT_CAT_DIM = 8
CONTENT_NEIGHBOURS = 50  # content neighbours fetched per item before keeping those with recent likers
NO_STORE_CAP = 256  # slots per user when the store is ablated (M_u is then bounded only by this)
MSIZE_BINS = (0, 1, 2, 3, 6, 11, 21, 51)  # |M_u| histogram bins: 0, 1, 2, 3-5, 6-10, 11-20, 21-50, 51+
ITEM_CHUNK = 64


def _dedupe_rows(c: np.ndarray) -> np.ndarray:
    """(m, C) ids with -1 padding -> each row's distinct ids first (first occurrence order kept), -1 after."""
    if c.size == 0:
        return c
    order = np.argsort(c, axis=1, kind="stable")
    sc = np.take_along_axis(c, order, 1)
    dup = np.zeros_like(sc, dtype=bool)
    dup[:, 1:] = sc[:, 1:] == sc[:, :-1]
    keep = np.zeros_like(dup)
    np.put_along_axis(keep, order, ~dup, 1)
    keep &= c >= 0
    pos = np.argsort(~keep, axis=1, kind="stable")
    return np.where(np.take_along_axis(keep, pos, 1), np.take_along_axis(c, pos, 1), -1)


def _visited_within(req_keys: np.ndarray, user_rows: np.ndarray, t_from: np.ndarray, ttl: int) -> np.ndarray:
    """Did each (user row, t) have a request in (t, t + ttl]? ``req_keys`` sorted user_row << 40 | ts."""
    if len(req_keys) == 0:
        return np.zeros(len(user_rows), bool)
    lo = (user_rows.astype(np.int64) << 40) | (t_from + 1)
    pos = np.searchsorted(req_keys, lo, side="left")
    nxt = req_keys[np.minimum(pos, len(req_keys) - 1)]
    return (pos < len(req_keys)) & (nxt <= ((user_rows.astype(np.int64) << 40) | (t_from + ttl)))


class DualRecChannel:
    """The DualRec arm's creator-side pipeline, its result cache and its part in the user-side ranking."""

    name = "dualrec"

    def __init__(self, spec: DualRecSpec, tt_cfg: TwoTowerConfig, rk_cfg: CreatorRankerConfig, slate_size: int,
                 m: int, ef_construction: int, ef: int, seed: int):
        torch.manual_seed(seed)
        self.spec = spec
        self.slate_size = slate_size
        self.ttl = int(spec.ttl_hours * 3600)
        self.two_tower = TwoTower(tt_cfg).eval()  # creator-side; refreshed daily with the user index
        self.ranker = CreatorRanker(rk_cfg).eval()  # refreshed on every weight push
        self.weights = np.array([spec.rank_weights.get(t, 0.0) for t in RESPONSE_TYPES], np.float32)
        self._pending_tt: dict | None = None
        self.user_index = ANNIndex(tt_cfg.dim, m=m, ef_construction=ef_construction, ef=ef, seed=seed)
        rng = np.random.default_rng(seed)
        self.cat_vecs = rng.standard_normal((1024, CONTENT_CAT_DIM)).astype(np.float32)
        self.content_dim = CONTENT_CAT_DIM + tt_cfg.n_item_dense
        self.content_index = ANNIndex(self.content_dim, m=m, ef_construction=ef_construction, ef=ef, seed=seed + 1)
        self.sim_items = np.full((0, spec.item_sim_items), -1, np.int64)  # item row -> content-similar item rows
        cap = spec.cap if spec.use_store else NO_STORE_CAP
        self.store = AvailableUserStore(MatchingCache(0, cap, self.ttl))
        self.shadow = AvailableUserStore(MatchingCache(0, spec.cap, self.ttl))  # the same store without a_u
        self.activity = ActivityPredictor(spec.activity_threshold, seed=seed % (2**31))
        # the arm's own visit history (user rows x days) and today's counters
        self.visits = np.zeros((0, 0), np.uint8)
        self.inter = np.zeros((0, 0), np.float32)
        self.today = np.zeros(0, np.uint8)
        self.inter_at_day_start = np.zeros(0, np.float64)
        self.first_day: int | None = None
        self.clock = 0  # latest time seen (upload or request)
        self.req_keys: list[np.ndarray] = []  # user_row << 40 | ts of requests, for hit rates
        # matches to evaluate, (3, m): user row, match time, item row; "no_activity" and "no_store" are shadows
        # computed from the same ranked lists (what the store would have done without a_u, or without itself)
        self.matches: dict[str, list[np.ndarray]] = {"actual": [], "no_activity": [], "no_store": []}
        self.day_new: list[np.ndarray] = []  # item rows uploaded today
        self.user_retrieved = np.zeros((0, 2), bool)  # item rows reached today by (any user-side channel, the two-tower)
        self.day_expo = np.zeros(2, np.int64)  # (all exposures, exposures of matched items) today

    # ------------------------------------------------------------------ content similarity
    def content_vectors(self, policy, rows: np.ndarray) -> np.ndarray:
        s = policy.store
        cat = self.cat_vecs[s.item_category[rows] % len(self.cat_vecs)]
        cat = cat / np.linalg.norm(cat, axis=1, keepdims=True)
        dense = np.tanh(s.item_dense[rows])
        v = np.concatenate([cat, 0.5 * dense], 1)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def sim_dense(self, policy, rows: np.ndarray) -> np.ndarray:
        """(n, 2) extra item feature: the content-similar items' smoothed interaction rate and log exposures."""
        s = policy.store
        sim = self.sim_items[rows]  # (n, K)
        ok = sim >= 0
        r = np.maximum(sim, 0)
        expo = s.item_expo[r].astype(np.float32)
        rate = (s.item_inter[r].astype(np.float32) + 0.5) / (expo + 10.0)
        n = np.maximum(ok.sum(1), 1)
        return np.stack([(rate * ok).sum(1) / n, (np.log1p(expo) * ok).sum(1) / n], 1).astype(np.float32)

    def recent_users(self, policy, rows: np.ndarray) -> np.ndarray:
        """(n, R) extra item feature: the item's last R interacted users (ids, -1 padded)."""
        seq, length = policy.store.sequences(rows)
        R = self.spec.recent_users
        idx = np.maximum(length[:, None] - R, 0) + np.arange(R)[None, :]
        out = np.take_along_axis(seq, np.minimum(idx, seq.shape[1] - 1), 1)
        return np.where(np.arange(R)[None, :] < np.minimum(length, R)[:, None], out, -1)

    # ------------------------------------------------------------------ model vectors
    @torch.no_grad()
    def tt_user_vectors(self, policy, user_rows: np.ndarray) -> np.ndarray:
        s = policy.store
        return self.two_tower.user(torch.from_numpy(s.users.ids[user_rows]),
                                   torch.from_numpy(s.user_dense(user_rows))).numpy()

    @torch.no_grad()
    def tt_item_vectors(self, policy, rows: np.ndarray) -> np.ndarray:
        s = policy.store
        return self.two_tower.item(torch.from_numpy(s.items.ids[rows]), torch.from_numpy(s.item_creator[rows]),
                                   torch.from_numpy(s.item_category[rows]), torch.from_numpy(s.item_dense[rows])).numpy()

    @torch.no_grad()
    def rank(self, policy, rows: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Creator-side scores of each item's candidate users: (eq. 10 score for selection, eq. 9 score for eq. 14)."""
        s = policy.store
        m, C = cand.shape
        valid = cand >= 0
        users, inv = np.unique(np.where(valid, cand, 0), return_inverse=True)
        inv = inv.reshape(m, C)
        uvec = self.ranker.user(torch.from_numpy(s.users.ids[users]), torch.from_numpy(s.user_dense(users)))  # (U', K, d)
        batch = {
            "item_id": torch.from_numpy(s.items.ids[rows]), "creator_id": torch.from_numpy(s.item_creator[rows]),
            "category": torch.from_numpy(s.item_category[rows]), "item_dense": torch.from_numpy(s.item_dense[rows]),
            "recent_users": torch.from_numpy(self.recent_users(policy, rows)),
            "sim_dense": torch.from_numpy(self.sim_dense(policy, rows)),
        }
        ivec = self.ranker.item(batch)  # (m, K, d)
        plain = np.full((m, C), -np.inf)
        for a in range(0, m, ITEM_CHUNK):
            b = slice(a, a + ITEM_CHUNK)
            logits = self.ranker.logits((uvec[torch.from_numpy(inv[b])] * ivec[b, None]).sum(-1))  # (mb, C, K)
            p = torch.sigmoid(logits).numpy().reshape(-1, logits.shape[-1])
            plain[b] = integrate_scores(p, self.weights).reshape(-1, C)
        plain = np.where(valid, plain, -np.inf)
        if not self.spec.user_bias:
            return plain, plain
        b_u = s.user_dense(np.where(valid, cand, 0).reshape(-1))[:, 2].reshape(m, C)  # the user's interaction rate
        return np.where(valid, plain / np.maximum(b_u, 1e-6), -np.inf), plain

    # ------------------------------------------------------------------ creator side: on upload
    def candidates(self, policy, rows: np.ndarray) -> np.ndarray:
        """(m, C) candidate user rows per item from the enabled retrievals, deduplicated, -1 padded."""
        s = policy.store
        m = len(rows)
        parts = []
        if len(self.user_index):
            labels, _ = self.user_index.query(self.tt_item_vectors(policy, rows), self.spec.two_tower_k)
            parts.append(labels)
        if self.spec.item_sim:
            sim = self.sim_items[rows]  # (m, K)
            seq, _ = s.sequences(np.maximum(sim, 0).reshape(-1))  # (m*K, L) user ids
            seq = np.where((sim >= 0).reshape(-1, 1), seq, -1).reshape(m, -1)
            user_rows = np.full(seq.shape, -1, np.int64)
            user_rows[seq >= 0] = s.users.rows(seq[seq >= 0])
            parts.append(user_rows)
        if self.spec.user_sim and len(self.user_index):
            seeds = self.creator_audience(policy, rows)  # (m, n_seed) user rows
            ok = seeds >= 0
            vec = self.tt_user_vectors(policy, np.maximum(seeds, 0).reshape(-1))
            labels, _ = self.user_index.query(vec, self.spec.user_sim_k)  # (m*n_seed, k)
            labels = np.where(ok.reshape(-1, 1), labels, -1).reshape(m, -1)
            parts.append(labels)
        if not parts:
            return np.full((m, 0), -1, np.int64)
        return _dedupe_rows(np.concatenate(parts, 1))

    def creator_audience(self, policy, rows: np.ndarray) -> np.ndarray:
        """(m, user_sim_seeds) user rows: the most recent distinct likers of each item's creator's earlier items."""
        s = policy.store
        n_seed = self.spec.user_sim_seeds
        out = np.full((len(rows), n_seed), -1, np.int64)
        creators = s.item_creator[rows]
        mine = np.flatnonzero(np.isin(s.item_creator[: s.n_items], creators) & (s.item_seq_count[: s.n_items] > 0))
        if len(mine) == 0:
            return out
        seq, _, ts = s.sequences(mine, with_ts=True)
        c = np.repeat(s.item_creator[mine], seq.shape[1])
        u, t = seq.reshape(-1), ts.reshape(-1)
        keep = u >= 0
        c, u, t = c[keep], u[keep], t[keep]
        order = np.lexsort((-t, c))  # by creator, most recent first
        c, u = c[order], u[order]
        for j, cr in enumerate(creators):
            a, b = np.searchsorted(c, cr), np.searchsorted(c, cr, side="right")
            grp = u[a:b]
            _, first = np.unique(grp, return_index=True)
            seeds = grp[np.sort(first)][:n_seed]
            out[j, : len(seeds)] = s.users.rows(seeds)
        return out

    def on_upload(self, policy, rows: np.ndarray) -> dict[int, list[int]]:
        s = policy.store
        self.sim_items = grow_rows(self.sim_items, s.n_items, fill=-1)
        self.user_retrieved = grow_rows(self.user_retrieved, s.n_items)
        if len(rows) == 0:
            return {}
        up = s.item_upload_ts[rows]
        self.clock = max(self.clock, int(up.max()))
        # content similarity: neighbours among earlier items, then the new items join the content index
        cvec = self.content_vectors(policy, rows)
        labels, _ = self.content_index.query(cvec, CONTENT_NEIGHBOURS)
        has_likers = np.where(labels >= 0, s.item_seq_count[np.maximum(labels, 0)] > 0, False)
        order = np.argsort(~has_likers, axis=1, kind="stable")[:, : self.spec.item_sim_items]  # likers first, by similarity
        self.sim_items[rows] = np.take_along_axis(np.where(has_likers, labels, -1), order, 1)
        self.content_index.add(rows, cvec)
        # creator-side matching (in upload order) for items whose match would not already have expired
        o = np.argsort(up, kind="stable")
        rows = rows[o][up[o] + self.ttl > self.clock]
        self.day_new.append(rows)
        if len(rows) == 0 or len(self.store.active) == 0:  # no activity model before the first day ends
            return {}
        return self.match(policy, rows)

    def match(self, policy, rows: np.ndarray) -> dict[int, list[int]]:
        s = policy.store
        sp = self.spec
        cand = self.candidates(policy, rows)
        targets: dict[int, list[int]] = {}
        if cand.shape[1] == 0:
            return targets
        select, plain = self.rank(policy, rows, cand)
        order = np.argsort(-select, axis=1, kind="stable")
        ranked = np.take_along_axis(np.where(np.isfinite(select), cand, -1), order, 1)
        ranked_plain = np.take_along_axis(plain, order, 1)
        for j, r in enumerate(rows):
            now = int(s.item_upload_ts[r])
            c, sc = ranked[j], ranked_plain[j]
            ok = c >= 0
            c, sc = c[ok], sc[ok]
            chosen = self.store.match(int(r), c, now, sp.targets, use_activity=sp.use_activity and sp.use_store, scores=sc)
            shadow = self.shadow.match(int(r), c, now, sp.targets, use_activity=False)
            top = c[c < len(self.store.active)][: sp.targets]
            for kind, users in (("actual", chosen), ("no_activity", shadow), ("no_store", top)):
                self.matches[kind].append(np.stack([users, np.full(len(users), now, np.int64), np.full(len(users), r)]))
            targets[int(s.items.ids[r])] = s.users.ids[chosen].tolist()
        return targets

    # ------------------------------------------------------------------ user side
    def retrieve(self, ctx: RequestContext) -> np.ndarray:
        """M_u of each requesting user (unexpired matches); also records the visit for the activity model."""
        s = ctx.policy.store
        n_users = len(s.users)
        self.today = grow_rows(self.today, n_users)
        self.today[ctx.user_rows] = 1
        if ctx.n:
            self.clock = max(self.clock, int(ctx.ts.max()))
            self.req_keys.append((ctx.user_rows.astype(np.int64) << 40) | ctx.ts)
        self.store.cache.grow(n_users)
        items, scores = self.store.cache.entries(ctx.user_rows, ctx.ts)
        self._last_scores = scores
        return items

    def rerank(self, policy, ctx: RequestContext, cand: np.ndarray, chan: np.ndarray, valid: np.ndarray,
               score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eq. 14 on the matched items' scores, then the exposure budget."""
        me = policy.channel_names.index(self.name)
        mine = chan == me
        s_item = np.zeros(score.shape, np.float32)
        if ctx.n and mine.any():
            cols = np.flatnonzero(mine[0])  # the channel's block, in retrieve order
            s_item[:, cols] = self._last_scores
        from_cache = mine & valid
        score = combined_scores(score, s_item, from_cache, self.spec.alpha)
        valid = valid & budget_mask(np.where(valid, score, -np.inf), from_cache, self.slate_size, self.spec.budget)
        # user-side retrieval coverage of today's new items (Fig. 8)
        other = valid & ~mine
        self.user_retrieved[cand[other], 0] = True  # (grown with the store in on_upload)
        if "two_tower" in policy.channel_names:
            self.user_retrieved[cand[valid & (chan == policy.channel_names.index("two_tower"))], 1] = True
        return score, valid

    def on_served(self, policy, ctx: RequestContext, rows: np.ndarray, chan: np.ndarray, valid: np.ndarray) -> None:
        """Matched items shown to their user leave M_u; counts the budget's use."""
        me = policy.channel_names.index(self.name)
        served = valid & (chan == me)
        r, c = np.nonzero(served)
        if len(r):
            self.store.cache.remove(ctx.user_rows[r], rows[r, c])
        self.day_expo += [int(valid.sum()), len(r)]

    def log_features(self, policy, ctx: RequestContext, rows: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """The ranker's extra item features at serve time, for training (``dr_recent``, ``dr_sim``)."""
        n, S = rows.shape
        if rows.size == 0:
            return {"dr_recent": np.full((n, S, self.spec.recent_users), -1, np.int64),
                    "dr_sim": np.zeros((n, S, 2), np.float32)}
        flat = rows.reshape(-1)
        return {"dr_recent": self.recent_users(policy, flat).reshape(n, S, -1),
                "dr_sim": self.sim_dense(policy, flat).reshape(n, S, -1)}

    # ------------------------------------------------------------------ weights and days
    def on_weights(self, policy, weights: dict, now: int | None) -> None:
        tt, rk = split_weights(weights[self.name])
        self.ranker.load_state_dict(rk)
        self._pending_tt = tt  # the two-tower and its user index move together, once a day

    def on_day_end(self, policy, ts: int) -> dict[str, float]:
        s = policy.store
        U = len(s.users)
        day = int(ts // SECONDS_PER_DAY) - 1
        if self.first_day is None:
            self.first_day = day
        d = day - self.first_day
        # 1. today's visits and interactions join the history
        self.today = grow_rows(self.today, U)
        self.inter_at_day_start = grow_rows(self.inter_at_day_start, U)
        visits = np.zeros((U, d + 1), np.uint8)
        inter = np.zeros((U, d + 1), np.float32)
        visits[: len(self.visits), : self.visits.shape[1]] = self.visits
        inter[: len(self.inter), : self.inter.shape[1]] = self.inter
        visits[:, d] = self.today[:U]
        inter[:, d] = s.user_inter[:U] - self.inter_at_day_start[:U]
        self.visits, self.inter = visits, inter
        self.inter_at_day_start[:U] = s.user_inter[:U]
        out: dict[str, float] = {}
        # 2. yesterday's a_u against today's visits
        if len(self.store.active):
            a = self.store.active[: U]
            out["activity_precision"] = float(visits[: len(a), d][a].mean()) if a.any() else float("nan")
            out["activity_recall"] = float(a[visits[: len(a), d] == 1].mean()) if visits[: len(a), d].any() else float("nan")
        # 3. activity model: refit on the whole history, predict tomorrow
        weekday0 = (self.first_day + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
        if d >= 1:
            self.activity.fit(visits, inter, d, weekday0)
            active = self.activity.active(visits, inter, d, weekday0)
        else:  # one observed day: "visits tomorrow" = "visited today"
            active = visits[:, d] == 1
        self.store.set_active(active)
        self.shadow.set_active(active)
        out["active_share"] = float(active.mean()) if U else 0.0
        # 4. the creator-side two-tower and its user index
        if self._pending_tt is not None:
            self.two_tower.load_state_dict(self._pending_tt)
            self._pending_tt = None
        users = np.arange(U)
        self.user_index.build(users, self.tt_user_vectors(policy, users) if U else np.zeros((0, self.user_index.dim)))
        # 5. diagnostics of the day
        out.update(self._diagnostics(policy, ts))
        self.today[:] = 0
        self.day_new = []
        self.user_retrieved[:] = False
        self.day_expo[:] = 0
        return {f"dualrec.{k}": v for k, v in out.items()}

    def _diagnostics(self, policy, ts: int) -> dict[str, float]:
        """Hit rates of matches whose window closed, |M_u| histograms of the day's matches, coverage, budget use."""
        U = len(policy.store.users)
        out: dict[str, float] = {}
        keys = np.sort(np.concatenate(self.req_keys)) if self.req_keys else np.zeros(0, np.int64)
        new = np.concatenate(self.day_new) if self.day_new else np.zeros(0, np.int64)
        if len(new):
            out["new_items"] = float(len(new))
            out["coverage.user_side"] = float(self.user_retrieved[new, 0].mean())
            out["coverage.user_side.two_tower"] = float(self.user_retrieved[new, 1].mean())
        for kind, parts in self.matches.items():
            m = np.concatenate(parts, 1) if parts else np.zeros((3, 0), np.int64)
            today = m[:, m[1] > ts - SECONDS_PER_DAY]
            if len(new) and kind != "no_activity":
                out[f"coverage.creator_side.{kind}"] = float(np.isin(new, today[2]).mean())
            if kind != "no_activity":  # |M_u| over the arm's known users, from the day's matches
                size = np.bincount(today[0], minlength=U)[:U]
                edges = list(MSIZE_BINS) + [max(MSIZE_BINS[-1] + 1, int(size.max(initial=0)) + 1)]
                for lo, count in zip(MSIZE_BINS, np.histogram(size, bins=edges)[0]):
                    out[f"msize.{kind}.bin{lo}"] = float(count)
                out[f"msize.{kind}.max"] = float(size.max(initial=0))
                out[f"msize.{kind}.share_zero"] = float((size == 0).mean()) if U else float("nan")
            closed = m[1] + self.ttl <= ts
            if closed.any():
                out[f"hit_rate.{kind}"] = float(_visited_within(keys, m[0, closed], m[1, closed], self.ttl).mean())
                out[f"hit_pairs.{kind}"] = float(closed.sum())
            self.matches[kind] = [m[:, ~closed]]
        # requests still needed: those that can answer an open match
        self.req_keys = [keys[(keys & ((1 << 40) - 1)) > ts - self.ttl]] if len(keys) else []
        out["expo_share"] = float(self.day_expo[1] / max(self.day_expo[0], 1))
        return out

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> bytes:
        buf = io.BytesIO()
        st = {k: v for k, v in self.__dict__.items()
              if k not in ("two_tower", "ranker", "user_index", "content_index", "spec")}
        torch.save({"tt": self.two_tower.state_dict(), "rk": self.ranker.state_dict(),
                    "user_index": self.user_index.to_bytes(), "content_index": self.content_index.to_bytes(),
                    "rest": pickle.dumps(st)}, buf)
        return buf.getvalue()

    def load_state(self, data: bytes) -> None:
        st = torch.load(io.BytesIO(data), weights_only=False)
        self.two_tower.load_state_dict(st["tt"])
        self.ranker.load_state_dict(st["rk"])
        self.user_index.from_bytes(st["user_index"])
        self.content_index.from_bytes(st["content_index"])
        self.__dict__.update(pickle.loads(st["rest"]))
