"""Every training loss of the arms' models, pure torch (the models only return embeddings or logits; the tasks
in :mod:`trainers.tasks` and the learner pick the losses).

- the base stack: :func:`multitask_bce` (the ranker), :func:`in_batch_softmax` (the two-tower);
- DualRec's creator-side two-tower: :func:`sampled_softmax` over random negatives;
- IHM and the offline retrieval models: :func:`sampled_softmax_logq` (in-batch, logQ-corrected);
- Next-User Retrieval (papers/next_user_retrieval.txt eq. 4-7): :func:`contrastive_loss`,
  :func:`exposure_ce_loss`, :func:`auxiliary_loss`, combined by :class:`NextUserLoss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainers.models.next_user import NextUserOutput


def in_batch_softmax(u: torch.Tensor, v: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sampled softmax with in-batch negatives: row b's positive is v[b], the other rows are negatives.

    u, v: (B, d). Returns the mean cross-entropy of logits u @ v.T / temperature against the diagonal.
    """
    logits = u @ v.T / temperature  # (B, B)
    target = torch.arange(u.shape[0], device=u.device)
    return nn.functional.cross_entropy(logits, target)


def multitask_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over tasks of the mean binary cross-entropy. logits, labels: (B, T); weights: (T,)."""
    per = nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(0)  # (T,)
    if weights is not None:
        per = per * weights
    return per.sum()


def sampled_softmax(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float,
                    neg_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over one positive and sampled negatives per query (random negatives, uniform: no logQ term).

    q, pos: (B, d); neg: (B, R, d); neg_valid: (B, R) bool, False for a negative that is the positive itself
    (an accidental hit, masked out). Returns the mean cross-entropy with the positive at index 0.
    """
    lp = (q * pos).sum(-1, keepdim=True)  # (B, 1)
    ln = torch.einsum("bd,brd->br", q, neg)  # (B, R)
    if neg_valid is not None:
        ln = ln.masked_fill(~neg_valid, float("-inf"))
    logits = torch.cat([lp, ln], 1) / temperature  # (B, 1 + R)
    return nn.functional.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def sampled_softmax_logq(u: torch.Tensor, v: torch.Tensor, item_key: torch.Tensor, log_q: torch.Tensor,
                         tau: float) -> torch.Tensor:
    """Mean in-batch sampled-softmax loss with logQ correction.

    u, v: (B, d) user and positive-item vectors (row b is a positive pair); item_key: (B,) item identity
    (duplicates of row b's item among the negatives are masked); log_q: (B,) log sampling probability of
    each row's item.
    """
    B = u.shape[0]
    logits = u @ v.T / tau - log_q[None, :]  # (B, B)
    dup = (item_key[:, None] == item_key[None, :]) & ~torch.eye(B, dtype=torch.bool, device=u.device)
    logits = logits.masked_fill(dup, float("-inf"))
    return nn.functional.cross_entropy(logits, torch.arange(B, device=u.device))


# ----------------------------------------------------------------------------------- Next-User Retrieval


@dataclass
class NextUserLossConfig:
    """Eq. (4) weights l1..l3, contrastive temperature tau (eq. 5).

    n_random_negatives: how many random users the trainer draws per batch as extra contrastive
    negatives (the loss uses whatever ``random_users`` it is given; 0 = in-batch negatives only).
    ce_temperature: the CE logit is dot(u^_next, u) / ce_temperature; 1.0 is the paper's plain dot
    product (eq. 6). With unit vectors that logit lies in [-1, 1].
    """

    l1: float = 1.0
    l2: float = 1.0
    l3: float = 0.1
    tau: float = 0.1
    n_random_negatives: int = 64
    ce_temperature: float = 1.0


def contrastive_loss(u_next: torch.Tensor, target_user: torch.Tensor, random_users: torch.Tensor | None,
                     tau: float) -> torch.Tensor:
    """Eq. (5), averaged over rows: InfoNCE of u^_next[b] against target_user[b], negatives = the
    other rows' targets and ``random_users``. u_next, target_user: (B, d); random_users: (R, d)."""
    cands = target_user if random_users is None else torch.cat([target_user, random_users], dim=0)  # (B+R, d)
    logits = u_next @ cands.T / tau  # (B, B+R)
    return nn.functional.cross_entropy(logits, torch.arange(u_next.shape[0], device=u_next.device))


