"""The HTTP API's request and response bodies (strict: no coercion, no unknown fields, no NaN) and their size limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from simulator.core.schema import EVENT_TYPES

MAX_ID = 2**62
MAX_TS = 4_102_444_800  # 2100-01-01T00:00:00Z, exclusive: unix seconds, far from int64 and hash-key overflow
MAX_FEATURE = 1e9  # content features are float32 model inputs: finite and at most this in absolute value
MAX_USERS = 10_000  # user ids per recommend request
MAX_UPLOAD_ITEMS = 2_000
MAX_FEATURES = 256
MAX_EVENTS = 50_000

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
