"""DualRecChannel: DualRec's creator-side matching on upload, its result cache as a retrieval channel and its part
in the final ranking; the UAC's activity model and the diagnostics are refreshed at the end of each day
(:mod:`serving.channels.dualrec` describes the whole)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from simulator.core.config import DualRecSpec
from simulator.core.schema import SECONDS_PER_DAY
from serving.channels.base import Channel, OracleCandidates, RequestContext, Retrieval
from serving.channels.dualrec.creator_side import CreatorSide, CreatorSideState
from serving.channels.dualrec.diagnostics import MatchingDiagnostics
from serving.channels.dualrec.scoring import budget_mask, combined_scores
from serving.channels.dualrec.uac import ActivityPredictor, AvailableUserStore, MatchingCache
from serving.features import FeatureStore, grow_rows
from trainers.checkpoint import capture, nested_state, restore
from trainers.models.creator_ranker import CreatorRankerConfig
from trainers.models.two_tower import TwoTowerConfig

NO_STORE_CAP = 256  # slots per user when the store is ablated (M_u is then bounded only by this)


@dataclass
class DualRecChannelState:
    """What a :class:`DualRecChannel` checkpoints."""

    creator_side: CreatorSideState = nested_state()
    store: AvailableUserStore
    shadow: AvailableUserStore
    activity: ActivityPredictor
    visits: np.ndarray
    inter: np.ndarray
    today: np.ndarray
    inter_at_day_start: np.ndarray
    first_day: int | None
    clock: int
    diagnostics: MatchingDiagnostics


class DualRecChannel(Channel):
    """The DualRec arm's creator-side pipeline, its result cache and its part in the user-side ranking."""

    name = "dualrec"
    NOT_SAVED = ("spec", "slate_size", "ttl")

    def __init__(self, spec: DualRecSpec, tt_cfg: TwoTowerConfig, rk_cfg: CreatorRankerConfig, slate_size: int,
                 m: int, ef_construction: int, ef: int, seed: int):
        torch.manual_seed(seed)
        self.spec = spec
        self.slate_size = slate_size
        self.ttl = int(spec.ttl_hours * 3600)
        self.creator_side = CreatorSide(spec, tt_cfg, rk_cfg, m=m, ef_construction=ef_construction, ef=ef, seed=seed)
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
        self.diagnostics = MatchingDiagnostics(self.ttl)

    # ------------------------------------------------------------------ creator side: on upload
    def on_upload(self, policy, rows: np.ndarray, oracle: OracleCandidates | None) -> dict[int, list[int]]:
        """Content neighbours of the new items, then creator-side matching (in upload order) of those whose match
        would not already have expired; returns the matched users of each item."""
        s = policy.store
        self.creator_side.add_items(s, rows)
        self.diagnostics.grow(s.n_items)
        if len(rows) == 0:
            return {}
        upload_ts = s.item_upload_ts[rows]
        self.clock = max(self.clock, int(upload_ts.max()))
        order = np.argsort(upload_ts, kind="stable")
        to_match = order[upload_ts[order] + self.ttl > self.clock]  # positions in rows
        self.diagnostics.day_new.append(rows[to_match])
        if len(to_match) == 0 or len(self.store.active) == 0:  # no activity model before the first day ends
            return {}
        return self.match(s, rows[to_match], self.scored_candidates(s, rows, to_match, oracle))

    def scored_candidates(self, store: FeatureStore, rows: np.ndarray, to_match: np.ndarray, oracle: OracleCandidates | None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Candidate users of the items ``rows[to_match]``: ((m, C) user rows, -1 padded; (m, C) scores to select by
        (eq. 10); (m, C) scores kept with the matches for eq. 14; (m, C) the retrieval that found each user)."""
        items = rows[to_match]
        cand, source = self.creator_side.candidates(store, items)
        if cand.shape[1] == 0:
            return cand, np.zeros(cand.shape), np.zeros(cand.shape), source
        select, plain = self.creator_side.rank(store, items, cand)
        return cand, select, plain, source

    def match(self, store: FeatureStore, rows: np.ndarray,
              scored: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> dict[int, list[int]]:
        """UAC (eq. 12-13) for each item in turn over its ranked candidates, with the two shadow matchings."""
        sp = self.spec
        cand, select, plain, source = scored
        targets: dict[int, list[int]] = {}
        if cand.shape[1] == 0:
            return targets
        order = np.argsort(-select, axis=1, kind="stable")
        ranked = np.take_along_axis(np.where(np.isfinite(select), cand, -1), order, 1)
        ranked_plain = np.take_along_axis(plain, order, 1)
        ranked_source = np.take_along_axis(source, order, 1)
        for j, r in enumerate(rows):
            now = int(store.item_upload_ts[r])
            c, sc, src = ranked[j], ranked_plain[j], ranked_source[j]
            ok = c >= 0
            c, sc, src = c[ok], sc[ok], src[ok]
            chosen = self.store.match(int(r), c, now, sp.targets, use_activity=sp.use_activity and sp.use_store, scores=sc,
                                      sources=src)
            shadow = self.shadow.match(int(r), c, now, sp.targets, use_activity=False)
            top = c[c < len(self.store.active)][: sp.targets]
            for kind, users in (("actual", chosen), ("no_activity", shadow), ("no_store", top)):
                self.diagnostics.record_match(kind, users, now, r)
            targets[int(store.items.ids[r])] = store.users.ids[chosen].tolist()
        return targets

    # ------------------------------------------------------------------ user side
    def on_requests(self, policy, ctx: RequestContext) -> None:
        """Records the visits for the activity model and the diagnostics; moves the clock."""
        n_users = len(policy.store.users)
        self.today = grow_rows(self.today, n_users)
        self.today[ctx.user_rows] = 1
        if ctx.n:
            self.clock = max(self.clock, int(ctx.ts.max()))
            self.diagnostics.record_requests(ctx.user_rows, ctx.ts)
        self.store.cache.grow(n_users)

    def retrieve(self, ctx: RequestContext) -> Retrieval:
        """M_u of each requesting user (unexpired matches, with their creator-side scores)."""
        items, scores = self.store.cache.entries(ctx.user_rows, ctx.ts)
        return Retrieval(items, scores)

    def rerank(self, policy, ctx: RequestContext, cand: np.ndarray, chan: np.ndarray, valid: np.ndarray,
               score: np.ndarray, retrieval: Retrieval) -> tuple[np.ndarray, np.ndarray]:
        """Eq. 14 on the matched items' scores (``retrieval.scores``), then the exposure budget."""
        me = policy.channel_names.index(self.name)
        mine = chan == me
        s_item = np.zeros(score.shape, np.float32)
        if ctx.n and mine.any():
            s_item[:, retrieval.columns] = retrieval.scores  # the channel's block, in retrieve order
        from_cache = mine & valid
        score = combined_scores(score, s_item, from_cache, self.spec.alpha)
        if ctx.own is None:
            valid = valid & budget_mask(np.where(valid, score, -np.inf), from_cache, self.slate_size, self.spec.budget)
        elif ctx.n:  # one shard's rows: the budget is the whole batch's (the same scores, on every shard)
            allowed = np.ones(valid.shape, bool)
            allowed[:, retrieval.columns] = self._batch_budget(policy, ctx.batch)[ctx.own]
            valid = valid & allowed
        # user-side retrieval coverage of today's new items (Fig. 8), marked in apply_effects
        two_tower = (valid & (chan == policy.channel_names.index("two_tower")) if "two_tower" in policy.channel_names
                     else np.zeros(valid.shape, bool))
        ctx.effects[self.name] = (np.unique(cand[valid & ~mine]), np.unique(cand[two_tower]))
        return score, valid

    def _batch_budget(self, policy, batch: RequestContext) -> np.ndarray:
        """(n, cap) which of the whole batch's M_u candidates the exposure budget lets compete, exactly as
        :meth:`rerank` decides on the whole batch: M_u is the first block of candidates, so its filtering and
        scores do not depend on the other channels'."""
        items, s_item = self.store.cache.entries(batch.user_rows, batch.ts)
        score, valid = policy.candidate_scores(items, batch)
        score = combined_scores(score, s_item, valid, self.spec.alpha)
        return budget_mask(np.where(valid, score, -np.inf), valid, self.slate_size, self.spec.budget)

    def apply_effects(self, policy, parts: list) -> None:
        """Marks the items some shard's user-side channels (column 0) and two-tower (column 1) retrieved."""
        user_retrieved = self.diagnostics.user_retrieved  # (grown with the store in on_upload)
        for user_side, two_tower in parts:
            user_retrieved[user_side, 0] = True
            user_retrieved[two_tower, 1] = True

    def on_served(self, policy, ctx: RequestContext, rows: np.ndarray, chan: np.ndarray, valid: np.ndarray) -> None:
        """Matched items shown to their user leave M_u; counts the budget's use."""
        me = policy.channel_names.index(self.name)
        served = valid & (chan == me)
        r, c = np.nonzero(served)
        sources = self.store.cache.remove(ctx.user_rows[r], rows[r, c]) if len(r) else np.zeros(0, np.int8)
        self.diagnostics.record_served(int(valid.sum()), len(r), sources)

    def log_features(self, policy, ctx: RequestContext, rows: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """The ranker's extra item features at serve time, for training (``dr_recent``, ``dr_sim``)."""
        n, S = rows.shape
        if rows.size == 0:
            return {"dr_recent": np.full((n, S, self.spec.recent_users), -1, np.int64),
                    "dr_sim": np.zeros((n, S, 2), np.float32)}
        flat = rows.reshape(-1)
        return {"dr_recent": self.creator_side.recent_users(policy.store, flat).reshape(n, S, -1),
                "dr_sim": self.creator_side.sim_dense(policy.store, flat).reshape(n, S, -1)}

    # ------------------------------------------------------------------ weights and days
    def on_weights(self, policy, weights: dict, now: int | None) -> None:
        self.creator_side.load_weights(weights[self.name])

    def on_day_end(self, policy, ts: int) -> dict[str, float]:
        """The day's visits join the history; the activity model predicts tomorrow's visitors (a_u); the creator-side
        two-tower and its user index are refreshed; the day's diagnostics."""
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
        self.creator_side.rebuild_user_index(s)
        # 5. diagnostics of the day
        out.update(self.diagnostics.close_day(ts, U))
        self.today[:] = 0
        return {f"dualrec.{k}": v for k, v in out.items()}

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> DualRecChannelState:
        return capture(self, DualRecChannelState)

    def load_state(self, state: DualRecChannelState) -> None:
        restore(self, state)