def exposure_ce_loss(u_next: torch.Tensor, exposed_users: torch.Tensor, exposed_labels: torch.Tensor,
                     exposed_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Eq. (6), averaged over unmasked exposures: sigmoid BCE of dot(u^_next[b], exposed_users[b, e])
    with label 1 = interacted, 0 = exposed without interaction. Zero when nothing is unmasked.
    u_next: (B, d); exposed_users: (B, E, d); exposed_labels, exposed_mask: (B, E)."""
    logits = torch.einsum("bd,bed->be", u_next, exposed_users) / temperature  # (B, E)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, exposed_labels.float(), reduction="none")  # (B, E)
    m = exposed_mask.to(bce.dtype)
    return (bce * m).sum() / m.sum().clamp(min=1.0)


def auxiliary_loss(u_hat: torch.Tensor, seq_user_emb: torch.Tensor, seq_len: torch.Tensor,
                   target_user: torch.Tensor) -> torch.Tensor:
    """Eq. (7), averaged over items: sum_{j=1}^{n+1} ||sg(u_j) - u^_j||^2 where u_1..u_n are the real
    sequence users and u_{n+1} is the real next user (target_user). Targets are detached (sg).
    u_hat: (B, L+1, d); seq_user_emb: (B, L, d); seq_len: (B,) (clamped to L); target_user: (B, d)."""
    B, L1, d = u_hat.shape
    L = L1 - 1
    if seq_user_emb.shape[1] != L:
        raise ValueError(f"seq_user_emb has {seq_user_emb.shape[1]} slots, u_hat needs {L}")
    n = seq_len.to(u_hat.device).long().clamp(0, L)  # (B,)
    targets = torch.cat([seq_user_emb, seq_user_emb.new_zeros(B, 1, d)], dim=1)  # (B, L+1, d)
    targets = targets.scatter(1, n[:, None, None].expand(B, 1, d), target_user[:, None, :])  # u_{n+1} at slot n
    valid = torch.arange(L1, device=u_hat.device)[None, :] <= n[:, None]  # (B, L+1): j = 1..n+1
    sq = ((targets.detach() - u_hat) ** 2).sum(-1)  # (B, L+1)
    return (sq * valid).sum() / B


class NextUserLoss:
    """L = l1 * contrastive + l2 * CE + l3 * auxiliary (eq. 4) on a ``NextUserOutput``.

    All user vectors (the real next user, random users, exposed users, sequence users) come from the
    caller's user tower; only the auxiliary targets are detached.
    """

    def __init__(self, cfg: NextUserLossConfig):
        self.cfg = cfg

    def __call__(self, out: NextUserOutput, target_user: torch.Tensor, random_users: torch.Tensor | None,
                 exposed_users: torch.Tensor | None, exposed_labels: torch.Tensor | None,
                 exposed_mask: torch.Tensor | None, seq_user_emb: torch.Tensor, seq_len: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
        """target_user: (B, d); random_users: (R, d) or None; exposed_users: (B, E, d) or None (then CE
        is 0); exposed_labels, exposed_mask: (B, E); seq_user_emb: (B, L, d); seq_len: (B,)."""
        cfg = self.cfg
        con = contrastive_loss(out.u_next, target_user, random_users, cfg.tau)
        if exposed_users is None:
            ce = out.u_next.new_zeros(())
        else:
            ce = exposure_ce_loss(out.u_next, exposed_users, exposed_labels, exposed_mask, cfg.ce_temperature)
        aux = auxiliary_loss(out.u_hat, seq_user_emb, seq_len, target_user)
        total = cfg.l1 * con + cfg.l2 * ce + cfg.l3 * aux
        return {"total": total, "contrastive": con, "ce": ce, "aux": aux}
