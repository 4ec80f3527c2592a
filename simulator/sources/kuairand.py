"""The real KuaiRand-Pure video and user catalogues (no interactions), to drive the synthetic platform."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from simulator.core.schema import LogValidationError, validate_items, validate_users
from simulator.sources.timestamps import to_unix_seconds

VIDEO_FILE = "video_features_basic_pure.csv"
USER_FILE = "user_features_pure.csv"

UNTAGGED = 0
"""``category`` of a video without a tag (KuaiRand tag ids start at 1)."""

ACTIVITY_LEVELS: dict[str, float] = {
    "full_active": 1.0,
    "high_active": 0.75,
    "middle_active": 0.5,
    "low_active": 0.25,
    "single_low_active": 0.125,
}
"""``user_active_degree`` -> ``activity``; any other value (``UNKNOWN``, the new-user and
retention cohorts ``day_new``, ``2_14_day_new``, ``30day_retention``) gets :data:`DEFAULT_ACTIVITY`."""

DEFAULT_ACTIVITY = 0.5


def load_kuairand_catalogue(path: str | Path) -> pa.Table:
    """The KuaiRand video catalogue as a coldsim items table (``path``: the csv or its directory).

    * ``item_id`` = ``video_id``, ``creator_id`` = ``author_id`` (missing -> error);
    * ``upload_ts`` = ``upload_dt`` read as a UTC date (midnight), in unix seconds;
    * ``category`` = the **first tag** of ``tag`` (e.g. ``"12,62"`` -> 12), KuaiRand's own tag id
      (1..68); :data:`UNTAGGED` (0) when the tag is missing. ``video_type`` is not used: 99% of
      the videos are ``NORMAL``;
    * ``f_duration`` (float32) = log of ``video_duration`` (milliseconds) min-max scaled to
      [0, 1] over the file; a missing duration is first filled with the median duration.

    Duplicated video ids, missing author ids and unparsable upload dates or tags raise
    :class:`LogValidationError` naming the file, the column and the row count.
    """
    path = _file(path, VIDEO_FILE)
    src = str(path)
    df = pl.read_csv(path, infer_schema=False)
    for col in ("video_id", "author_id", "upload_dt", "video_duration", "tag"):
        if col not in df.columns:
            raise LogValidationError(src, col, df.height, f"missing column (have {df.columns})")
    n_dup = df.height - df["video_id"].n_unique()
    if n_dup:
        raise LogValidationError(src, "video_id", n_dup, "duplicated video ids")
    n_missing = int(df["author_id"].str.strip_chars().replace("", None).null_count())
    if n_missing:
        raise LogValidationError(src, "author_id", n_missing, "missing author ids")
    for col in ("video_id", "author_id"):
        n_bad = int((~df[col].str.strip_chars().str.contains(r"^\d+$").fill_null(False)).sum())
        if n_bad:
            raise LogValidationError(src, col, n_bad, "ids that are not non-negative integers")

    first_tag = df["tag"].str.strip_chars().str.split(",").list.first().str.strip_chars().replace("", None)
    bad_tag = first_tag.is_not_null() & ~first_tag.str.contains(r"^\d+$").fill_null(False)
    if bad_tag.any():
        raise LogValidationError(src, "tag", int(bad_tag.sum()), "first tags that are not integer tag ids")
    duration = df["video_duration"].cast(pl.Float64, strict=False)
    n_bad = int((duration.is_null() & df["video_duration"].is_not_null()).sum())
    if n_bad:
        raise LogValidationError(src, "video_duration", n_bad, "durations that are not numbers")
    log_dur = duration.fill_null(duration.median()).clip(lower_bound=1.0).log()
    span = (log_dur.max() - log_dur.min()) or 1.0

    items = pa.table(
        {
            "item_id": df["video_id"].to_arrow(),
            "creator_id": df["author_id"].to_arrow(),
            "upload_ts": to_unix_seconds(df["upload_dt"].to_arrow(), src, "upload_dt"),
            "category": first_tag.cast(pl.Int64).fill_null(UNTAGGED).to_arrow(),
            "f_duration": ((log_dur - log_dur.min()) / span).cast(pl.Float32).to_arrow(),
        }
    )
    return validate_items(items, src)


def load_kuairand_users(path: str | Path) -> pa.Table:
    """KuaiRand users as ``user_id`` and ``activity`` (float64 in [0, 1], from ``user_active_degree``
    through :data:`ACTIVITY_LEVELS`). ``path``: the csv or its directory; the file must exist."""
    path = _file(path, USER_FILE)
    src = str(path)
    df = pl.read_csv(path, infer_schema=False)
    for col in ("user_id", "user_active_degree"):
        if col not in df.columns:
            raise LogValidationError(src, col, df.height, f"missing column (have {df.columns})")
    degree = df["user_active_degree"].str.strip_chars()
    activity = degree.replace_strict(ACTIVITY_LEVELS, default=DEFAULT_ACTIVITY, return_dtype=pl.Float64)
    users = pa.table({"user_id": df["user_id"].to_arrow(), "activity": activity.to_arrow()})
    return validate_users(users, src).select(["user_id", "activity"])


def _file(path: str | Path, default_name: str) -> Path:
    """``path`` itself if it is a file, else ``path / default_name``; a clear error if neither exists."""
    path = Path(path)
    target = path / default_name if path.is_dir() else path
    if not target.is_file():
        raise FileNotFoundError(f"{target}: no such KuaiRand file (expected {default_name} or its directory)")
    return target
