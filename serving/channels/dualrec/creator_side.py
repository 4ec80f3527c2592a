"""DualRec's creator side: the creator-side two-tower and its user index, the content-similarity index, the
candidate users of an uploaded item (two-tower, item similarity, user similarity) and the creator-side ranker's
scores of them (papers/dualrec_creator_side.txt 3.2-3.3; eq. 9-10)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from simulator.core.config import DualRecSpec
from simulator.core.schema import RESPONSE_TYPES
from serving.channels.dualrec.scoring import integrate_scores
from serving.features import FeatureStore, grow_rows, sequence_tail
from serving.index import ANNIndex
from trainers.checkpoint import capture, index_bytes, restore, torch_state
from trainers.models.creator_ranker import CreatorRanker, CreatorRankerConfig
from trainers.models.two_tower import TwoTower, TwoTowerConfig
from trainers.weights import unpack_weights

CONTENT_CAT_DIM = 8
CONTENT_NEIGHBOURS = 50  # content neighbours fetched per item before keeping those with recent likers
ITEM_CHUNK = 64


RETRIEVALS = ("two_tower", "item_sim", "user_sim", "oracle")
"""The creator-side retrievals, by the code a match keeps (``MatchingCache.source``): a user found by several is
credited to the first in this order (the order candidates are merged in)."""


def _dedupe_rows(c: np.ndarray, tag: np.ndarray | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(m, C) ids with -1 padding -> each row's distinct ids first (first occurrence order kept), -1 after; with
    ``tag`` (m, C), also each kept id's tag (of its first occurrence), -1 after."""
    if c.size == 0:
        return c if tag is None else (c, tag)
    order = np.argsort(c, axis=1, kind="stable")
    sc = np.take_along_axis(c, order, 1)
    dup = np.zeros_like(sc, dtype=bool)
    dup[:, 1:] = sc[:, 1:] == sc[:, :-1]
    keep = np.zeros_like(dup)
    np.put_along_axis(keep, order, ~dup, 1)
    keep &= c >= 0
    pos = np.argsort(~keep, axis=1, kind="stable")
    kept = np.take_along_axis(keep, pos, 1)
    out = np.where(kept, np.take_along_axis(c, pos, 1), -1)
    return out if tag is None else (out, np.where(kept, np.take_along_axis(tag, pos, 1), -1))


@dataclass
class CreatorSideState:
    """What a :class:`CreatorSide` checkpoints."""

    two_tower: dict = torch_state()
    ranker: dict = torch_state()
    user_index: bytes = index_bytes()
    content_index: bytes = index_bytes()
    sim_items: np.ndarray
    pending_two_tower: dict | None


