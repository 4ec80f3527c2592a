"""SASRec-style sequential user tower: causal self-attention over the embeddings of the user's recent items;
the last position's output is the user vector (Kang & McAuley 2018; the IHM paper's backbone, section 5.1.2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainers.models.sequence import tail_positions
from trainers.models.two_tower import HashEmbedding

ITEM_KEYS = ("item_id", "creator_id", "category", "item_dense")
"""Per-position item features of a user sequence, in the order an item-embedding module takes them."""


@dataclass
class SASRecConfig:
    """Sizes of the user tower (the paper follows SASRec on MovieLens: 2 blocks, 1 head, dropout 0.2).

    seq_len: the user's most recent items read (older ones are dropped).
    """

    dim: int = 32
    layers: int = 2
    heads: int = 1
    ff: int = 64
    dropout: float = 0.2
    seq_len: int = 50


class SASRecUserTower(nn.Module):
    """u = normalize(Transformer_causal([BOS; emb(i_1) + p_1; ...; emb(i_n) + p_n])[n]).

    ``item_emb(item_id, creator_id, category, item_dense) -> (..., d)`` embeds the sequence's items
    (IHM shares its static embedding E_S here; SASRec its id table). The learned [BOS] token makes an
    empty sequence (a user's first interaction) well defined. Causal attention means positions <= n
    never see the padding after a row's last item, so no padding mask is needed.

    Batch keys (``seq`` dict): item_id, creator_id, category (B, L_in) int64 and item_dense (B, L_in, F),
    the user's items in time order, any value as padding after the first seq_len[b]; seq_len (B,).
    """

    def __init__(self, cfg: SASRecConfig, item_emb):
        super().__init__()
        self.cfg = cfg
        self.item_emb = item_emb
        d = cfg.dim
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.pos = nn.Parameter(torch.randn(cfg.seq_len + 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ff, cfg.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.drop = nn.Dropout(cfg.dropout)

    def visible(self, seq: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Each row's last ``seq_len`` items, left-aligned, padded only to the batch's longest row: ((B, L) features, (B,) n)."""
        n_in = seq["seq_len"].long()
        B, L_in = seq["item_id"].shape
        longest = int(n_in.max()) if B else 0
        L = max(1, min(self.cfg.seq_len, longest, L_in) if L_in else 1)
        src, n, _ = tail_positions(n_in, L_in, L)  # (B, L) source slots, (B,) kept lengths
        out = {}
        for k in ITEM_KEYS:
            v = seq[k]
            if L_in == 0:
                out[k] = v.new_zeros((B, L) + tuple(v.shape[2:]))
            elif v.dim() == 3:
                out[k] = torch.gather(v, 1, src[..., None].expand(B, L, v.shape[2]))
            else:
                out[k] = torch.gather(v, 1, src)
        return out, n

    def forward_all(self, seq: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, L+1, d) normalised outputs at every position, (B,) n): position j has read the first j visible
        items, so it is the user vector for predicting item j+1 (SASRec's all-position training)."""
        feats, n = self.visible(seq)
        B, L = feats["item_id"].shape
        tok = self.item_emb(*(feats[k] if k != "item_id" else feats[k].clamp(min=0) for k in ITEM_KEYS))  # (B, L, d)
        x = torch.cat([self.bos.expand(B, 1, -1), tok], dim=1) + self.pos[None, : L + 1]  # (B, L+1, d)
        causal = torch.triu(torch.ones(L + 1, L + 1, dtype=torch.bool, device=x.device), 1)  # True = blocked
        y = self.encoder(self.drop(x), mask=causal)  # (B, L+1, d)
        return nn.functional.normalize(y, dim=-1), n

    def forward(self, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        y, n = self.forward_all(seq)  # (B, L+1, d)
        return y[torch.arange(y.shape[0], device=y.device), n]  # (B, d) output at the last real item (BOS when n = 0)


class IdItemTower(nn.Module):
    """SASRec's transductive item table: v = normalize(E(id)). ``embed`` has E_S's signature and is the
    user tower's item-embedding module, so input and output item embeddings are shared as in SASRec."""

    def __init__(self, dim: int, id_buckets: int):
        super().__init__()
        self.id_emb = HashEmbedding(id_buckets, dim)

    def embed(self, item_id, creator_id=None, category=None, item_dense=None) -> torch.Tensor:
        return self.id_emb(item_id)  # (..., d)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.normalize(self.id_emb(batch["item_id"]), dim=-1)  # (B, d)
