"""The HTTP API of the platform: pydantic-validated payloads and the handlers behind each route.

Handlers take a *backend* (anything with the async methods of :class:`ArmsBackend`), so the
same code runs behind the Ray Serve FastAPI ingress (:mod:`serving.app`, backend = deployment
handles) and in-process (:func:`build_local_api`, backend = plain :class:`ArmPolicy` objects).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal, Protocol

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from simulator.ids import UnknownIdError
from simulator.schema import EVENT_TYPES, RESPONSE_TYPES
from serving.stack import ArmPolicy, Slates

MAX_BATCH = 10_000
NonNeg = Annotated[int, Field(ge=0, le=2**62)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RecommendRequest(_Strict):
    user_ids: list[NonNeg] = Field(min_length=1, max_length=MAX_BATCH)
    ts: NonNeg | None = Field(None, description="request time (unix seconds); default: now")


class RecommendResponse(BaseModel):
    arm: str
    slates: list[list[int]]
    channels: list[list[str]]
    scores: list[list[float]]


class ItemIn(_Strict):
    item_id: NonNeg
    creator_id: NonNeg
    upload_ts: NonNeg
    category: NonNeg = 0
    features: list[float] = Field(default_factory=list, max_length=256)


class UploadRequest(_Strict):
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_BATCH)


class UploadResponse(BaseModel):
    arm: str
    uploaded: int
    targets: dict[int, list[int]] = Field(default_factory=dict, description="creator-side target users per item (DualRec arms)")


class EventIn(_Strict):
    ts: NonNeg
    user_id: NonNeg
    item_id: NonNeg
    event: Literal[EVENT_TYPES]  # type: ignore[valid-type]


class FeedbackRequest(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=10 * MAX_BATCH)


class FeedbackResponse(BaseModel):
    arm: str
    exposures: int


class ArmsBackend(Protocol):
    def arm_names(self) -> list[str]: ...
    async def recommend(self, arm: str, user_ids: np.ndarray, ts: np.ndarray, seed: int) -> Slates: ...
    async def upload(self, arm: str, items: dict[str, np.ndarray]) -> dict[int, list[int]]: ...
    async def feedback(self, arm: str, user_ids, item_ids, ts, labels) -> None: ...


def _check_arm(backend: ArmsBackend, arm: str) -> None:
    if arm not in backend.arm_names():
        raise HTTPException(status_code=404, detail=f"unknown arm '{arm}'; arms: {backend.arm_names()}")


def _wrap_errors(exc: Exception) -> HTTPException:
    if isinstance(exc, UnknownIdError):
        return HTTPException(status_code=404, detail=str(exc).strip("'\""))
    return HTTPException(status_code=422, detail=str(exc))


async def handle_recommend(backend: ArmsBackend, arm: str, req: RecommendRequest) -> RecommendResponse:
    _check_arm(backend, arm)
    users = np.asarray(req.user_ids, np.int64)
    ts_value = int(time.time()) if req.ts is None else req.ts
    ts = np.full(len(users), ts_value, np.int64)
    try:
        sl = await backend.recommend(arm, users, ts, seed=ts_value)
    except (ValueError, KeyError) as exc:
        raise _wrap_errors(exc) from None
    names = np.asarray(sl.channel_names + ["-"], dtype=object)
    chan = np.where(sl.item_ids >= 0, sl.channel, len(sl.channel_names))
    return RecommendResponse(
        arm=arm, slates=[[int(i) for i in row if i >= 0] for row in sl.item_ids],
        channels=[[str(c) for c, i in zip(crow, irow) if i >= 0] for crow, irow in zip(names[chan], sl.item_ids)],
        scores=[[float(s) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(sl.score, sl.item_ids)],
    )


async def handle_upload(backend: ArmsBackend, arm: str, req: UploadRequest) -> UploadResponse:
    _check_arm(backend, arm)
    widths = {len(i.features) for i in req.items}
    if len(widths) > 1:
        raise HTTPException(status_code=422, detail=f"items carry feature vectors of different lengths {sorted(widths)}")
    width = widths.pop()
    items = {
        "item_id": np.array([i.item_id for i in req.items], np.int64),
        "creator_id": np.array([i.creator_id for i in req.items], np.int64),
        "upload_ts": np.array([i.upload_ts for i in req.items], np.int64),
        "category": np.array([i.category for i in req.items], np.int64),
        "dense": np.array([i.features for i in req.items], np.float32).reshape(len(req.items), width),
    }
    try:
        targets = await backend.upload(arm, items)
    except (ValueError, KeyError) as exc:
        raise _wrap_errors(exc) from None
    return UploadResponse(arm=arm, uploaded=len(req.items), targets=targets or {})


def events_to_exposures(events: list[EventIn]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group events by (user, item): one exposure each (at its earliest ts) with a response bitmask."""
    keys: dict[tuple[int, int], int] = {}
    users, items, ts, labels = [], [], [], []
    for e in events:
        k = (e.user_id, e.item_id)
        if k not in keys:
            keys[k] = len(users)
            users.append(e.user_id)
            items.append(e.item_id)
            ts.append(e.ts)
            labels.append([False] * len(RESPONSE_TYPES))
        j = keys[k]
        ts[j] = min(ts[j], e.ts)
        if e.event != "expose":
            labels[j][RESPONSE_TYPES.index(e.event)] = True
    return (np.array(users, np.int64), np.array(items, np.int64), np.array(ts, np.int64),
            np.array(labels, bool).reshape(len(users), len(RESPONSE_TYPES)))


async def handle_feedback(backend: ArmsBackend, arm: str, req: FeedbackRequest) -> FeedbackResponse:
    _check_arm(backend, arm)
    u, i, t, y = events_to_exposures(req.events)
    try:
        await backend.feedback(arm, u, i, t, y)
    except (ValueError, KeyError) as exc:
        raise _wrap_errors(exc) from None
    return FeedbackResponse(arm=arm, exposures=len(u))


class LocalBackend:
    """Plain policies in this process (tests, notebooks)."""

    def __init__(self, policies: dict[str, ArmPolicy]):
        self.policies = policies

    def arm_names(self) -> list[str]:
        return list(self.policies)

    async def recommend(self, arm, user_ids, ts, seed):
        return self.policies[arm].recommend(user_ids, ts, seed)

    async def upload(self, arm, items):
        self.policies[arm].upload_items(items["item_id"], items["creator_id"], items["upload_ts"], items["category"], items["dense"])
        return self.policies[arm].last_targets

    async def feedback(self, arm, user_ids, item_ids, ts, labels):
        self.policies[arm].feedback(user_ids, item_ids, ts, labels)


def build_local_api(backend: ArmsBackend) -> FastAPI:
    """The same routes as the Serve ingress, over an in-process backend."""
    api = FastAPI(title="coldsim platform (in-process)")

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "arms": backend.arm_names()}

    @api.post("/arms/{arm}/recommend", response_model=RecommendResponse)
    async def recommend(arm: str, req: RecommendRequest):
        return await handle_recommend(backend, arm, req)

    @api.post("/arms/{arm}/upload", response_model=UploadResponse)
    async def upload(arm: str, req: UploadRequest):
        return await handle_upload(backend, arm, req)

    @api.post("/arms/{arm}/feedback", response_model=FeedbackResponse)
    async def feedback(arm: str, req: FeedbackRequest):
        return await handle_feedback(backend, arm, req)

    return api
