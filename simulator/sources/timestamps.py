"""Timestamps from a file column as unix seconds (numbers in a unit, ISO-8601 or strftime text, date parts), and the
plausibility checks that catch a wrong unit."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pyarrow as pa

from simulator.core.schema import LogValidationError
from simulator.sources.table_files import SourceTable
from simulator.sources.tabular_options import NUMBER_PATTERN, TS_UNITS


_ISO_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)
"""ISO-8601 layouts ``to_unix_seconds`` accepts (a space may replace the ``T``); no zone means UTC."""


PLAUSIBLE_FIRST_TS = 631_152_000
"""1990-01-01T00:00:00Z: a real log's timestamps are not earlier (see :func:`check_timestamps`)."""


PLAUSIBLE_LAST_TS = 4_102_444_800
"""2100-01-01T00:00:00Z: a numeric timestamp later than this is in the wrong unit."""


def to_unix_seconds(
    values: pa.ChunkedArray | pa.Array, source: str, column: str, unit: str = "s", fmt: str | None = None
) -> pa.Array:
    """Integer unix seconds from numbers (in ``unit``: s, ms, us, ns), numeric strings, ISO-8601 strings
    (or strings in the strftime layout ``fmt``), dates or timestamps.

    Fractions of a second are floored; timestamps without a zone and strings without an offset are read as
    UTC. Nulls, NaN and unparsable values raise :class:`LogValidationError` naming how many rows.
    """
    s = pl.Series(column, values)
    n_null = s.null_count()
    if n_null:
        raise LogValidationError(source, column, n_null, "missing (null) timestamps")
    dtype = s.dtype
    per_second = TS_UNITS[unit]
    if dtype.is_integer():
        return (s.cast(pl.Int64) // per_second).to_arrow() if per_second > 1 else s.cast(pl.Int64).to_arrow()
    if dtype.is_float():
        bad = int((~s.is_finite()).sum())
        if bad:
            raise LogValidationError(source, column, bad, "NaN or infinite timestamps")
        return (s / per_second).floor().cast(pl.Int64).to_arrow()
    if dtype == pl.Date:
        return s.cast(pl.Datetime("us")).dt.epoch("s").to_arrow()
    if isinstance(dtype, pl.Datetime):
        return s.dt.epoch("s").to_arrow()
    if dtype != pl.String:
        raise LogValidationError(source, column, len(s), f"cannot read timestamps of type {dtype}")
    s = s.str.strip_chars()
    if fmt is None and bool(s.str.contains(NUMBER_PATTERN).all()):
        return to_unix_seconds(s.cast(pl.Float64).to_arrow(), source, column, unit)
    if fmt is not None:
        parsed = s.str.to_datetime(fmt, strict=False, time_zone="UTC").dt.epoch("s")
        expected = f"the layout {fmt!r}"
    else:
        iso = s.str.replace(r"^(\d{4}-\d{2}-\d{2})\s+", "${1}T")
        parsed = pl.select(
            pl.coalesce(
                [iso.str.to_datetime(f, strict=False, exact=True, time_zone="UTC").dt.epoch("s") for f in _ISO_FORMATS]
            )
        ).to_series()
        expected = "unix seconds or ISO-8601 (or give ts_format=)"
    n_bad = parsed.null_count()
    if n_bad:
        examples = s.filter(parsed.is_null()).unique(maintain_order=True).head(3).to_list()
        raise LogValidationError(source, column, n_bad, f"unparsable timestamps (e.g. {examples}); expected {expected}")
    return parsed.to_arrow()


def timestamps_from_parts(src: SourceTable, year: str, month: str | None, day: str | None) -> pa.Array:
    """Unix seconds of midnight (UTC) of the date in the ``year``/``month``/``day`` columns (missing month
    or day column: 1); non-integer parts and impossible dates raise :class:`LogValidationError` with lines."""
    parts: dict[str, pl.Series] = {}
    for role, name in (("year", year), ("month", month), ("day", day)):
        if name is None:
            parts[role] = pl.Series(role, np.ones(src.table.num_rows, np.int64))
            continue
        if name not in src.table.column_names:
            have = src.table.column_names
            raise LogValidationError(src.source, name, src.table.num_rows, f"missing column for {role}= (have {have})")
        raw = pl.Series(name, src.table[name])
        num = raw.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        bad = (num.is_null() | (num != num.floor())).fill_null(True)
        if bad.any():
            idx = bad.arg_true().head(3).to_list()
            examples = ", ".join(f"{src.where(i)}: {raw[i]!r}" for i in idx)
            problem = f"{role} values that are not integers (e.g. {examples})"
            raise LogValidationError(src.source, name, int(bad.sum()), problem)
        parts[role] = num.cast(pl.Int64).alias(role)
    df = pl.DataFrame(list(parts.values()))
    text = pl.concat_str(
        [pl.col("year").cast(pl.String).str.zfill(4), pl.col("month").cast(pl.String).str.zfill(2),
         pl.col("day").cast(pl.String).str.zfill(2)],
        separator="-",
    )
    dates = df.select(text.str.to_date("%Y-%m-%d", strict=False).alias("date"))["date"]
    bad = dates.is_null()
    if bad.any():
        idx = bad.arg_true().head(3).to_list()
        examples = ", ".join(f"{src.where(i)}: {df['year'][i]}-{df['month'][i]}-{df['day'][i]}" for i in idx)
        cols = ",".join(c for c in (year, month, day) if c)
        raise LogValidationError(src.source, cols, int(bad.sum()), f"impossible dates (e.g. {examples})")
    return dates.cast(pl.Datetime("us")).dt.epoch("s").to_arrow()


def _utc(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def check_timestamps(seconds: pa.Array, raw: pa.ChunkedArray | pa.Array, src: SourceTable, column: str, unit: str) -> None:
    """Plausibility of timestamps read from a file column (``seconds``: the values as unix seconds).

    Errors (:class:`LogValidationError` naming the column and example lines): integers that are all
    calendar years (1900..2100) read as seconds; numbers later than 2100 (milliseconds or microseconds
    read as seconds: the message suggests ``ts_unit``); numbers that would be 1990..2100 as seconds but
    are read in a finer ``ts_unit``; some timestamps before 1990 among later ones (placeholders such as 0).
    A column entirely before 1990 is allowed as a relative clock, with a ``UserWarning``.
    """
    sec = np.asarray(seconds.to_numpy())
    if len(sec) == 0:
        return
    raw_s = pl.Series(column, raw)
    numeric = raw_s.dtype.is_numeric() or (
        raw_s.dtype == pl.String and bool(raw_s.str.strip_chars().str.contains(NUMBER_PATTERN).all())
    )
    values = raw_s.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False).to_numpy() if numeric else None

    def examples(mask: np.ndarray) -> str:
        idx = np.flatnonzero(mask)[:3]
        return ", ".join(f"{src.where(int(i))}: {raw_s[int(i)]} -> {_utc(int(sec[i]))}" for i in idx)

    def fail(mask: np.ndarray, problem: str) -> None:
        raise LogValidationError(src.source, column, int(mask.sum()), problem.replace("{examples}", examples(mask)))

    late = sec >= PLAUSIBLE_LAST_TS
    early = sec < PLAUSIBLE_FIRST_TS
    if numeric and values is not None:
        if unit == "s" and np.all((values >= 1900) & (values <= 2100) & (values == np.floor(values))):
            fail(np.ones(len(sec), bool), "values look like calendar years, not unix seconds (e.g. {examples}); "
                 f"build dates with year={column} (and month=/day= columns) instead of ts={column}")
        if late.any():
            ticks = float(np.median(values[late]))
            better = next((u for u, k in TS_UNITS.items() if PLAUSIBLE_FIRST_TS <= ticks / k < PLAUSIBLE_LAST_TS), None)
            hint = f"they look like {better}: set ts_unit={better}" if better else "check the column's unit (ts_unit=)"
            fail(late, f"timestamps after 2100 read in ts_unit={unit} (e.g. {{examples}}); {hint}")
        if unit != "s" and early.any():
            as_seconds = values[early]
            if np.all((as_seconds >= PLAUSIBLE_FIRST_TS) & (as_seconds < PLAUSIBLE_LAST_TS)):
                fail(early, f"values read in ts_unit={unit} fall before 1990 (e.g. {{examples}}) but are plausible "
                     "unix seconds: drop ts_unit or set ts_unit=s")
    if late.any():
        fail(late, "timestamps after 2100 (e.g. {examples})")
    if early.any() and not early.all():
        fail(early, "timestamps before 1990 among later ones (e.g. {examples}): placeholders (0?) or a mix of units")
    if early.all():
        warnings.warn(
            f"{src.source}: column '{column}': every timestamp is before 1990 (e.g. {examples(early)}); read as a "
            "relative clock in seconds. If they are not unix seconds, set ts_unit=, ts_format= or year=/month=/day= "
            "(ts_check=off silences this)",
            UserWarning,
            stacklevel=3,
        )
