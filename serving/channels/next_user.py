"""The Next-User Retrieval channel: an HNSW index of cold items' generated next-user embeddings.

Each cold item (fewer than ``cold_max_exposures`` exposures and younger than
``cold_max_age_hours``) has u^_next = NextUserModel(prefix prompts, its positive-user sequence,
[CLS]) in an hnswlib inner-product index. u^_next is generated at upload (prefixes only, no
users yet), regenerated whenever the item gains a like/comment (written in place: hnswlib
replaces a label's vector), and regenerated for every cold item when new weights arrive. A
request queries the index with the requesting user's vector from the Next-User user tower.
Items that stopped being cold stay in the graph but are filtered out at query time.

The channel also feature-logs, for every exposed cold item, the sequence the model saw, so
the arm's learner trains on exactly what serving used (``nu_seq``, ``nu_len``).
"""

from __future__ import annotations

import io

import numpy as np
import torch

from simulator.core.config import NextUserSpec
from serving.index import ANNIndex
from serving.stack import RequestContext
from trainers.models.next_user import NextUserConfig, NextUserModel
from trainers.models.two_tower import TwoTowerConfig, UserTower
from trainers.next_user_task import split_weights

CHUNK = 8192


class NextUserChannel:
    name = "next_user"

    def __init__(self, spec: NextUserSpec, cfg: NextUserConfig, tt_cfg: TwoTowerConfig, m: int, ef_construction: int,
                 ef: int, seed: int):
        torch.manual_seed(seed)
        self.spec = spec
        self.model = NextUserModel(cfg).eval()
        self.user_tower = UserTower(tt_cfg).eval()
        self.index = ANNIndex(cfg.dim, m=m, ef_construction=ef_construction, ef=ef, seed=seed)
        self.max_age_s = int(spec.cold_max_age_hours * 3600)
        self.regenerations = 0  # u^_next computations, for the per-tick cost figure

    # ---- which items are cold
    def cold(self, policy, rows: np.ndarray, now: np.ndarray | int) -> np.ndarray:
        s = policy.store
        return (s.item_expo[rows] < self.spec.cold_max_exposures) & (np.asarray(now) - s.item_upload_ts[rows] < self.max_age_s)

    # ---- generation
    @torch.no_grad()
    def generate(self, policy, rows: np.ndarray) -> np.ndarray:
        """u^_next (n, d) for item rows, from their prefixes and current positive-user sequences."""
        s = policy.store
        out = []
        for a in range(0, len(rows), CHUNK):
            r = rows[a : a + CHUNK]
            seq, n = s.sequences(r)
            batch = {
                "item_id": torch.from_numpy(s.items.ids[r]), "category": torch.from_numpy(s.item_category[r]),
                "creator_id": torch.from_numpy(s.item_creator[r]), "item_dense": torch.from_numpy(s.item_dense[r]),
                "seq_users": torch.from_numpy(seq), "seq_len": torch.from_numpy(n),
            }
            out.append(self.model(batch).u_next.numpy())
        self.regenerations += len(rows)
        return np.concatenate(out) if out else np.zeros((0, self.model.cfg.dim), np.float32)

    # ---- hooks called by ArmPolicy
    def on_upload(self, policy, rows: np.ndarray) -> None:
        self.index.add(rows, self.generate(policy, rows))

    def on_feedback(self, policy, rows: np.ndarray, now: int) -> None:
        rows = rows[self.cold(policy, rows, now)]
        if len(rows):
            self.index.add(rows, self.generate(policy, rows))

    def on_weights(self, policy, weights: dict, now: int | None) -> None:
        model_w, tower_w = split_weights(weights[self.name])
        self.model.load_state_dict(model_w)
        self.user_tower.load_state_dict(tower_w)
        rows = np.arange(policy.store.n_items)
        if now is not None:
            rows = rows[self.cold(policy, rows, now)]
        self.index.build(rows, self.generate(policy, rows))

    # ---- retrieval
    @torch.no_grad()
    def user_vectors(self, policy, user_rows: np.ndarray) -> np.ndarray:
        s = policy.store
        return self.user_tower(torch.from_numpy(s.users.ids[user_rows]), torch.from_numpy(s.user_dense(user_rows))).numpy()

    def retrieve(self, ctx: RequestContext) -> np.ndarray:
        if len(self.index) == 0:
            return np.full((ctx.n, 0), -1, np.int64)
        labels, _ = self.index.query(self.user_vectors(ctx.policy, ctx.user_rows), 2 * self.spec.k)
        ok = labels >= 0
        r = np.maximum(labels, 0)
        ok &= self.cold(ctx.policy, r, ctx.ts[:, None])
        # keep the first k cold hits of each row, in similarity order
        rank = np.cumsum(ok, axis=1)
        ok &= rank <= self.spec.k
        out = np.where(ok, labels, -1)
        order = np.argsort(~ok, axis=1, kind="stable")[:, : self.spec.k]
        return np.take_along_axis(out, order, 1)

    # ---- feature logging for training
    def log_features(self, policy, ctx: RequestContext, rows: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """For each slate slot: the item's sequence at serve time (cold items) or length -1 (not a sample)."""
        n, S = rows.shape
        L = self.spec.seq_len
        seq = np.full((n, S, L), -1, np.int64)
        length = np.full((n, S), -1, np.int64)
        cold = valid & self.cold(policy, rows, ctx.ts[:, None])
        ri, si = np.nonzero(cold)
        if len(ri):
            s, ln = policy.store.sequences(rows[ri, si])
            s, ln = _last(s, ln, L)
            seq[ri, si] = s
            length[ri, si] = ln
        return {"nu_seq": seq, "nu_len": length}

    # ---- checkpoint
    def state(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "tower": self.user_tower.state_dict(),
                    "index": self.index.to_bytes(), "regen": self.regenerations}, buf)
        return buf.getvalue()

    def load_state(self, data: bytes) -> None:
        st = torch.load(io.BytesIO(data), weights_only=False)
        self.model.load_state_dict(st["model"])
        self.user_tower.load_state_dict(st["tower"])
        self.index.from_bytes(st["index"])
        self.regenerations = st["regen"]


def _last(seq: np.ndarray, length: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
    """The last (most recent) ``L`` users of left-aligned sequences, left-aligned again."""
    if seq.shape[1] <= L:
        pad = np.full((len(seq), L - seq.shape[1]), -1, np.int64)
        return np.concatenate([seq, pad], 1), length
    start = np.maximum(length - L, 0)
    idx = start[:, None] + np.arange(L)[None, :]
    out = np.take_along_axis(seq, np.minimum(idx, seq.shape[1] - 1), 1)
    ln = np.minimum(length, L)
    return np.where(np.arange(L)[None, :] < ln[:, None], out, -1), ln
