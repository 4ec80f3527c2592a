"""What an HTTP client may do to an arm (:class:`ArmEndpoint`, next to the plain policy), and the backends the API's
handlers send validated requests to: endpoints in this process, or (:mod:`serving.app`) Serve deployment handles."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from simulator.core.ids import UnknownIdError
from simulator.core.schema import SECONDS_PER_DAY
from serving.stack import ArmPolicy, Slates

MAX_DAY_GAP_DAYS = 31  # an end of day at most this many days after the previous one (daily work sizes by days)


class ClientError(Exception):
    """A request the arm refuses: ``status`` 409 (conflicts with the arm's state) or 422 (``detail`` a list of
    field errors). Crosses Ray as itself (picklable)."""

    def __init__(self, status: int, detail: str | list[dict[str, Any]]):
        super().__init__(status, detail)
        self.status = status
        self.detail = detail


class ArmEndpoint:
    """One arm as HTTP clients see it: the plain policy, whether a simulation drives it, its last day end.

    The Serve deployment and :class:`LocalBackend` both go through it, so the rules are the same in-process and
    on Ray. The driver never does: it calls the policy directly (and :meth:`end_day` with ``driver=True``).
    """

    def __init__(self, name: str, policy: ArmPolicy, driven: bool = False, truth_matched: bool = False):
        """``truth_matched``: the arm matches new items with the world's truth (the positive control), which only
        a simulation can send with an upload."""
        self.name = name
        self.policy = policy
        self.driven = driven
        self.truth_matched = truth_matched
        self.last_day_end: int | None = None

    @property
    def feature_width(self) -> int:
        return self.policy.store.n_item_dense

    def release(self) -> None:
        """The simulation is done with the arm: from now on it is on its own and takes uploads and day ends."""
        self.driven = False

    def info(self) -> dict:
        store = self.policy.store
        return {"arm": self.name, "driven": self.driven, "uploads": not (self.driven or self.truth_matched),
                "feature_width": self.feature_width, "items": store.n_items, "users": len(store.users),
                "weights_version": self.policy.weights_version, "last_day_end": self.last_day_end}

    def recommend(self, user_ids: np.ndarray, ts: np.ndarray, seed: int) -> Slates:
        return self.policy.recommend(user_ids, ts, seed)

    def upload(self, items: dict) -> dict[int, list[int]]:
        """New items from a client: id, creator, upload time and category arrays and ``features``, a list per item
        of the arm's width or empty (zeros); returns DualRec's target users."""
        if self.driven:
            raise ClientError(409, f"arm '{self.name}' is driven by a running simulation: its uploads come from the "
                                   "simulation's creators (the world must know every item it responds to); upload "
                                   "over HTTP to an arm served on its own, or after the run")
        if self.truth_matched:
            raise ClientError(409, f"arm '{self.name}' matches new items with the world's truth (the positive "
                                   "control), which only a simulation sends with an upload: it takes no HTTP uploads")
        ids, width = np.asarray(items["item_id"], np.int64), self.feature_width
        wrong = [(row, len(features)) for row, features in enumerate(items["features"]) if len(features) not in (0, width)]
        if wrong:
            raise ClientError(422, [{"type": "feature_width", "loc": ["body", "items", row, "features"],
                                     "msg": f"arm '{self.name}' takes {width} content feature(s) per item (or none: "
                                            f"zeros), got {count}"} for row, count in wrong])
        known = self.policy.store.items.contains(ids)
        if known.any():
            raise ClientError(409, f"{int(known.sum())} item id(s) already in arm '{self.name}', e.g. "
                                   f"{ids[known][:5].tolist()}: an upload adds new items only")
        dense = np.zeros((len(ids), width), np.float32)
        for row, features in enumerate(items["features"]):
            if features:
                dense[row] = features
        self.policy.upload_items(ids, items["creator_id"], items["upload_ts"], items["category"], dense)
        return self.policy.last_targets

    def feedback(self, user_ids, item_ids, ts, labels) -> None:
        unknown = ~self.policy.store.items.contains(np.asarray(item_ids, np.int64))
        if unknown.any():  # checked before anything is recorded
            raise UnknownIdError("item", np.unique(np.asarray(item_ids)[unknown]))
        self.policy.feedback(user_ids, item_ids, ts, labels)

    def end_day(self, ts: int, driver: bool = False) -> dict[str, float]:
        """The arm's daily work for the day that ends at ``ts`` (``driver``: the simulation's own day end)."""
        if not driver:
            if self.driven:
                raise ClientError(409, f"arm '{self.name}' is driven by a running simulation, which ends its days")
            last = self.last_day_end
            if last is not None and ts // SECONDS_PER_DAY <= last // SECONDS_PER_DAY:
                raise ClientError(409, f"arm '{self.name}': the day ending at {ts} is not after the last day end ({last}); "
                                       "end each UTC day once, in order")
            if last is not None and (ts - last) // SECONDS_PER_DAY > MAX_DAY_GAP_DAYS:
                raise ClientError(409, f"arm '{self.name}': {ts} is more than {MAX_DAY_GAP_DAYS} days after the last "
                                       f"day end ({last}); end the days in between")
        out = self.policy.end_day(ts)
        self.last_day_end = ts
        return out


class ArmsBackend(Protocol):
    """Where the handlers send a validated request: endpoints in this process, or Serve deployment handles."""

    def arm_names(self) -> list[str]: ...
    async def info(self, arm: str) -> dict: ...
    async def recommend(self, arm: str, user_ids: np.ndarray, ts: np.ndarray, seed: int) -> Slates: ...
    async def upload(self, arm: str, items: dict) -> dict[int, list[int]]: ...  # arrays and "features" lists
    async def feedback(self, arm: str, user_ids, item_ids, ts, labels) -> None: ...
    async def end_day(self, arm: str, ts: int) -> dict[str, float]: ...


class LocalBackend:
    """Arms in this process (tests, notebooks, ``python -m serving.http``): endpoints, or policies to wrap in one
    (``driven`` as a simulation's, e.g. :class:`~simulator.run.runtime.LocalRuntime`'s ``policies``)."""

    def __init__(self, arms: dict[str, ArmPolicy | ArmEndpoint], driven: bool = False):
        self.endpoints = {name: arm if isinstance(arm, ArmEndpoint) else ArmEndpoint(name, arm, driven)
                          for name, arm in arms.items()}

    def release(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.release()

    def arm_names(self) -> list[str]:
        return list(self.endpoints)

    async def info(self, arm):
        return self.endpoints[arm].info()

    async def recommend(self, arm, user_ids, ts, seed):
        return self.endpoints[arm].recommend(user_ids, ts, seed)

    async def upload(self, arm, items):
        return self.endpoints[arm].upload(items)

    async def feedback(self, arm, user_ids, item_ids, ts, labels):
        self.endpoints[arm].feedback(user_ids, item_ids, ts, labels)

    async def end_day(self, arm, ts):
        return self.endpoints[arm].end_day(ts)
