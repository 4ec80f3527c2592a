"""The Channel base class: every hook an arm's :class:`serving.stack.ArmPolicy` calls on its channels, each with a
no-op default, and the records the hooks exchange (the request batch, a retrieval, the truth's candidates).

A channel retrieves candidates for requests and may take part in the rest of the arm's work: uploads, feedback,
weight pushes, the final ranking, the served slate, feature logging for training, the end of a day and
checkpoints. ``ArmPolicy`` calls each hook on every channel, in channel order; a channel overrides the hooks of
its strategy and inherits the no-ops. Every hook gets what it needs as arguments: what a channel keeps between
calls is its state, checkpointed through ``state`` / ``load_state``.

Serving a batch happens in three steps so that an arm can be served by several shards (:mod:`serving.shards`),
each holding the whole arm's state and computing the slates of the users it owns:

1. ``on_requests`` sees the whole batch, on every shard: state a request changes (visits, the clock, work that
   falls due) changes here, from the users and times alone.
2. ``retrieve``, ``rerank`` and ``log_features`` see only the shard's rows (``RequestContext``) and must not change
   the channel's state: random draws go through :meth:`RequestContext.random` (drawn for the whole batch, then
   the shard's rows kept), and what the channel learns from its candidates goes to ``ctx.effects[name]``.
3. ``on_served`` (the whole batch's slates) and ``apply_effects`` (every shard's ``effects``) run on every shard.

One shard (the default) is the same sequence with every row owned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ``ArmPolicy`` in the annotations is serving.stack.ArmPolicy, not imported: serving.stack imports this module


@dataclass
class RequestContext:
    """The requests a shard serves: user rows in the feature store, request times, lazily the user vectors.

    ``batch_ts`` are the whole batch's request times and ``own`` the positions of this shard's requests in it (None:
    all of them, one shard), ``batch`` the whole batch's context (for work that needs every row); ``effects`` collects what the channels learnt from these rows (``apply_effects``)."""

    user_rows: np.ndarray
    ts: np.ndarray
    rng: np.random.Generator | None  # None where nothing may be drawn (ArmPolicy.commit)
    policy: ArmPolicy
    batch_ts: np.ndarray | None = None
    own: np.ndarray | None = None
    batch: RequestContext | None = None  # the whole batch's context (None: this is it)
    effects: dict[str, Any] = field(default_factory=dict)
    _user_vecs: np.ndarray | None = None

    def __post_init__(self):
        if self.batch_ts is None:
            self.batch_ts = self.ts

    @property
    def n(self) -> int:
        return len(self.user_rows)

    def random(self, *shape: int) -> np.ndarray:
        """Uniform draws of shape (n, *shape) for these requests: drawn for the whole batch and cut to the shard's
        rows, so a request gets the same draws whichever shard serves it."""
        draws = self.rng.random((len(self.batch_ts), *shape))
        return draws if self.own is None else draws[self.own]

    @property
    def user_vecs(self) -> np.ndarray:
        """(n, d) the requesting users' vectors from the arm's two-tower (computed once per batch)."""
        if self._user_vecs is None:
            self._user_vecs = self.policy.user_vectors(self.user_rows)
        return self._user_vecs


@dataclass
class Retrieval:
    """What ``retrieve`` returns: (n, k) item rows of the arm's feature store (not item ids), -1 where there is
    nothing, and optionally a score per candidate that the channel's ``rerank`` reads back.

    ``columns`` is set by ``ArmPolicy``: where this block sits in the batch's candidate matrix."""

    rows: np.ndarray
    scores: np.ndarray | None = None
    columns: slice = field(default_factory=lambda: slice(0, 0))

    @classmethod
    def empty(cls, n: int) -> "Retrieval":
        """No candidates for any of ``n`` requests."""
        return cls(np.full((n, 0), -1, np.int64))


@dataclass
class OracleCandidates:
    """The world's truth about new items, sent by the driver only to the positive-control arm: (n, C) user ids per
    item, best first, -1 padded, and their true scores."""

    user_ids: np.ndarray
    scores: np.ndarray


