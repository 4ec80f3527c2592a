"""The HTTP API of the platform: strict request models, the rules for clients, and one FastAPI app builder.

The same app (:func:`build_api`) runs behind the Ray Serve ingress (:mod:`serving.app`, backend = deployment
handles) and in-process (:class:`LocalBackend`, backend = plain :class:`ArmEndpoint` objects; ``python -m
serving.http`` serves one on 127.0.0.1). Every route, payload and error code is in docs/serving.md.

What a client may do to an arm is decided by :class:`ArmEndpoint`, next to the policy: while a simulation
drives the arm (``driven``), uploads and day ends come from the simulation only (the world must know every
item it is asked to respond to, and the driver ends the days), so HTTP uploads and day ends get 409;
recommend and feedback are served (they change the arm's state, so such traffic makes a run
irreproducible, never crash it). An arm on its own takes all of them.
"""

from __future__ import annotations

import json
import math
import reprlib
import time
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException

from simulator.core.ids import UnknownIdError
from simulator.core.schema import EVENT_TYPES, RESPONSE_TYPES, SECONDS_PER_DAY
from serving.stack import ArmPolicy, Slates

MAX_ID = 2**62
MAX_TS = 4_102_444_800  # 2100-01-01T00:00:00Z, exclusive: unix seconds, far from int64 and hash-key overflow
MAX_FEATURE = 1e9  # content features are float32 model inputs: finite and at most this in absolute value
MAX_USERS = 10_000  # user ids per recommend request
MAX_UPLOAD_ITEMS = 2_000
MAX_FEATURES = 256
MAX_EVENTS = 50_000
MAX_BODY_BYTES = 8 * 2**20  # a request body over this gets 413 before it is read further (configurable)
MAX_DAY_GAP_DAYS = 31  # an end of day at most this many days after the previous one (daily work sizes by days)
ERROR_ITEMS = 10  # validation errors listed in a 422 body
ERROR_INPUT_CHARS = 80  # of an offending input echoed in an error body
ERROR_DETAIL_CHARS = 500

Id = Annotated[int, Field(ge=0, le=MAX_ID)]
Timestamp = Annotated[int, Field(ge=0, lt=MAX_TS, description="unix seconds, before 2100-01-01")]
Feature = Annotated[float, Field(ge=-MAX_FEATURE, le=MAX_FEATURE)]


