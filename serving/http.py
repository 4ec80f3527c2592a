"""The HTTP API of the platform: the handlers, error bodies, the body-size limit, and one FastAPI app builder.

The same app (:func:`build_api`) runs behind the Ray Serve ingress (:mod:`serving.app`, backend = deployment
handles) and in-process (:class:`~serving.arm_endpoint.LocalBackend`, backend = plain
:class:`~serving.arm_endpoint.ArmEndpoint` objects; ``python -m serving.http`` serves one on 127.0.0.1). The
request and response bodies are in :mod:`serving.http_models`; every route, payload and error code is in
docs/serving.md.

What a client may do to an arm is decided by :class:`~serving.arm_endpoint.ArmEndpoint`, next to the policy:
while a simulation drives the arm (``driven``), uploads and day ends come from the simulation only (the world
must know every item it is asked to respond to, and the driver ends the days), so HTTP uploads and day ends get
409; recommend and feedback are served (they change the arm's state, so such traffic makes a run
irreproducible, never crash it). An arm on its own takes all of them.
"""

from __future__ import annotations

import json
import math
import reprlib
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from simulator.core.ids import UnknownIdError
from simulator.core.schema import RESPONSE_TYPES
from serving.arm_endpoint import ArmEndpoint, ArmsBackend, ClientError, LocalBackend
from serving.http_models import (ArmInfo, EndDayRequest, EndDayResponse, ErrorBody, EventIn, FeedbackRequest,
                                 FeedbackResponse, Health, RecommendRequest, RecommendResponse, UploadRequest,
                                 UploadResponse)

__all__ = [  # what serving.app, tests and in-process clients take from here
    "ArmEndpoint", "ERROR_ITEMS", "LocalBackend", "MAX_BODY_BYTES", "UploadRequest", "build_api", "build_local_api",
    "handle_end_day", "handle_feedback", "handle_info", "handle_recommend", "handle_upload", "local_arms", "main",
]

MAX_BODY_BYTES = 8 * 2**20  # a request body over this gets 413 before it is read further (configurable)
ERROR_ITEMS = 10  # validation errors listed in a 422 body
ERROR_INPUT_CHARS = 80  # of an offending input echoed in an error body
ERROR_DETAIL_CHARS = 500


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
    slates = await _call(backend.recommend(arm, users, ts, seed=ts_value))
    names = np.asarray(slates.channel_names + ["-"], dtype=object)
    channel = np.where(slates.item_ids >= 0, slates.channel, len(slates.channel_names))
    return RecommendResponse(
        arm=arm, slates=[[int(item) for item in row if item >= 0] for row in slates.item_ids],
        channels=[[str(name) for name, item in zip(name_row, item_row) if item >= 0]
                  for name_row, item_row in zip(names[channel], slates.item_ids)],
        scores=[[float(score) for score, item in zip(score_row, item_row) if item >= 0]
                for score_row, item_row in zip(slates.score, slates.item_ids)],
    )


async def handle_upload(backend: ArmsBackend, arm: str, req: UploadRequest) -> UploadResponse:
    _check_arm(backend, arm)
    items = {
        "item_id": np.array([item.item_id for item in req.items], np.int64),
        "creator_id": np.array([item.creator_id for item in req.items], np.int64),
        "upload_ts": np.array([item.upload_ts for item in req.items], np.int64),
        "category": np.array([item.category for item in req.items], np.int64),
        "features": [item.features for item in req.items],
    }
    targets = await _call(backend.upload(arm, items))
    return UploadResponse(arm=arm, uploaded=len(req.items), targets=targets or {})


def events_to_exposures(events: list[EventIn]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group events by (user, item): one exposure each (at its earliest ts) with a response bitmask."""
    keys: dict[tuple[int, int], int] = {}
    users, items, ts, labels = [], [], [], []
    for event in events:
        key = (event.user_id, event.item_id)
        if key not in keys:
            keys[key] = len(users)
            users.append(event.user_id)
            items.append(event.item_id)
            ts.append(event.ts)
            labels.append([False] * len(RESPONSE_TYPES))
        row = keys[key]
        ts[row] = min(ts[row], event.ts)
        if event.event != "expose":
            labels[row][RESPONSE_TYPES.index(event.event)] = True
    return (np.array(users, np.int64), np.array(items, np.int64), np.array(ts, np.int64),
            np.array(labels, bool).reshape(len(users), len(RESPONSE_TYPES)))


async def handle_feedback(backend: ArmsBackend, arm: str, req: FeedbackRequest) -> FeedbackResponse:
    _check_arm(backend, arm)
    users, items, ts, labels = events_to_exposures(req.events)
    await _call(backend.feedback(arm, users, items, ts, labels))
    return FeedbackResponse(arm=arm, exposures=len(users))


async def handle_end_day(backend: ArmsBackend, arm: str, req: EndDayRequest) -> EndDayResponse:
    _check_arm(backend, arm)
    diagnostics = await _call(backend.end_day(arm, req.ts))
    return EndDayResponse(arm=arm, ts=req.ts, diagnostics={name: float(value) if math.isfinite(value) else None
                                                           for name, value in diagnostics.items()})


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
    for error in errors[:ERROR_ITEMS]:
        item = {"loc": [part if isinstance(part, (int, str)) else str(part) for part in error.get("loc", ())],
                "msg": _truncate(str(error.get("msg", "")), ERROR_INPUT_CHARS * 4),
                "type": str(error.get("type", "invalid"))}
        if "input" in error:
            item["input"] = _preview(error["input"])
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
    for index, (name, kind) in enumerate(arms):
        spec = ArmSpec(name=name, kind=kind, share=1.0)
        out[name] = ArmEndpoint(name, build_arm(spec, arm_context(ctx, index)), truth_matched=arm_kind(spec).oracle)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m serving.http``: fresh arms on their own, served in this process (no Ray, no simulation)."""
    import argparse

    import torch
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m serving.http", description=main.__doc__)
    parser.add_argument("--arm", action="append", metavar="NAME=KIND",
                        help="an arm to serve (repeatable; kinds: base, next_user, dualrec, ihm); default base=base")
    parser.add_argument("--features", type=int, default=1, help="content features per item (the arms' feature_width)")
    parser.add_argument("--slate-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    args = parser.parse_args(argv)
    arms = [tuple(arm.split("=", 1)) if "=" in arm else (arm, arm) for arm in (args.arm or ["base=base"])]
    torch.set_num_threads(1)
    backend = LocalBackend(local_arms(arms, args.features, args.slate_size, args.seed))
    uvicorn.run(build_local_api(backend, args.max_body_bytes), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
