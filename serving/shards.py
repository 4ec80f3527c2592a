"""Sharded arms: one arm served by several shards, each owning a disjoint part of the users.

Every shard holds the arm's whole state (items, features, indexes, weights, the channels' state): uploads, feedback,
weights and day ends go to every shard, so the item side is the same everywhere. A batch of requests is served in
two steps (:meth:`serving.stack.ArmPolicy.serve_part` and :meth:`~serving.stack.ArmPolicy.commit`): every shard
records the whole batch's requests and computes the slates of the users it owns (a stable hash of the user id),
concurrently; then every shard is told the whole batch's slates and what each shard's channels learnt. Random draws
are made for the whole batch and cut to a shard's rows, so any number of shards gives the slates of one, bit for
bit (docs/architecture.md, Sharded arms; tests/serving/test_shards.py).

:class:`ShardedArm` is the in-process form (the local runtime, tests); the Ray runtime and the HTTP gateway send the
same two calls to a Serve deployment per shard (:mod:`serving.app`).
"""

from __future__ import annotations

import math

import numpy as np

from serving.stack import ArmPolicy, ServedPart, Slates

_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def shard_of(user_ids: np.ndarray, shards: int) -> np.ndarray:
    """The shard owning each user: splitmix64 of the id, modulo ``shards`` (the same in every process and run)."""
    x = np.asarray(user_ids, np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MIX[0]
        x = (x ^ (x >> np.uint64(27))) * _MIX[1]
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(shards)).astype(np.int64)


def owners(user_ids: np.ndarray, shards: int) -> list[np.ndarray]:
    """The positions in the batch of each shard's requests."""
    which = shard_of(user_ids, shards)
    return [np.flatnonzero(which == k) for k in range(shards)]


def merge_slates(parts: list[Slates], own: list[np.ndarray], n: int) -> Slates:
    """The batch's slates from each shard's (``own[k]``: the positions of shard k's requests)."""
    first = parts[0]

    def merged(pick):
        out = np.empty((n,) + pick(first).shape[1:], pick(first).dtype)
        for part, rows in zip(parts, own):
            out[rows] = pick(part)
        return out

    fields = ("item_ids", "channel", "creator_id", "category", "upload_ts", "user_dense", "item_dense", "pair_dense",
              "score")
    values = {name: merged(lambda part, name=name: getattr(part, name)) for name in fields}
    extra = {key: merged(lambda part, key=key: part.extra[key]) for key in first.extra}
    return Slates(channel_names=first.channel_names, extra=extra, **values)


def merge_parts(parts: list[ServedPart], own: list[np.ndarray], n: int) -> tuple[Slates, list[dict], int]:
    """The batch's slates, every shard's effects and the non-finite scores dropped, from the shards' parts."""
    return (merge_slates([p.slates for p in parts], own, n), [p.effects for p in parts],
            sum(p.nonfinite for p in parts))


def same_diagnostics(outputs: list[dict[str, float]]) -> bool:
    """Whether every shard reported the same day-end diagnostics (NaN equals NaN): shards that differ diverged."""
    first = outputs[0]
    for other in outputs[1:]:
        if other.keys() != first.keys():
            return False
        for key, value in first.items():
            a, b = value, other[key]
            if not (a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))):
                return False
    return True


class ShardDivergence(RuntimeError):
    """Shards of one arm no longer hold the same state (a bug: they are given the same calls in the same order)."""


def agreed_diagnostics(arm: str, ts: int, outputs: list[dict[str, float]]) -> dict[str, float]:
    """The day-end diagnostics every shard of ``arm`` reported alike; :class:`ShardDivergence` if they differ."""
    if not same_diagnostics(outputs):
        raise ShardDivergence(f"the shards of arm '{arm}' reported different diagnostics at the day end {ts}")
    return outputs[0]


class ShardedArm:
    """An arm served by ``len(shards)`` :class:`ArmPolicy` shards in this process; quacks like one ArmPolicy."""

    def __init__(self, shards: list[ArmPolicy]):
        if not shards:
            raise ValueError("a sharded arm needs at least one shard")
        self.shards = shards
        self.name = shards[0].name

    # what callers read from an arm (the HTTP endpoint, checks): shard 0's, the same on every shard
    @property
    def store(self):
        return self.shards[0].store

    @property
    def weights_version(self) -> int:
        return self.shards[0].weights_version

    @property
    def last_targets(self) -> dict[int, list[int]]:
        return self.shards[0].last_targets

    @property
    def channel_names(self) -> list[str]:
        return self.shards[0].channel_names

    def upload_items(self, item_ids, creator_ids, upload_ts, category, dense, oracle=None) -> np.ndarray:
        rows = [p.upload_items(item_ids, creator_ids, upload_ts, category, dense, oracle=oracle) for p in self.shards]
        return rows[0]

    def recommend(self, user_ids: np.ndarray, ts: np.ndarray, seed: int) -> Slates:
        user_ids = np.asarray(user_ids, np.int64)
        own = owners(user_ids, len(self.shards))
        parts = [p.serve_part(user_ids, ts, seed, rows) for p, rows in zip(self.shards, own)]
        slates, effects, nonfinite = merge_parts(parts, own, len(user_ids))
        for p in self.shards:
            p.commit(user_ids, ts, slates.item_ids, slates.channel, effects, nonfinite)
        return slates

    def feedback(self, user_ids, item_ids, ts, labels) -> np.ndarray:
        return [p.feedback(user_ids, item_ids, ts, labels) for p in self.shards][0]

    def set_weights(self, version: int, weights: dict, ts: int | None = None) -> None:
        for p in self.shards:
            p.set_weights(version, weights, ts)

    def end_day(self, ts: int) -> dict[str, float]:
        return agreed_diagnostics(self.name, ts, [p.end_day(ts) for p in self.shards])

    def base_weights_digest(self) -> str:
        return self.shards[0].base_weights_digest()

    def snapshot(self) -> bytes:
        return self.shards[0].snapshot()  # every shard holds the same state

    def restore(self, data: bytes) -> None:
        for p in self.shards:
            p.restore(data)