class _Strict(BaseModel):
    """Request bodies: no coercion (``"7"``, ``true`` and ``7.0`` are not ids), no unknown fields, no NaN/inf."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class RecommendRequest(_Strict):
    user_ids: list[Id] = Field(min_length=1, max_length=MAX_USERS)
    ts: Timestamp | None = Field(None, description="request time (unix seconds); default: now")


class RecommendResponse(BaseModel):
    arm: str
    slates: list[list[int]]
    channels: list[list[str]]
    scores: list[list[float]]


class ItemIn(_Strict):
    item_id: Id
    creator_id: Id
    upload_ts: Timestamp
    category: Id = 0
    features: list[Feature] = Field(default_factory=list, max_length=MAX_FEATURES,
                                    description="content features: exactly the arm's feature_width, or none (zeros)")


class UploadRequest(_Strict):
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_UPLOAD_ITEMS)

    @field_validator("items")
    @classmethod
    def _distinct_ids(cls, items: list[ItemIn]) -> list[ItemIn]:
        ids = [i.item_id for i in items]
        if len(set(ids)) < len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"item ids repeat within the request, e.g. {dup}")
        return items


class UploadResponse(BaseModel):
    arm: str
    uploaded: int
    targets: dict[int, list[int]] = Field(default_factory=dict, description="creator-side target users per item (DualRec arms)")


class EventIn(_Strict):
    ts: Timestamp
    user_id: Id
    item_id: Id
    event: Literal[EVENT_TYPES]  # type: ignore[valid-type]


class FeedbackRequest(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class FeedbackResponse(BaseModel):
    arm: str
    exposures: int


class EndDayRequest(_Strict):
    ts: Timestamp = Field(description="the end of the day (unix seconds): in a later UTC day than the previous end")


class EndDayResponse(BaseModel):
    arm: str
    ts: int
    diagnostics: dict[str, float | None] = Field(description="the arm's daily diagnostics (null: undefined today)")


class ArmInfo(BaseModel):
    arm: str
    driven: bool = Field(description="a simulation drives the arm: uploads and day ends over HTTP get 409")
    uploads: bool = Field(description="HTTP uploads are taken now (not driven, not the truth-matched positive control)")
    feature_width: int = Field(description="content features an uploaded item carries (or none)")
    items: int
    users: int
    weights_version: int
    last_day_end: int | None


class Health(BaseModel):
    status: str
    arms: list[str]


class ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]] = Field(description="a message, or (422) the offending fields: loc, msg, type, "
                                               "a truncated preview of the input")


# ---------------------------------------------------------------------------- the rules for clients
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
        p = self.policy
        return {"arm": self.name, "driven": self.driven, "uploads": not (self.driven or self.truth_matched),
                "feature_width": self.feature_width, "items": p.store.n_items,
                "users": len(p.store.users), "weights_version": p.weights_version, "last_day_end": self.last_day_end}

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
        wrong = [(j, len(f)) for j, f in enumerate(items["features"]) if len(f) not in (0, width)]
        if wrong:
            raise ClientError(422, [{"type": "feature_width", "loc": ["body", "items", j, "features"],
                                     "msg": f"arm '{self.name}' takes {width} content feature(s) per item (or none: "
                                            f"zeros), got {n}"} for j, n in wrong])
        known = self.policy.store.items.contains(ids)
        if known.any():
            raise ClientError(409, f"{int(known.sum())} item id(s) already in arm '{self.name}', e.g. "
                                   f"{ids[known][:5].tolist()}: an upload adds new items only")
        dense = np.zeros((len(ids), width), np.float32)
        for j, f in enumerate(items["features"]):
            if f:
                dense[j] = f
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


# ---------------------------------------------------------------------------- backends
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
        self.endpoints = {name: a if isinstance(a, ArmEndpoint) else ArmEndpoint(name, a, driven)
                          for name, a in arms.items()}

    def release(self) -> None:
        for e in self.endpoints.values():
            e.release()

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


# ---------------------------------------------------------------------------- handlers
def _check_arm(backend: ArmsBackend, arm: str) -> None:
    if arm not in backend.arm_names():
        raise HTTPException(status_code=404, detail=_truncate(f"unknown arm '{arm}'; arms: {backend.arm_names()}"))


async def _call(coro):
    """Await a backend call; what the arm refuses becomes a 4xx (unknown ids 404, bad values 422, conflicts 409)."""
    try:
        return await coro
    except ClientError as exc:
        if isinstance(exc.detail, list):
            raise RequestValidationError(exc.detail) from None
        raise HTTPException(status_code=exc.status, detail=_truncate(exc.detail)) from None
    except UnknownIdError as exc:
        raise HTTPException(status_code=404, detail=_truncate(str(exc).strip("'\""))) from None
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=_truncate(str(exc))) from None


async def handle_recommend(backend: ArmsBackend, arm: str, req: RecommendRequest) -> RecommendResponse:
    _check_arm(backend, arm)
    users = np.asarray(req.user_ids, np.int64)
    ts_value = int(time.time()) if req.ts is None else req.ts
    ts = np.full(len(users), ts_value, np.int64)
    sl = await _call(backend.recommend(arm, users, ts, seed=ts_value))
    names = np.asarray(sl.channel_names + ["-"], dtype=object)
    chan = np.where(sl.item_ids >= 0, sl.channel, len(sl.channel_names))
    return RecommendResponse(
        arm=arm, slates=[[int(i) for i in row if i >= 0] for row in sl.item_ids],
        channels=[[str(c) for c, i in zip(crow, irow) if i >= 0] for crow, irow in zip(names[chan], sl.item_ids)],
        scores=[[float(s) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(sl.score, sl.item_ids)],
    )


async def handle_upload(backend: ArmsBackend, arm: str, req: UploadRequest) -> UploadResponse:
    _check_arm(backend, arm)
    items = {
        "item_id": np.array([i.item_id for i in req.items], np.int64),
        "creator_id": np.array([i.creator_id for i in req.items], np.int64),
        "upload_ts": np.array([i.upload_ts for i in req.items], np.int64),
        "category": np.array([i.category for i in req.items], np.int64),
        "features": [i.features for i in req.items],
    }
    targets = await _call(backend.upload(arm, items))
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
    await _call(backend.feedback(arm, u, i, t, y))
    return FeedbackResponse(arm=arm, exposures=len(u))


async def handle_end_day(backend: ArmsBackend, arm: str, req: EndDayRequest) -> EndDayResponse:
    _check_arm(backend, arm)
    diag = await _call(backend.end_day(arm, req.ts))
    return EndDayResponse(arm=arm, ts=req.ts, diagnostics={k: float(v) if math.isfinite(v) else None
                                                           for k, v in diag.items()})


async def handle_info(backend: ArmsBackend, arm: str) -> ArmInfo:
    _check_arm(backend, arm)
    return ArmInfo(**await _call(backend.info(arm)))


# ---------------------------------------------------------------------------- the app
def _truncate(text: str, limit: int = ERROR_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


_SHORT = reprlib.Repr()  # keyword arguments need Python 3.12
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 6, 6, 40, 40, 40


def _preview(value: Any) -> str:
    """A short text of an offending input (Python repr, bounded before it is built): error bodies never echo large
    inputs, nor NaN, which JSON lacks."""
    return _truncate(_SHORT.repr(value), ERROR_INPUT_CHARS)


def validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first :data:`ERROR_ITEMS` errors as loc, msg, type and an input preview (pydantic's ctx dropped)."""
    out = []
    for e in errors[:ERROR_ITEMS]:
        item = {"loc": [x if isinstance(x, (int, str)) else str(x) for x in e.get("loc", ())],
                "msg": _truncate(str(e.get("msg", "")), ERROR_INPUT_CHARS * 4), "type": str(e.get("type", "invalid"))}
        if "input" in e:
            item["input"] = _preview(e["input"])
        out.append(item)
    if len(errors) > ERROR_ITEMS:
        out.append({"loc": [], "msg": f"... and {len(errors) - ERROR_ITEMS:,} more error(s)", "type": "truncated"})
    return out


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before it is parsed (at once when Content-Length says
    so; otherwise as soon as the bytes read pass the limit), with a short error body."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send, what: str) -> None:
        body = json.dumps({"detail": f"request body {what} is over the limit of {self.max_bytes:,} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._reject(send, f"of {length.decode(errors='replace')[:20]} bytes")
        # count what arrives (chunked bodies have no length): read up to the limit, then replay it to the app
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._reject(send, "read so far")
            if not msg.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


_ERRORS = {404: {"model": ErrorBody, "description": "unknown arm, or unknown item ids"},
           413: {"model": ErrorBody, "description": "request body over the size limit"},
           422: {"model": ErrorBody, "description": "invalid fields (listed with loc, msg, type, input preview)"}}
_CONFLICT = {409: {"model": ErrorBody, "description": "the arm refuses it in its current state (see the message)"}}


def build_api(backend: ArmsBackend, max_body_bytes: int = MAX_BODY_BYTES, title: str = "coldsim platform") -> FastAPI:
    """The platform's HTTP API over ``backend``: the Serve ingress and the in-process app are both this app."""
    api = FastAPI(title=title, version="1", description="Arms of a coldsim platform: recommend, upload, feedback, "
                  "end of day. Routes, payloads and error codes: docs/serving.md.")
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": validation_errors(list(exc.errors()))})

    @api.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _preview(exc.detail)
        return JSONResponse(status_code=exc.status_code, content={"detail": _truncate(detail)}, headers=exc.headers)

    @api.get("/healthz", response_model=Health)
    async def healthz():
        return Health(status="ok", arms=backend.arm_names())

    @api.get("/arms/{arm}", response_model=ArmInfo, responses={404: _ERRORS[404]})
    async def info(arm: str):
        """The arm's state as clients need it: driven or on its own, feature width, sizes, last day end."""
        return await handle_info(backend, arm)

    @api.post("/arms/{arm}/recommend", response_model=RecommendResponse, responses=_ERRORS)
    async def recommend(arm: str, req: RecommendRequest):
        """One slate per user id, at ``ts``."""
        return await handle_recommend(backend, arm, req)

    @api.post("/arms/{arm}/upload", response_model=UploadResponse, responses=_ERRORS | _CONFLICT)
    async def upload(arm: str, req: UploadRequest):
        """New items into the arm's catalogue and index (409 while a simulation drives the arm)."""
        return await handle_upload(backend, arm, req)

    @api.post("/arms/{arm}/feedback", response_model=FeedbackResponse, responses=_ERRORS)
    async def feedback(arm: str, req: FeedbackRequest):
        """Events on the arm's items: one exposure per (user, item) with its responses."""
        return await handle_feedback(backend, arm, req)

    @api.post("/arms/{arm}/end_day", response_model=EndDayResponse, responses=_ERRORS | _CONFLICT)
    async def end_day(arm: str, req: EndDayRequest):
        """The arm's daily work for the day ending at ``ts`` (409 while a simulation drives the arm)."""
        return await handle_end_day(backend, arm, req)

    return api


def build_local_api(backend: ArmsBackend, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The same app as the Serve ingress, over an in-process backend."""
    return build_api(backend, max_body_bytes, title="coldsim platform (in-process)")


# ---------------------------------------------------------------------------- an arm on its own
def local_arms(arms: list[tuple[str, str]], n_item_dense: int = 1, slate_size: int = 10,
               seed: int = 0) -> dict[str, ArmEndpoint]:
    """Fresh arms on their own for ``(name, kind)`` pairs, e.g. ``[("base", "base"), ("dr", "dualrec")]``."""
    from simulator.core.config import ArmSpec, ModelConfig
    from serving.arms import arm_kind, build_arm
    from trainers.arm_context import ArmContext, arm_context

    ctx = ArmContext(model=ModelConfig(), slate_size=slate_size, n_item_dense=n_item_dense, seed=seed)
    out = {}
    for i, (name, kind) in enumerate(arms):
        spec = ArmSpec(name=name, kind=kind, share=1.0)
        out[name] = ArmEndpoint(name, build_arm(spec, arm_context(ctx, i)), truth_matched=arm_kind(spec).oracle)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m serving.http``: fresh arms on their own, served in this process (no Ray, no simulation)."""
    import argparse

    import torch
    import uvicorn

    p = argparse.ArgumentParser(prog="python -m serving.http", description=main.__doc__)
    p.add_argument("--arm", action="append", metavar="NAME=KIND",
                   help="an arm to serve (repeatable; kinds: base, next_user, dualrec, ihm); default base=base")
    p.add_argument("--features", type=int, default=1, help="content features per item (the arms' feature_width)")
    p.add_argument("--slate-size", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    args = p.parse_args(argv)
    arms = [tuple(a.split("=", 1)) if "=" in a else (a, a) for a in (args.arm or ["base=base"])]
    torch.set_num_threads(1)
    backend = LocalBackend(local_arms(arms, args.features, args.slate_size, args.seed))
    uvicorn.run(build_local_api(backend, args.max_body_bytes), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
