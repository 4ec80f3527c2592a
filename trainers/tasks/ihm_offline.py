"""The offline IHM protocol's training task: two-tower next-item training with in-batch sampled softmax and logQ
correction (pure torch), for IHM and its two baselines on a logged dataset (:mod:`simulator.run.offline_ihm`).
The online IHM task of an arm is :mod:`trainers.tasks.ihm_online`.

One target is one positive interaction (user u likes item i at time t): the user tower's output
after u's items before t, the item tower on i's features (and, for IHM, the users who interacted
with i before t). Targets come in user sequences, every position predicting the next item (SASRec).
Three item towers share the task, built by :data:`RETRIEVAL_MODELS`:

* ``ihm``: the Item History Model (``trainers.models.ihm``) vs a SASRec user tower over E_S;
* ``transductive``: the same two-tower with the history switched off (item tower = E_S of id,
  creator, category, content), the paper's "no inductive structure" model trained on its own;
* ``sasrec``: SASRec next-item: one id embedding table is both the item tower and the user
  tower's input (no features, no history).

Loss (Yi et al. 2019, sampled softmax with logQ correction, in-batch negatives;
:func:`trainers.losses.sampled_softmax_logq`):
  l = -log softmax_j( cos(u_b, v_j) / tau - log q_j )[b],  j over the batch's items,
where q_j is item j's share of the training positives (the in-batch sampling probability up to a
constant) and columns j != b holding the same item as b are masked (accidental hits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from trainers.losses import sampled_softmax_logq
from trainers.models.ihm import IHMConfig, ItemHistoryModel
from trainers.models.sasrec import IdItemTower, SASRecConfig, SASRecUserTower


class RetrievalTask:
    """Owns an item tower, a user tower, the loss and the optimiser.

    A batch holds S user sequences and P targets (SASRec's all-position training: every position of a
    sequence predicts the next item). Keys: ``seq``, the user tower's dict (S sequences); target_seq,
    target_pos (P,) int64: target p is predicted by position target_pos[p] of sequence target_seq[p]
    (the user vector after reading that many items); item_row (P,) (index into ``log_q``) and the item
    tower's keys for the P target items (item_id, creator_id, category, item_dense; hist_users/hist_len).
    """

    def __init__(self, name: str, item_tower: nn.Module, user_tower: nn.Module, log_q: torch.Tensor, tau: float,
                 lr: float):
        self.name = name
        self.item_tower = item_tower
        self.user_tower = user_tower
        self.log_q = log_q.float()
        self.tau = tau
        params = {id(p): p for m in (item_tower, user_tower) for p in m.parameters()}  # shared modules once
        self.opt = torch.optim.Adam(list(params.values()), lr=lr)

    def loss(self, batch: dict) -> torch.Tensor:
        y, _ = self.user_tower.forward_all(batch["seq"])  # (S, L+1, d)
        u = y[batch["target_seq"], batch["target_pos"]]  # (P, d)
        v = self.item_tower(batch)  # (P, d)
        return sampled_softmax_logq(u, v, batch["item_row"], self.log_q[batch["item_row"]], self.tau)

    def step(self, batch: dict) -> float:
        self.item_tower.train()
        self.user_tower.train()
        loss = self.loss(batch)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def items(self, batch: dict) -> torch.Tensor:
        """(B, d) item vectors in eval mode."""
        self.item_tower.eval()
        return self.item_tower(batch)

    @torch.no_grad()
    def users(self, seq: dict) -> torch.Tensor:
        """(B, d) user vectors in eval mode."""
        self.user_tower.eval()
        return self.user_tower(seq)


@dataclass(frozen=True)
class RetrievalSizes:
    """What every retrieval model of the offline protocol is built from."""

    ihm: IHMConfig
    sasrec: SASRecConfig
    tau: float = 0.1
    lr: float = 1e-3
    seed: int = 0


def build_ihm(s: RetrievalSizes, log_q: torch.Tensor) -> RetrievalTask:
    """IHM item tower vs a SASRec user tower over the shared static embedding E_S."""
    torch.manual_seed(s.seed)
    item = ItemHistoryModel(s.ihm)
    return RetrievalTask("ihm", item, SASRecUserTower(s.sasrec, item.static), log_q, s.tau, s.lr)


def build_transductive(s: RetrievalSizes, log_q: torch.Tensor) -> RetrievalTask:
    """The same two-tower with the item history switched off (e_i = E_S)."""
    task = build_ihm(replace(s, ihm=replace(s.ihm, static_only=True)), log_q)
    task.name = "transductive"
    return task


def build_sasrec(s: RetrievalSizes, log_q: torch.Tensor) -> RetrievalTask:
    """SASRec next-item: one id table is the item tower and the user tower's input."""
    torch.manual_seed(s.seed)
    item = IdItemTower(s.ihm.dim, s.ihm.id_buckets)
    return RetrievalTask("sasrec", item, SASRecUserTower(s.sasrec, item.embed), log_q, s.tau, s.lr)


RETRIEVAL_MODELS: dict[str, Callable[[RetrievalSizes, torch.Tensor], RetrievalTask]] = {
    "ihm": build_ihm, "transductive": build_transductive, "sasrec": build_sasrec,
}
"""Model name -> constructor of its training task (the only place these names map to code)."""