class CreatorSide:
    """DualRec's creator-side models and indexes: who might like a new item, and how much."""

    NOT_SAVED = ("spec", "rank_weights", "cat_vecs")  # the spec and what the constructor derives from it and the seed

    def __init__(self, spec: DualRecSpec, tt_cfg: TwoTowerConfig, rk_cfg: CreatorRankerConfig, m: int,
                 ef_construction: int, ef: int, seed: int):
        """Builds the two-tower, then the ranker, from torch's generator as it is (the channel seeds it)."""
        self.spec = spec
        self.two_tower = TwoTower(tt_cfg).eval()  # refreshed daily with the user index
        self.ranker = CreatorRanker(rk_cfg).eval()  # refreshed on every weight push
        self.rank_weights = np.array([spec.rank_weights.get(t, 0.0) for t in RESPONSE_TYPES], np.float32)
        self.pending_two_tower: dict | None = None  # the latest two-tower weights, loaded at the day's end
        self.user_index = ANNIndex(tt_cfg.dim, m=m, ef_construction=ef_construction, ef=ef, seed=seed)
        rng = np.random.default_rng(seed)
        self.cat_vecs = rng.standard_normal((1024, CONTENT_CAT_DIM)).astype(np.float32)
        self.content_index = ANNIndex(CONTENT_CAT_DIM + tt_cfg.n_item_dense, m=m, ef_construction=ef_construction,
                                      ef=ef, seed=seed + 1)
        self.sim_items = np.full((0, spec.item_sim_items), -1, np.int64)  # item row -> content-similar item rows

    # ------------------------------------------------------------------ content similarity
    def content_vectors(self, store: FeatureStore, rows: np.ndarray) -> np.ndarray:
        """(n, d_c) unit content vectors: a random unit vector per category and the squashed dense features."""
        cat = self.cat_vecs[store.item_category[rows] % len(self.cat_vecs)]
        cat = cat / np.linalg.norm(cat, axis=1, keepdims=True)
        dense = np.tanh(store.item_dense[rows])
        v = np.concatenate([cat, 0.5 * dense], 1)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def add_items(self, store: FeatureStore, rows: np.ndarray) -> None:
        """New items' content neighbours among earlier items (those with recent likers first); then they join the
        content index."""
        self.sim_items = grow_rows(self.sim_items, store.n_items, fill=-1)
        if len(rows) == 0:
            return
        cvec = self.content_vectors(store, rows)
        labels, _ = self.content_index.query(cvec, CONTENT_NEIGHBOURS)
        has_likers = np.where(labels >= 0, store.item_seq_count[np.maximum(labels, 0)] > 0, False)
        order = np.argsort(~has_likers, axis=1, kind="stable")[:, : self.spec.item_sim_items]  # likers first, by similarity
        self.sim_items[rows] = np.take_along_axis(np.where(has_likers, labels, -1), order, 1)
        self.content_index.add(rows, cvec)

    def sim_dense(self, store: FeatureStore, rows: np.ndarray) -> np.ndarray:
        """(n, 2) extra item feature: the content-similar items' smoothed interaction rate and log exposures."""
        sim = self.sim_items[rows]  # (n, K)
        ok = sim >= 0
        r = np.maximum(sim, 0)
        expo = store.item_expo[r].astype(np.float32)
        rate = (store.item_inter[r].astype(np.float32) + 0.5) / (expo + 10.0)
        n = np.maximum(ok.sum(1), 1)
        return np.stack([(rate * ok).sum(1) / n, (np.log1p(expo) * ok).sum(1) / n], 1).astype(np.float32)

    def recent_users(self, store: FeatureStore, rows: np.ndarray) -> np.ndarray:
        """(n, R) extra item feature: the item's last R interacted users (ids, -1 padded)."""
        return sequence_tail(*store.sequences(rows), self.spec.recent_users)[0]

    # ------------------------------------------------------------------ model vectors
    @torch.no_grad()
    def user_vectors(self, store: FeatureStore, user_rows: np.ndarray) -> np.ndarray:
        return self.two_tower.user(torch.from_numpy(store.users.ids[user_rows]),
                                   torch.from_numpy(store.user_dense(user_rows))).numpy()

    @torch.no_grad()
    def item_vectors(self, store: FeatureStore, rows: np.ndarray) -> np.ndarray:
        return self.two_tower.item(torch.from_numpy(store.items.ids[rows]), torch.from_numpy(store.item_creator[rows]),
                                   torch.from_numpy(store.item_category[rows]), torch.from_numpy(store.item_dense[rows])).numpy()

    # ------------------------------------------------------------------ candidates and their scores
    def candidates(self, store: FeatureStore, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((m, C) candidate user rows per item from the enabled retrievals, deduplicated, -1 padded; (m, C) the
        retrieval that found each, as an index of :data:`RETRIEVALS`)."""
        m = len(rows)
        parts, tags = [], []
        if len(self.user_index):
            labels, _ = self.user_index.query(self.item_vectors(store, rows), self.spec.two_tower_k)
            parts.append(labels)
            tags.append(0)
        if self.spec.item_sim:
            sim = self.sim_items[rows]  # (m, K)
            seq, _ = store.sequences(np.maximum(sim, 0).reshape(-1))  # (m*K, L) user ids
            seq = np.where((sim >= 0).reshape(-1, 1), seq, -1).reshape(m, -1)
            user_rows = np.full(seq.shape, -1, np.int64)
            user_rows[seq >= 0] = store.users.rows(seq[seq >= 0])
            parts.append(user_rows)
            tags.append(1)
        if self.spec.user_sim and len(self.user_index):
            seeds = self.creator_audience(store, rows)  # (m, n_seed) user rows
            ok = seeds >= 0
            vec = self.user_vectors(store, np.maximum(seeds, 0).reshape(-1))
            labels, _ = self.user_index.query(vec, self.spec.user_sim_k)  # (m*n_seed, k)
            labels = np.where(ok.reshape(-1, 1), labels, -1).reshape(m, -1)
            parts.append(labels)
            tags.append(2)
        if not parts:
            return np.full((m, 0), -1, np.int64), np.full((m, 0), -1, np.int8)
        tag = np.concatenate([np.full(p.shape, t, np.int8) for p, t in zip(parts, tags)], 1)
        return _dedupe_rows(np.concatenate(parts, 1), tag)

    def creator_audience(self, store: FeatureStore, rows: np.ndarray) -> np.ndarray:
        """(m, user_sim_seeds) user rows: the most recent distinct likers of each item's creator's earlier items."""
        n_seed = self.spec.user_sim_seeds
        out = np.full((len(rows), n_seed), -1, np.int64)
        creators = store.item_creator[rows]
        mine = np.flatnonzero(np.isin(store.item_creator[: store.n_items], creators) & (store.item_seq_count[: store.n_items] > 0))
        if len(mine) == 0:
            return out
        seq, _, ts = store.sequences(mine, with_ts=True)
        c = np.repeat(store.item_creator[mine], seq.shape[1])
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
            out[j, : len(seeds)] = store.users.rows(seeds)
        return out

    @torch.no_grad()
    def rank(self, store: FeatureStore, rows: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Creator-side scores of each item's candidate users: (eq. 10 score for selection, eq. 9 score for eq. 14)."""
        m, C = cand.shape
        valid = cand >= 0
        users, inv = np.unique(np.where(valid, cand, 0), return_inverse=True)
        inv = inv.reshape(m, C)
        uvec = self.ranker.user(torch.from_numpy(store.users.ids[users]), torch.from_numpy(store.user_dense(users)))  # (U', K, d)
        batch = {
            "item_id": torch.from_numpy(store.items.ids[rows]), "creator_id": torch.from_numpy(store.item_creator[rows]),
            "category": torch.from_numpy(store.item_category[rows]), "item_dense": torch.from_numpy(store.item_dense[rows]),
            "recent_users": torch.from_numpy(self.recent_users(store, rows)),
            "sim_dense": torch.from_numpy(self.sim_dense(store, rows)),
        }
        ivec = self.ranker.item(batch)  # (m, K, d)
        plain = np.full((m, C), -np.inf)
        for a in range(0, m, ITEM_CHUNK):
            b = slice(a, a + ITEM_CHUNK)
            logits = self.ranker.logits((uvec[torch.from_numpy(inv[b])] * ivec[b, None]).sum(-1))  # (mb, C, K)
            p = torch.sigmoid(logits).numpy().reshape(-1, logits.shape[-1])
            plain[b] = integrate_scores(p, self.rank_weights).reshape(-1, C)
        plain = np.where(valid, plain, -np.inf)
        if not self.spec.user_bias:
            return plain, plain
        b_u = store.user_dense(np.where(valid, cand, 0).reshape(-1))[:, 2].reshape(m, C)  # the user's interaction rate
        return np.where(valid, plain / np.maximum(b_u, 1e-6), -np.inf), plain

    # ------------------------------------------------------------------ weights and state
    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        """The DualRec task's weights: the ranker now, the two-tower with the next user-index rebuild."""
        two_tower, ranker = unpack_weights(weights, "tt", "rank")
        self.ranker.load_state_dict(ranker)
        self.pending_two_tower = two_tower  # the two-tower and its user index move together, once a day

    def rebuild_user_index(self, store: FeatureStore) -> None:
        """The day's two-tower (when new weights came) and the user index over every known user."""
        if self.pending_two_tower is not None:
            self.two_tower.load_state_dict(self.pending_two_tower)
            self.pending_two_tower = None
        users = np.arange(len(store.users))
        self.user_index.build(users, self.user_vectors(store, users) if len(users) else np.zeros((0, self.user_index.dim)))

    def state(self) -> CreatorSideState:
        return capture(self, CreatorSideState)

    def load_state(self, state: CreatorSideState) -> None:
        restore(self, state)
