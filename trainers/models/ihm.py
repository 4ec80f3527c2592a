"""Item History Model (papers/item_history_model_ihm.txt, section 3): an inductive item tower whose embedding
is the item's static features attending over the users who interacted with it (no retraining for new likes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from trainers.models.sequence import tail_positions
from trainers.models.two_tower import HashEmbedding


@dataclass
class IHMConfig:
    """Sizes and the paper's ablation switch.

    heads: H, the experts of eq. (1)-(3) (the paper's grid search found H = 1 best).
    max_history: the item's most recent interacting users read (older ones are dropped).
    static_only: ablation "no inductive structure": e_i = E_S(x_i), the history is ignored.
    normalize: L2-normalise e_i (the two-towers here score by cosine).
    history_dropout: in training mode, each history user is masked out with this probability (regularises
    the user-id embeddings, which otherwise memorise training co-occurrences, and shows the model
    shorter, colder histories); no effect in eval mode.
    """

    dim: int = 32
    heads: int = 1
    max_history: int = 50
    id_buckets: int = 1 << 15
    n_categories: int = 1024
    n_item_dense: int = 1
    static_only: bool = False
    normalize: bool = True
    history_dropout: float = 0.0


@dataclass
class IHMOutput:
    """Everything eq. (1)-(3) computes for a batch of items, for inspection and tests.

    e: (B, d) the item embedding e_i (normalised when ``cfg.normalize``).
    static: (B, d) E_S(x_i).
    agg: (B, H, d) Agg_h, one expert embedding per head.
    attn: (B, H, M+1) attention weights over [users 1..M; E_S]; padding slots are exactly 0.
    gate: (B, H) G_h, softmax over heads.
    """

    e: torch.Tensor
    static: torch.Tensor
    agg: torch.Tensor
    attn: torch.Tensor
    gate: torch.Tensor


class StaticItemEmbedding(nn.Module):
    """E_S(x_i) = W [E(id); E(creator); E(category); dense]: concatenated feature embeddings projected to d.

    Takes any leading shape: (..., ) ids and (..., F) dense -> (..., d). Also the item-embedding
    module of the sequential user tower (``trainers.models.sasrec``), so both towers share it.
    """

    def __init__(self, dim: int, id_buckets: int, n_categories: int, n_item_dense: int):
        super().__init__()
        self.id_emb = HashEmbedding(id_buckets, dim)
        self.creator_emb = HashEmbedding(id_buckets, dim)
        self.cat_emb = HashEmbedding(n_categories, dim)
        self.proj = nn.Linear(3 * dim + n_item_dense, dim)

    def forward(self, item_id, creator_id, category, item_dense) -> torch.Tensor:
        x = torch.cat([self.id_emb(item_id), self.creator_emb(creator_id), self.cat_emb(category),
                       item_dense.float()], dim=-1)  # (..., 3d + F)
        return self.proj(x)  # (..., d)


class ItemHistoryModel(nn.Module):
    """The IHM item tower. Batch keys: item_id, creator_id, category (B,) int64; item_dense (B, F) float;
    hist_users (B, M_in) int64, the item's interacting users in time order, -1 padding after the first
    hist_len[b]; hist_len (B,). The last ``max_history`` users are read; order does not matter (no
    positions), so the embedding is a function of the *set* of recent users.

    ``static`` (E_S) and ``user_emb`` (E_U, user ids -> d) are constructor arguments so a user tower can
    share E_S; by default the model owns both.
    """

    def __init__(self, cfg: IHMConfig, static: nn.Module | None = None, user_emb: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        d, H = cfg.dim, cfg.heads
        self.static = static if static is not None else StaticItemEmbedding(d, cfg.id_buckets, cfg.n_categories,
                                                                             cfg.n_item_dense)
        self.user_emb = user_emb if user_emb is not None else HashEmbedding(cfg.id_buckets, d)
        self.w_k = nn.Linear(d, H * d, bias=False)  # W_K_h for every head, stacked
        self.w_s = nn.Linear(d, H * d, bias=False)  # W_S_h for every head, stacked
        self.w_gate = nn.Linear(2 * d, 1, bias=False)  # W_gate, shared by the heads (eq. 3)

    def static_embedding(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.static(batch["item_id"], batch["creator_id"], batch["category"], batch["item_dense"])  # (B, d)

    def history(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, M) user ids, (B, M) bool valid): each row's last ``max_history`` users, M <= max_history."""
        users = batch["hist_users"]
        B, M_in = users.shape
        M = max(1, min(self.cfg.max_history, M_in))
        src, _, valid = tail_positions(batch["hist_len"], M_in, M)  # (B, M) last users, left-aligned; (B, M)
        if M_in == 0:
            return users.new_zeros(B, M), valid
        return torch.gather(users, 1, src), valid

    def explain(self, batch: dict[str, torch.Tensor]) -> IHMOutput:
        """Eq. (1)-(3) with every intermediate."""
        cfg = self.cfg
        es = self.static_embedding(batch)  # (B, d)
        B, d, H = es.shape[0], cfg.dim, cfg.heads
        if cfg.static_only:
            e = nn.functional.normalize(es, dim=-1) if cfg.normalize else es
            return IHMOutput(e=e, static=es, agg=es[:, None, :].expand(B, H, d), attn=es.new_zeros(B, H, 1),
                             gate=es.new_full((B, H), 1.0 / H))
        users, valid = self.history(batch)  # (B, M), (B, M)
        if self.training and cfg.history_dropout > 0:
            valid = valid & (torch.rand(valid.shape, device=valid.device) >= cfg.history_dropout)
        eu = self.user_emb(users.clamp(min=0))  # (B, M, d) E_U
        tokens = torch.cat([eu, es[:, None, :]], dim=1)  # (B, M+1, d) [E_U; E_S], the raw values
        T = tokens.shape[1]
        valid = torch.cat([valid, valid.new_ones(B, 1)], dim=1)  # (B, M+1) E_S always valid
        keys = self.w_k(tokens).view(B, T, H, d)  # (B, M+1, H, d) W_K_h [E_U; E_S]
        q = self.w_s(es).view(B, H, d)  # (B, H, d) q_h = W_S_h E_S
        logits = torch.einsum("bthd,bhd->bht", keys, q) / math.sqrt(d)  # (B, H, M+1)
        logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
        attn = torch.softmax(logits, dim=-1)  # (B, H, M+1); padding -> exactly 0
        agg = torch.einsum("bht,btd->bhd", attn, tokens)  # (B, H, d) Agg_h: no value projection
        g = self.w_gate(torch.cat([agg, es[:, None, :].expand(B, H, d)], dim=-1)).squeeze(-1)  # (B, H) g_h
        gate = torch.softmax(g, dim=-1)  # (B, H) G_h
        e = (gate[..., None] * agg).sum(1)  # (B, d) eq. (1)
        if cfg.normalize:
            e = nn.functional.normalize(e, dim=-1)
        return IHMOutput(e=e, static=es, agg=agg, attn=attn, gate=gate)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.explain(batch).e  # (B, d)