class Channel:
    """A retrieval channel of an arm, and its part in the arm's other work (one hook per event, no-op defaults).

    Subclasses set ``name`` (unique in an arm; the channel column of exposures, and the key of the strategy's
    weights and checkpoint state) and override the hooks they need. ``policy`` is the calling
    :class:`serving.stack.ArmPolicy`: its ``store`` (:class:`serving.features.FeatureStore`), ``index``,
    ``two_tower``, ``user_vectors`` and ``item_vectors``.
    """

    name: str = ""
    NOT_SAVED: tuple[str, ...] = ()  # attributes the constructor rebuilds (trainers.checkpoint)

    def on_requests(self, policy: ArmPolicy, ctx: RequestContext) -> None:
        """A batch of requests arrived (``ArmPolicy.recommend``, before any retrieval; ``ctx`` is the whole batch, on
        every shard): the state requests change, from the users and request times alone."""

    def retrieve(self, ctx: RequestContext) -> Retrieval:
        """Candidates for the shard's requests (``ArmPolicy.recommend``, first step; no state change)."""
        return Retrieval.empty(ctx.n)

    def on_upload(self, policy: ArmPolicy, rows: np.ndarray,
                  oracle: OracleCandidates | None) -> dict[int, list[int]]:
        """New items (their ``rows``) are in the store and the item index (``ArmPolicy.upload_items``).

        ``oracle``: the truth's candidate users of each new item, for the positive control only (None otherwise).
        Returns creator-side target users {item id: [user ids]} (the upload's ``ArmPolicy.last_targets``)."""
        return {}

    def on_feedback(self, policy: ArmPolicy, rows: np.ndarray, now: int) -> None:
        """A feedback batch was recorded (``ArmPolicy.feedback``); ``rows``: the items that gained a positive
        (like/comment); ``now``: the batch's latest time."""

    def on_weights(self, policy: ArmPolicy, weights: dict[str, dict[str, np.ndarray]], now: int | None) -> None:
        """New weights from the learner (``ArmPolicy.set_weights``, after the base models and item index):
        ``weights[self.name]`` holds the strategy's own (:meth:`trainers.tasks.base.Task.weights`)."""

    def rerank(self, policy: ArmPolicy, ctx: RequestContext, cand: np.ndarray, chan: np.ndarray, valid: np.ndarray,
               score: np.ndarray, retrieval: Retrieval) -> tuple[np.ndarray, np.ndarray]:
        """The final ranking (``ArmPolicy.recommend``, after the ranker and the new-item boost): (n, C) candidate
        rows ``cand``, the channel index of each ``chan``, ``valid`` and ``score``; ``retrieval`` is what this
        channel's ``retrieve`` returned for these requests. Returns the new (score, valid); no state change."""
        return score, valid

    def on_served(self, policy: ArmPolicy, ctx: RequestContext, rows: np.ndarray, chan: np.ndarray,
                  valid: np.ndarray) -> None:
        """The slates are chosen (``ArmPolicy.recommend``, after ``log_features``; the whole batch, on every shard):
        (n, S) item rows (0 where not valid), their channel indices and validity."""

    def apply_effects(self, policy: ArmPolicy, parts: list[Any]) -> None:
        """What ``retrieve``/``rerank`` left in ``ctx.effects[self.name]``, one entry per shard that served part of
        the batch (in shard order; every shard gets them all): fold them into the channel's state."""

    def log_features(self, policy: ArmPolicy, ctx: RequestContext, rows: np.ndarray,
                     valid: np.ndarray) -> dict[str, np.ndarray]:
        """Training features as served, {name: (n, S, ...)} per slate slot (``ArmPolicy.recommend``, into
        ``Slates.extra``; the strategy's task trains on them). No state change; the widths may not depend on which
        rows a shard serves."""
        return {}

    def on_day_end(self, policy: ArmPolicy, ts: int) -> dict[str, float]:
        """The simulated day ended at ``ts`` (``ArmPolicy.end_day``): daily work; returns diagnostics to log."""
        return {}

    def state(self) -> Any:
        """The channel's state record for checkpoints (:mod:`trainers.checkpoint`); None: nothing to save."""
        return None

    def load_state(self, state: Any) -> None:
        """Restore a record of :meth:`state` (``ArmPolicy.restore``)."""
