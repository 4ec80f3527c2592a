"""The Next-User Retrieval channel: an HNSW index of cold items' generated next-user embeddings.

Each cold item (fewer than ``cold_max_exposures`` exposures and younger than ``cold_max_age_hours``;
:class:`serving.channels.cold.ColdItemIndex`) has u^_next = NextUserModel(prefix prompts, its positive-user
sequence, [CLS]) in an hnswlib inner-product index. u^_next is generated at upload (prefixes only, no
users yet), regenerated whenever the item gains a like/comment (written in place: hnswlib
replaces a label's vector), and regenerated for every cold item when new weights arrive. A
request queries the index with the requesting user's vector from the Next-User user tower.
Items that stopped being cold stay in the graph but are filtered out at query time.

The channel also feature-logs, for every exposed cold item, the sequence the model saw, so
the arm's learner trains on exactly what serving used (``nu_seq``, ``nu_len``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from simulator.core.config import NextUserSpec
from serving.channels.base import Channel, OracleCandidates, RequestContext, Retrieval
from serving.row_invariant import row_invariant
from serving.channels.cold import ColdItemIndex
from serving.features import sequence_tail
from trainers.checkpoint import capture, index_bytes, restore, torch_state
from trainers.models.next_user import NextUserConfig, NextUserModel
from trainers.models.two_tower import TwoTowerConfig, UserTower
from trainers.weights import unpack_weights

CHUNK = 8192


@dataclass
class NextUserChannelState:
    """What a :class:`NextUserChannel` checkpoints."""

    model: dict = torch_state()
    user_tower: dict = torch_state()
    index: bytes = index_bytes()
    regenerations: int = 0


class NextUserChannel(Channel):
    """Cold items whose generated next user (u^_next) is nearest to the requesting user's vector."""

    name = "next_user"
    NOT_SAVED = ("spec",)

    def __init__(self, spec: NextUserSpec, cfg: NextUserConfig, tt_cfg: TwoTowerConfig, m: int, ef_construction: int,
                 ef: int, seed: int):
        torch.manual_seed(seed)
        self.spec = spec
        self.model = NextUserModel(cfg).eval()
        self.user_tower = UserTower(tt_cfg).eval()
        self.index = ColdItemIndex(cfg.dim, spec.cold_max_exposures, int(spec.cold_max_age_hours * 3600), m=m,
                                   ef_construction=ef_construction, ef=ef, seed=seed)
        self.regenerations = 0  # u^_next computations, for the per-tick cost figure

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
    def on_upload(self, policy, rows: np.ndarray, oracle: OracleCandidates | None) -> dict[int, list[int]]:
        """u^_next of the new items from their prefixes alone."""
        self.index.add(rows, self.generate(policy, rows))
        return {}

    def on_feedback(self, policy, rows: np.ndarray, now: int) -> None:
        """Regenerate u^_next of the cold items that gained a positive, in place."""
        rows = rows[self.index.is_cold(policy.store, rows, now)]
        if len(rows):
            self.index.add(rows, self.generate(policy, rows))

    def on_weights(self, policy, weights: dict, now: int | None) -> None:
        """Load the task's weights, regenerate every cold item and rebuild the index."""
        model_weights, tower_weights = unpack_weights(weights[self.name], "model", "user_tower")
        self.model.load_state_dict(model_weights)
        self.user_tower.load_state_dict(tower_weights)
        rows = np.arange(policy.store.n_items)
        if now is not None:
            rows = rows[self.index.is_cold(policy.store, rows, now)]
        self.index.build(rows, self.generate(policy, rows))

    # ---- retrieval
    @torch.no_grad()
    def user_vectors(self, policy, user_rows: np.ndarray) -> np.ndarray:
        s = policy.store
        return row_invariant(self.user_tower, torch.from_numpy(s.users.ids[user_rows]),
                             torch.from_numpy(s.user_dense(user_rows))).numpy()

    def retrieve(self, ctx: RequestContext) -> Retrieval:
        if len(self.index) == 0:
            return Retrieval.empty(ctx.n)
        query = self.user_vectors(ctx.policy, ctx.user_rows)
        return Retrieval(self.index.nearest_cold(ctx.policy.store, query, ctx.ts, self.spec.k))

    # ---- feature logging for training
    def log_features(self, policy, ctx: RequestContext, rows: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """For each slate slot: the item's sequence at serve time (cold items) or length -1 (not a sample)."""
        n, S = rows.shape
        L = self.spec.seq_len
        seq = np.full((n, S, L), -1, np.int64)
        length = np.full((n, S), -1, np.int64)
        cold = valid & self.index.is_cold(policy.store, rows, ctx.ts[:, None])
        ri, si = np.nonzero(cold)
        if len(ri):
            seq[ri, si], length[ri, si] = sequence_tail(*policy.store.sequences(rows[ri, si]), L)
        return {"nu_seq": seq, "nu_len": length}

    # ---- checkpoint
    def state(self) -> NextUserChannelState:
        return capture(self, NextUserChannelState)

    def load_state(self, state: NextUserChannelState) -> None:
        restore(self, state)
