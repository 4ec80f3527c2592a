"""Next-User Retrieval model (papers/next_user_retrieval.txt, section 2): an item's prefix prompts and
its interacted-user sequence -> generated user embeddings u^_1..u^_{L+1} and u^_next."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainers.models.sequence import tail_positions
from trainers.models.two_tower import HashEmbedding, mlp

MODES = ("full", "lookalike")


@dataclass
class NextUserConfig:
    """Sizes and the paper's Table 1 ablation switches.

    mode: "full" (encoder-decoder transformer) or "lookalike" (Table 1 variant 1: sum-pooled
    sequence + prefix -> MLP, no transformer; only ``u_next`` is meaningful, ``u_hat`` is zeros).
    mask_prefix: the prefix prompts carry no item feature (variant 2): each of the k prefix tokens is
    replaced by a learned, feature-free [MASK] embedding, so the attention structure is unchanged.
    seq_len: the maximum number of sequence users L (the paper's 50; variant 3 halves it to 25);
    longer sequences keep their last (most recent) L users.
    use_cls: append the learned [CLS] token (variant 4 sets False).
    causal: the paper's prefix-unmasked causal attention (variant 5 sets False: every token and every
    decoder query sees every valid token).
    ``layers`` is the depth of the encoder and of the decoder each.
    """

    dim: int = 32
    heads: int = 2
    layers: int = 2
    ff: int = 64
    dropout: float = 0.0
    seq_len: int = 50
    id_buckets: int = 1 << 15
    n_categories: int = 1024
    n_item_dense: int = 1
    mode: str = "full"
    mask_prefix: bool = False
    use_cls: bool = True
    causal: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    @property
    def n_prefix(self) -> int:
        """k: one prefix token per item feature (item id, category, creator id, dense projection)."""
        return 3 + int(self.n_item_dense > 0)


@dataclass
class NextUserOutput:
    """Generated user embeddings, each L2-normalised (unit length, like the two-tower's vectors), so
    the dot product with a requesting user's two-tower vector is a cosine.

    u_hat: (B, L+1, d); u_hat[:, j-1] is u^_j, generated from the prefixes and users 1..j-1 only.
    Slots past a row's length + 1 are computed but meaningless (the loss masks them).
    u_next: (B, d) generated from everything (prefixes, all real users, [CLS]): what goes into the index.
    """

    u_hat: torch.Tensor
    u_next: torch.Tensor


# ----------------------------------------------------------------------------------- pure helpers


def truncate_sequence(seq_users: torch.Tensor, seq_len: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each row's last ``max_len`` real users (the most recent), left-aligned, padded with -1.

    seq_users: (B, L_in) int64 in time order, padding after row b's first seq_len[b] entries.
    Returns (users (B, max_len), lengths (B,) = min(seq_len, max_len)). Callers use it to compute
    the auxiliary targets for exactly the users the model sees.
    """
    B, L_in = seq_users.shape
    src, kept, valid = tail_positions(seq_len.to(seq_users.device), L_in, max_len)  # (B, L), (B,), (B, L)
    if L_in == 0:
        return torch.full((B, max_len), -1, dtype=seq_users.dtype, device=seq_users.device), kept
    users = torch.gather(seq_users, 1, src)
    return torch.where(valid, users, torch.full_like(users, -1)), kept


def _layout(k: int, L: int, use_cls: bool, device) -> tuple[torch.Tensor, ...]:
    """Token kinds of the encoder sequence [p_1..p_k, u_1..u_L, (CLS)]: (T,) masks and user slots."""
    if k < 1:
        raise ValueError("at least one prefix token is needed (u^_1 attends only to prefixes)")
    pos = torch.arange(k + L + int(use_cls), device=device)  # (T,)
    is_prefix = pos < k
    is_user = (pos >= k) & (pos < k + L)
    is_cls = pos == k + L if use_cls else torch.zeros_like(is_prefix)
    return pos, is_prefix, is_user, is_cls, pos - k


def _real_keys(k: int, L: int, seq_len: torch.Tensor, use_cls: bool) -> torch.Tensor:
    """(B, T) True for prefix tokens, real users (slot < seq_len) and [CLS]; False for padding."""
    _, is_prefix, is_user, is_cls, slot = _layout(k, L, use_cls, seq_len.device)
    n = seq_len.long().clamp(0, L)[:, None]  # (B, 1)
    return (is_prefix | is_cls)[None, :] | (is_user[None, :] & (slot[None, :] < n))


def encoder_attention_mask(k: int, L: int, seq_len: torch.Tensor, causal: bool = True, use_cls: bool = True) -> torch.Tensor:
    """Encoder self-attention mask over [p_1..p_k, u_1..u_L, CLS] (CLS at the fixed last slot).

    Convention (PyTorch's): True = blocked. Returns (B, T, T) bool with T = k + L + use_cls,
    entry [b, query, key]. Causal (the paper's Fig. 1): every token sees all prefixes; prefixes see
    only prefixes; user j sees users <= j; [CLS] sees everything. Non-causal: every token sees every
    token. Padding keys (user slots >= seq_len[b]) are blocked in every row.
    """
    B = seq_len.shape[0]
    pos, is_prefix, is_user, is_cls, _ = _layout(k, L, use_cls, seq_len.device)
    real = _real_keys(k, L, seq_len, use_cls)  # (B, T)
    if not causal:
        return ~real[:, None, :].expand(B, pos.numel(), pos.numel()).clone()
    q, key = pos[:, None], pos[None, :]  # (T, 1), (1, T)
    sees_user = (is_user[:, None] & (key <= q)) | is_cls[:, None]  # (T, T) for user keys
    allowed = is_prefix[None, :] | (is_user[None, :] & sees_user) | (is_cls[None, :] & is_cls[:, None])  # (T, T)
    return ~(allowed[None] & real[:, None, :])  # (B, T, T)


def decoder_attention_mask(k: int, L: int, seq_len: torch.Tensor, causal: bool = True, use_cls: bool = True) -> torch.Tensor:
    """Cross-attention mask of the L+2 decoder queries over the encoder outputs.

    Convention: True = blocked. Returns (B, L+2, T) bool. Query q < L+1 produces u^_{q+1}: causal,
    it sees all prefixes and users 1..q (those before u_{q+1}); u^_1 sees only prefixes; never [CLS].
    Query L+1 produces u^_next and sees everything. Non-causal: every query sees every token.
    Padding keys are blocked everywhere.
    """
    B = seq_len.shape[0]
    _, is_prefix, is_user, is_cls, slot = _layout(k, L, use_cls, seq_len.device)
    real = _real_keys(k, L, seq_len, use_cls)  # (B, T)
    Q = L + 2
    if not causal:
        return ~real[:, None, :].expand(B, Q, real.shape[1]).clone()
    qi = torch.arange(Q, device=seq_len.device)[:, None]  # (Q, 1)
    allowed = is_prefix[None, :] | (is_user[None, :] & (slot[None, :] < qi)) | (qi == Q - 1)  # (Q, T)
    return ~(allowed[None] & real[:, None, :])  # (B, Q, T)


def query_attention_mask(L: int, seq_len: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Self-attention mask among the L+2 decoder queries. True = blocked; (B, L+2, L+2).

    Valid queries are u^_1..u^_{n+1} (n = seq_len[b]) and u^_next; the others are blocked as keys.
    Causal: query of u^_j sees the queries of u^_1..u^_j (they carry a subset of what it may see, so
    causality holds); u^_next sees all valid queries. Non-causal: every query sees all valid queries.
    """
    B, Q = seq_len.shape[0], L + 2
    qi = torch.arange(Q, device=seq_len.device)
    n = seq_len.long().clamp(0, L)[:, None]  # (B, 1)
    valid = (qi[None, :] <= n) | (qi[None, :] == Q - 1)  # (B, Q)
    if not causal:
        return ~valid[:, None, :].expand(B, Q, Q).clone()
    allowed = (qi[None, :] <= qi[:, None]) | (qi[:, None] == Q - 1)  # (Q, Q)
    return ~(allowed[None] & valid[:, None, :])  # (B, Q, Q)


# ----------------------------------------------------------------------------------- backbones


class _TransformerBackbone(nn.Module):
    """Eq. (2)-(3): encoder over [prefixes; users + positions; CLS], decoder of L+2 learned queries."""

    def __init__(self, cfg: NextUserConfig):
        super().__init__()
        self.cfg = cfg
        d, L = cfg.dim, cfg.seq_len
        self.pos = nn.Parameter(torch.randn(L, d) * 0.02)
        self.cls = nn.Parameter(torch.randn(d) * 0.02) if cfg.use_cls else None
        self.queries = nn.Parameter(torch.randn(L + 2, d) * 0.02)  # q in R^{(n+2) x d}
        enc = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ff, cfg.dropout, batch_first=True, norm_first=True)
        dec = nn.TransformerDecoderLayer(d, cfg.heads, cfg.ff, cfg.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, cfg.layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, cfg.layers, norm=nn.LayerNorm(d))
        self.head = nn.Linear(d, d)

    def forward(self, prefix: torch.Tensor, user_tokens: torch.Tensor, n: torch.Tensor) -> NextUserOutput:
        cfg = self.cfg
        B, k, d = prefix.shape
        L, H = user_tokens.shape[1], cfg.heads  # L <= cfg.seq_len: the batch's longest visible sequence
        parts = [prefix, user_tokens + self.pos[None, :L]]  # (B, k, d), (B, L, d)
        if self.cls is not None:
            parts.append(self.cls.expand(B, 1, d))  # (B, 1, d)
        x = torch.cat(parts, dim=1)  # (B, T, d)
        enc_mask = encoder_attention_mask(k, L, n, cfg.causal, cfg.use_cls)  # (B, T, T)
        o = self.encoder(x, mask=enc_mask.repeat_interleave(H, 0))  # (B, T, d)
        mem_mask = decoder_attention_mask(k, L, n, cfg.causal, cfg.use_cls)  # (B, L+2, T)
        tgt_mask = query_attention_mask(L, n, cfg.causal)  # (B, L+2, L+2)
        q = torch.cat([self.queries[: L + 1], self.queries[-1:]]).expand(B, L + 2, d)  # q_1..q_{L+1}, q_next
        y = self.decoder(q, o, tgt_mask=tgt_mask.repeat_interleave(H, 0),
                         memory_mask=mem_mask.repeat_interleave(H, 0))  # (B, L+2, d)
        u = nn.functional.normalize(self.head(y), dim=-1)  # (B, L+2, d)
        return NextUserOutput(u_hat=u[:, : L + 1], u_next=u[:, L + 1])


class _LookalikeBackbone(nn.Module):
    """Table 1 variant 1 (traditional lookalike): MLP([sum of user tokens; prefixes]) -> u_next."""

    def __init__(self, cfg: NextUserConfig):
        super().__init__()
        self.cfg = cfg
        self.net = mlp((cfg.n_prefix + 1) * cfg.dim, cfg.ff, cfg.dim)

    def forward(self, prefix: torch.Tensor, user_tokens: torch.Tensor, n: torch.Tensor) -> NextUserOutput:
        B, L, d = user_tokens.shape
        valid = torch.arange(L, device=n.device)[None, :] < n[:, None]  # (B, L)
        pooled = (user_tokens * valid[..., None]).sum(1)  # (B, d) sum pooling over real users
        x = torch.cat([pooled, prefix.flatten(1)], dim=-1)  # (B, (k+1) d)
        u_next = nn.functional.normalize(self.net(x), dim=-1)  # (B, d)
        return NextUserOutput(u_hat=u_next.new_zeros(B, L + 1, d), u_next=u_next)


_BACKBONES = {"full": _TransformerBackbone, "lookalike": _LookalikeBackbone}


class NextUserModel(nn.Module):
    """Generates, for an item, the embedding of the next user likely to interact with it.

    ``user_emb`` maps sequence user ids (>= 0; padding reaches it as id 0 and is masked) to the
    (B, L, d) input tokens; by default the model owns a ``HashEmbedding``. The requesting-user tower is not part of the model: the loss receives its
    vectors. Batch keys: item_id, category, creator_id (B,) int64; item_dense (B, Fi) float;
    seq_users (B, L_in) int64 in time order, -1 padding at the end; seq_len (B,).
    """

    def __init__(self, cfg: NextUserConfig, user_emb: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.user_emb = user_emb if user_emb is not None else HashEmbedding(cfg.id_buckets, d)
        if cfg.mask_prefix:
            self.prefix_mask = nn.Parameter(torch.randn(cfg.n_prefix, d) * 0.02)  # feature-free [MASK] prompts
        else:
            self.item_emb = HashEmbedding(cfg.id_buckets, d)
            self.cat_emb = HashEmbedding(cfg.n_categories, d)
            self.creator_emb = HashEmbedding(cfg.id_buckets, d)
            self.dense_proj = nn.Linear(cfg.n_item_dense, d) if cfg.n_item_dense > 0 else None
        self.backbone = _BACKBONES[cfg.mode](cfg)

    def prefix_prompts(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """p_1..p_k: (B, k, d), one token per item feature (or the learned [MASK] tokens)."""
        B = batch["item_id"].shape[0]
        if self.cfg.mask_prefix:
            return self.prefix_mask.expand(B, -1, -1)
        toks = [self.item_emb(batch["item_id"]), self.cat_emb(batch["category"]), self.creator_emb(batch["creator_id"])]
        if self.dense_proj is not None:
            toks.append(self.dense_proj(batch["item_dense"].float()))
        return torch.stack(toks, dim=1)  # (B, k, d)

    def visible_sequence(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The users the model reads: each row's last ``seq_len`` users, padded only to the batch's longest row.

        Returns ((B, L) ids, (B,) lengths) with L = min(cfg.seq_len, max length in the batch) >= 1; the
        outputs do not depend on L (padding is masked), so short cold-item sequences cost little.
        """
        longest = int(batch["seq_len"].max()) if batch["seq_len"].numel() else 0
        return truncate_sequence(batch["seq_users"], batch["seq_len"], max(1, min(self.cfg.seq_len, longest)))

    def forward(self, batch: dict[str, torch.Tensor]) -> NextUserOutput:
        users, n = self.visible_sequence(batch)  # (B, L), (B,)
        user_tokens = self.user_emb(users.clamp(min=0))  # (B, L, d); padding slots are masked downstream
        return self.backbone(self.prefix_prompts(batch), user_tokens, n)
