"""ArmPolicy: one arm's recommender stack, retrieval channels -> multi-task ranking -> boosted final ranking -> slate.

A plain class (no Ray): unit tests call it directly; :mod:`serving.app` wraps it in a Ray Serve
deployment. Every method works on a whole batch of requests or events as numpy arrays.

Seams for the cold-start strategies: each :class:`serving.channels.base.Channel` adds candidates
(Next-User, IHM, the DualRec result cache) and takes part in the arm's other work through the hooks
the base class declares: uploads (creator-side matching), feedback, weight pushes, the final ranking
(DualRec's s' = s + alpha * s_item and its exposure budget), the served slate, feature logging, the
end of a simulated day and checkpoints. ``ArmPolicy`` calls every hook on every channel, in order.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from simulator.core.config import StackConfig
from simulator.core.schema import RESPONSE_TYPES
from serving.channels.base import Channel, OracleCandidates, RequestContext, Retrieval
from serving.features import FeatureStore, FeatureStoreState
from serving.index import ANNIndex
from serving.row_invariant import row_invariant
from trainers.checkpoint import capture, index_bytes, named_states, nested_state, restore, torch_state
from trainers.models.ranker import Ranker, RankerConfig
from trainers.models.two_tower import TwoTower, TwoTowerConfig
from trainers.weights import state_dict_of

logger = logging.getLogger(__name__)

SCORE_CHUNK = 65_536


@dataclass
class Slates:
    """What ``recommend`` returns: the slates and, per slot, the features the ranker used (feature logging)."""

    item_ids: np.ndarray  # (n, S) int64, -1 where fewer than S candidates survived
    channel: np.ndarray  # (n, S) int8 index into channel_names
    channel_names: list[str]
    creator_id: np.ndarray  # (n, S)
    category: np.ndarray  # (n, S)
    upload_ts: np.ndarray  # (n, S)
    user_dense: np.ndarray  # (n, Fu)
    item_dense: np.ndarray  # (n, S, Fi)
    pair_dense: np.ndarray  # (n, S, Fp)
    score: np.ndarray  # (n, S) final combined score
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # channel-logged per-slot features (n, S, ...)

    def rows(self, a: int, b: int) -> "Slates":
        """Requests a..b of this batch (used to split merged HTTP batches)."""
        cut = lambda x: x[a:b]  # noqa: E731
        return Slates(item_ids=cut(self.item_ids), channel=cut(self.channel), channel_names=self.channel_names,
                      creator_id=cut(self.creator_id), category=cut(self.category), upload_ts=cut(self.upload_ts),
                      user_dense=cut(self.user_dense), item_dense=cut(self.item_dense), pair_dense=cut(self.pair_dense),
                      score=cut(self.score), extra={k: cut(v) for k, v in self.extra.items()})


@dataclass
class ServedPart:
    """One shard's part of a batch (:meth:`ArmPolicy.serve_part`): the slates of its requests, what its channels
    learnt from them (``RequestContext.effects``) and how many non-finite scores it dropped."""

    slates: Slates
    effects: dict
    nonfinite: int = 0


@dataclass
class ArmPolicyState:
    """What an :class:`ArmPolicy` checkpoints: the feature store, the base models, the item index, the weights
    version and the state record of each channel that has one (by channel name)."""

    store: FeatureStoreState = nested_state()
    two_tower: dict = torch_state()
    ranker: dict = torch_state()
    index: bytes = index_bytes()
    channels: dict = named_states()
    weights_version: int = 0
    weights_ts: int | None = None
    nonfinite_scores: int = 0


@dataclass
class ArmPolicy:
    """The serving side of one arm. ``channels`` are constructed by the arm registry (:mod:`serving.arms`); each
    hook of :class:`serving.channels.base.Channel` is called on every channel, in list order."""

    name: str
    stack: StackConfig
    slate_size: int
    tt_cfg: TwoTowerConfig
    rk_cfg: RankerConfig
    seed: int
    channels: list[Channel] = field(default_factory=list)
    model_seed: int | None = None  # initial base-model weights (shared by every arm when the base models are); None: seed

    NOT_SAVED = ("name", "stack", "slate_size", "tt_cfg", "rk_cfg", "seed", "model_seed", "_warned_nonfinite",
                 "task_weights", "channel_names", "last_targets")

    def __post_init__(self):
        torch.manual_seed(self.seed if self.model_seed is None else self.model_seed)
        self.store = FeatureStore(n_item_dense=self.tt_cfg.n_item_dense)
        self.nonfinite_scores = 0  # ranker predictions that were not finite (dropped, see _score)
        self._warned_nonfinite = False
        self.two_tower = TwoTower(self.tt_cfg).eval()
        self.ranker = Ranker(self.rk_cfg).eval()
        self.index = ANNIndex(self.tt_cfg.dim, m=self.stack.hnsw_m, ef_construction=self.stack.hnsw_ef_construction,
                              ef=self.stack.hnsw_ef, seed=self.seed)
        self.weights_version = 0
        self.weights_ts: int | None = None
        w = self.stack.rank_weights
        self.task_weights = np.array([w.get(t, 0.0) for t in RESPONSE_TYPES], np.float32)
        self.channel_names = [c.name for c in self.channels]
        self.last_targets: dict[int, list[int]] = {}  # creator-side target users of the last upload's items

    # ------------------------------------------------------------------ embeddings
    @torch.no_grad()
    def item_vectors(self, rows: np.ndarray) -> np.ndarray:
        s = self.store
        out = []
        for a in range(0, len(rows), SCORE_CHUNK):
            r = rows[a : a + SCORE_CHUNK]
            v = self.two_tower.item(
                torch.from_numpy(s.items.ids[r]), torch.from_numpy(s.item_creator[r]),
                torch.from_numpy(s.item_category[r]), torch.from_numpy(s.item_dense[r]),
            )
            out.append(v.numpy())
        return np.concatenate(out) if out else np.zeros((0, self.tt_cfg.dim), np.float32)

    @torch.no_grad()
    def user_vectors(self, user_rows: np.ndarray) -> np.ndarray:
        s = self.store
        u = row_invariant(self.two_tower.user, torch.from_numpy(s.users.ids[user_rows]),
                          torch.from_numpy(s.user_dense(user_rows)))
        return u.numpy()

    # ------------------------------------------------------------------ uploads
    def upload_items(self, item_ids, creator_ids, upload_ts, category, dense,
                     oracle: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """New items enter the store and the item index (embedded with the current item tower); then every
        channel's ``on_upload`` (creator-side matching, whose target users are left in ``last_targets``).

        ``oracle``: (n, C) user ids and true scores per item, sent by the driver only to the positive-control
        arm (``oracle_match``), handed to the channels' ``on_upload`` for the new items."""
        known = self.store.items.contains(np.asarray(item_ids, np.int64))
        rows = self.store.add_items(item_ids, creator_ids, upload_ts, category, dense)
        new_rows = rows[~known]
        self.index.add(new_rows, self.item_vectors(new_rows))
        truth = None if oracle is None else OracleCandidates(*(np.asarray(a)[~known] for a in oracle))
        self.last_targets = {}
        for channel in self.channels:
            self.last_targets.update(channel.on_upload(self, new_rows, truth))
        return new_rows

    # ------------------------------------------------------------------ weights
    def set_weights(self, version: int, weights: dict[str, dict[str, np.ndarray]], ts: int | None = None) -> None:
        """Swap in trained weights (no restart): reload models, re-embed every item, rebuild the index."""
        self.two_tower.load_state_dict(state_dict_of(weights["two_tower"]))
        self.ranker.load_state_dict(state_dict_of(weights["ranker"]))
        rows = np.arange(self.store.n_items)
        self.index.build(rows, self.item_vectors(rows))
        for channel in self.channels:
            channel.on_weights(self, weights, ts)
        self.weights_version = version
        self.weights_ts = ts

    def base_weights_digest(self) -> str:
        """A digest of the served base models' weights (two-tower and ranker): arms served one shared base model
        show the same digest."""
        digest = hashlib.blake2b(digest_size=8)
        for module in (self.two_tower, self.ranker):
            for key, value in module.state_dict().items():
                digest.update(key.encode())
                digest.update(value.detach().numpy().tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------ requests
    def recommend(self, user_ids: np.ndarray, ts: np.ndarray, seed: int) -> Slates:
        """Slates for a batch of requests (``user_ids`` and request times ``ts``, aligned)."""
        part = self.serve_part(user_ids, ts, seed)
        self.commit(user_ids, ts, part.slates.item_ids, part.slates.channel, [part.effects], part.nonfinite)
        return part.slates

    def serve_part(self, user_ids: np.ndarray, ts: np.ndarray, seed: int, own: np.ndarray | None = None) -> ServedPart:
        """The first half of :meth:`recommend` on one shard: the whole batch's requests are recorded (every shard
        does this), then the slates of the requests at positions ``own`` (None: all) are computed without changing
        the arm's state. :meth:`commit` with every shard's slates finishes the batch."""
        user_ids = np.asarray(user_ids, np.int64)
        ts = np.asarray(ts, np.int64)
        if user_ids.shape != ts.shape:
            raise ValueError(f"recommend: {len(user_ids)} user ids but {len(ts)} timestamps")
        s = self.store
        user_rows = s.ensure_users(user_ids)
        np.add.at(s.user_requests, user_rows, 1)
        batch = RequestContext(user_rows, ts, np.random.default_rng(seed), self)
        for channel in self.channels:
            channel.on_requests(self, batch)
        if own is None:
            ctx = batch
        else:
            own = np.asarray(own, np.int64)
            ctx = RequestContext(user_rows[own], ts[own], batch.rng, self, batch_ts=ts, own=own, batch=batch)
        nonfinite = self.nonfinite_scores
        slates = self._slates(ctx)
        nonfinite, self.nonfinite_scores = self.nonfinite_scores - nonfinite, nonfinite  # counted in commit
        return ServedPart(slates, ctx.effects, nonfinite)

    def commit(self, user_ids: np.ndarray, ts: np.ndarray, item_ids: np.ndarray, channel: np.ndarray,
               effects: list[dict], nonfinite: int = 0) -> None:
        """The second half of :meth:`recommend`, on every shard: the whole batch's slates (``item_ids`` and
        ``channel`` of :class:`Slates`) are served (channels' ``on_served``), every shard's ``effects`` applied and
        the non-finite scores the shards dropped counted."""
        s = self.store
        user_rows = s.users.rows(np.asarray(user_ids, np.int64))
        valid = item_ids >= 0
        rows = np.zeros(valid.shape, np.int64)
        rows[valid] = s.items.rows(item_ids[valid])
        ctx = RequestContext(user_rows, np.asarray(ts, np.int64), None, self)  # nothing is drawn here
        for hook in self.channels:
            hook.on_served(self, ctx, rows, channel, valid)
        for channel in self.channels:
            parts = [part[channel.name] for part in effects if channel.name in part]
            if parts:
                channel.apply_effects(self, parts)
        self.nonfinite_scores += nonfinite

    def _slates(self, ctx: RequestContext) -> Slates:
        """The slates of the requests in ``ctx``: retrieval, filters, ranking, the channels' final ranking, the top
        ``slate_size`` and the features logged for training."""
        s = self.store
        n, S = ctx.n, self.slate_size
        retrievals = self._retrieve(ctx)
        parts = [retrieval.rows for retrieval in retrievals]
        chans = [np.full(block.shape, index, np.int8) for index, block in enumerate(parts)]
        cand = np.concatenate(parts, 1) if parts else np.full((n, 0), -1, np.int64)
        chan = np.concatenate(chans, 1) if chans else np.zeros((n, 0), np.int8)
        cand, chan, valid = self._filter(cand, chan, ctx)
        score, feats = self._score(cand, valid, ctx)
        for channel, retrieval in zip(self.channels, retrievals):
            score, valid = channel.rerank(self, ctx, cand, chan, valid, score, retrieval)
        score = np.where(valid, score, -np.inf)
        k = min(S, cand.shape[1]) if s.n_items else 0  # an arm without items (yet) serves empty slates
        if k == 0:
            top = np.zeros((n, 0), np.int64)
        else:
            part = np.argpartition(-score, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(score, part, 1), axis=1, kind="stable")
            top = np.take_along_axis(part, order, 1)  # (n, k)
        pad = S - k
        take = lambda a: np.take_along_axis(a, top, 1)  # noqa: E731
        top_valid = take(valid)
        rows = np.where(top_valid, take(cand), 0)
        item_ids = np.where(top_valid, s.items.ids[rows] if s.n_items else -1, -1)
        user_dense, pair_dense = feats
        out = Slates(
            item_ids=item_ids,
            channel=take(chan),
            channel_names=self.channel_names,
            creator_id=s.item_creator[rows],
            category=s.item_category[rows],
            upload_ts=s.item_upload_ts[rows],
            user_dense=user_dense,
            item_dense=s.item_dense[rows],
            pair_dense=np.take_along_axis(pair_dense, top[:, :, None], 1),
            score=np.where(top_valid, take(score), -np.inf).astype(np.float32),
        )
        for channel in self.channels:
            out.extra.update(channel.log_features(self, ctx, rows, top_valid))
        if pad:
            out = _pad_slates(out, S)
        return out

    def _retrieve(self, ctx: RequestContext) -> list[Retrieval]:
        """Every channel's retrieval, its rows as an (n, k) int64 block, with its columns in the candidate matrix."""
        out, start = [], 0
        for channel in self.channels:
            retrieval = channel.retrieve(ctx)
            block = np.asarray(retrieval.rows, np.int64)
            block = block.reshape(ctx.n, -1) if ctx.n else np.zeros((0, 0), np.int64)
            out.append(replace(retrieval, rows=block, columns=slice(start, start + block.shape[1])))
            start += block.shape[1]
        return out

    def _filter(self, cand: np.ndarray, chan: np.ndarray, ctx: RequestContext):
        """Drop padding, items uploaded after the request, already-seen pairs and duplicates across channels."""
        s = self.store
        valid = cand >= 0
        r = np.maximum(cand, 0)
        if s.n_items:
            valid &= s.item_upload_ts[r] <= ctx.ts[:, None]
        if self.stack.exclude_seen and s.n_items:
            valid &= ~s.is_seen(np.broadcast_to(ctx.user_rows[:, None], cand.shape), r)
        # duplicates: keep the first channel's copy
        key = np.where(valid, cand, -1 - np.arange(cand.shape[1])[None, :])
        order = np.argsort(key, axis=1, kind="stable")
        sk = np.take_along_axis(key, order, 1)
        dup_sorted = np.zeros_like(valid)
        dup_sorted[:, 1:] = sk[:, 1:] == sk[:, :-1]
        dup = np.zeros_like(valid)
        np.put_along_axis(dup, order, dup_sorted, 1)
        valid &= ~dup
        return cand, chan, valid

    def candidate_scores(self, cand: np.ndarray, ctx: RequestContext) -> tuple[np.ndarray, np.ndarray]:
        """(score, valid) of a candidate matrix (n, C) of item rows for the requests of ``ctx``, as
        :meth:`recommend` gives them to the channels' ``rerank`` when ``cand`` is its first block of candidates
        (filtered, ranked, boosted); changes no state. A sharded arm's channel uses it to see the rows of the whole
        batch (DualRec's batch-wide exposure budget)."""
        cand, _, valid = self._filter(np.asarray(cand, np.int64), np.zeros(np.shape(cand), np.int8), ctx)
        score, _ = self._score(cand, valid, ctx, count=False)
        return score, valid

    @torch.no_grad()
    def _score(self, cand: np.ndarray, valid: np.ndarray, ctx: RequestContext, count: bool = True):
        """Multi-task predictions for every valid candidate, combined as sum_k w_k p_k (+ new-item boost);
        ``count``: count (and warn once about) the non-finite predictions dropped."""
        s = self.store
        n, C = cand.shape
        user_dense = s.user_dense(ctx.user_rows)  # (n, Fu)
        pair_dense = s.pair_dense(cand, ctx.ts) if s.n_items else np.zeros((n, C, s.N_PAIR_DENSE), np.float32)
        score = np.full((n, C), -np.inf, np.float32)
        ri, ci = np.nonzero(valid)
        for a in range(0, len(ri), SCORE_CHUNK):
            rr, cc = ri[a : a + SCORE_CHUNK], ci[a : a + SCORE_CHUNK]
            it = cand[rr, cc]
            batch = {
                "user_id": torch.from_numpy(s.users.ids[ctx.user_rows[rr]]),
                "item_id": torch.from_numpy(s.items.ids[it]),
                "creator_id": torch.from_numpy(s.item_creator[it]),
                "category": torch.from_numpy(s.item_category[it]),
                "user_dense": torch.from_numpy(user_dense[rr]),
                "item_dense": torch.from_numpy(s.item_dense[it]),
                "pair_dense": torch.from_numpy(pair_dense[rr, cc]),
            }
            p = row_invariant(lambda rows: torch.sigmoid(self.ranker(rows)), batch).numpy()  # (m, T)
            # sum_k w_k p_k term by term, not p @ w: a BLAS matrix-vector product rounds a row differently with the
            # batch's length and alignment, and a sharded arm must give a request the same bits whatever its shard
            # (serving.row_invariant); the scores' finiteness is checked below
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                combined = np.zeros(len(p), np.float32)
                for task, weight in enumerate(self.task_weights):
                    combined += p[:, task] * weight
                score[rr, cc] = combined
        bad = valid & ~np.isfinite(score)
        if bad.any() and count:  # never rank a non-finite prediction: it is dropped from the slate and counted
            self.nonfinite_scores += int(bad.sum())
            if not self._warned_nonfinite:
                self._warned_nonfinite = True
                logger.warning("arm ranker gave %d non-finite scores of %d candidates (first: user row %d, item row %d; "
                               "user_dense finite %s, item_dense finite %s, pair_dense finite %s); they are not shown",
                               int(bad.sum()), int(valid.sum()), *(int(x[0]) for x in (ctx.user_rows[np.nonzero(bad)[0]],
                               cand[bad])), bool(np.isfinite(user_dense).all()),
                               bool(np.isfinite(s.item_dense[cand[bad]]).all()), bool(np.isfinite(pair_dense).all()))
        valid = valid & ~bad
        # FairRec-like new-item boost, decaying linearly to 0 at boost_max_exposures
        expo = s.item_expo[np.maximum(cand, 0)] if s.n_items else np.zeros((n, C))
        boost = self.stack.new_item_boost * np.clip(1.0 - expo / self.stack.boost_max_exposures, 0.0, 1.0)
        score = np.where(valid, score + boost, -np.inf)
        return score, (user_dense, pair_dense)

    # ------------------------------------------------------------------ feedback
    def feedback(self, user_ids: np.ndarray, item_ids: np.ndarray, ts: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Exposures and their responses update real-time features; returns rows that gained a positive."""
        user_ids, item_ids = np.asarray(user_ids, np.int64), np.asarray(item_ids, np.int64)
        if not (len(user_ids) == len(item_ids) == len(ts) == len(labels)):
            raise ValueError("feedback: user_ids, item_ids, ts and labels must have the same length")
        ts = np.asarray(ts, np.int64)
        rows = self.store.record(user_ids, item_ids, ts, labels)
        if len(ts):
            for channel in self.channels:
                channel.on_feedback(self, rows, int(ts.max()))
        return rows

    # ------------------------------------------------------------------ days
    def end_day(self, ts: int) -> dict[str, float]:
        """The end of a simulated day at ``ts``: channels' daily work; returns their diagnostics."""
        out: dict[str, float] = {}
        for channel in self.channels:
            out.update(channel.on_day_end(self, ts))
        return out

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> ArmPolicyState:
        """The arm's state record (every channel's included)."""
        return capture(self, ArmPolicyState)

    def load_state(self, state: ArmPolicyState) -> None:
        restore(self, state)

    def snapshot(self) -> bytes:
        """:meth:`state` serialised (what a checkpoint stores and a Serve replica sends)."""
        buffer = io.BytesIO()
        torch.save(self.state(), buffer)
        return buffer.getvalue()

    def restore(self, data: bytes) -> None:
        self.load_state(torch.load(io.BytesIO(data), weights_only=False))


def _pad_slates(s: Slates, S: int) -> Slates:
    def pad(a, fill):
        width = [(0, 0), (0, S - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
        return np.pad(a, width, constant_values=fill)

    return Slates(
        item_ids=pad(s.item_ids, -1), channel=pad(s.channel, 0), channel_names=s.channel_names,
        creator_id=pad(s.creator_id, 0), category=pad(s.category, 0), upload_ts=pad(s.upload_ts, 0),
        user_dense=s.user_dense, item_dense=pad(s.item_dense, 0), pair_dense=pad(s.pair_dense, 0),
        score=pad(s.score, -np.inf),
        extra={k: pad(v, -1 if v.dtype.kind in "iu" else 0) for k, v in s.extra.items()},
    )

