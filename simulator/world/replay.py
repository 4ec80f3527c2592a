"""Log replay: the log is written as parquet partitioned by day and read back one day at a time.

Two readers share one interface: :class:`ArrowDayReader` (pyarrow, in-process) and
:class:`RayDataDayReader` (Ray Data, the default on Ray). Both return the same table for a day.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from simulator.core.schema import EVENTS_SCHEMA, SECONDS_PER_DAY, Log
from simulator.core.storage import Location


def write_log(log: Log, root: Location | Path | str, days: int) -> Location:
    """Write the first ``days`` days of events as ``root/events/day=NNNN/part-0.parquet`` (sorted by ts) on the
    root's filesystem (:mod:`simulator.core.storage`); returns the ``events`` location."""
    root = Location.of(root)
    out = root / "events"
    t0 = log.t0
    ev = log.events
    day = (ev["ts"].to_numpy() - t0) // SECONDS_PER_DAY
    for d in range(days):
        (out / f"day={d:04d}" / "part-0.parquet").write_table(ev.filter(pa.array(day == d)))
    (root / "items.parquet").write_table(log.items)
    return out


class DayReader(Protocol):
    def read_day(self, day: int) -> pa.Table: ...


class ArrowDayReader:
    """Reads one day partition with pyarrow (no Ray)."""

    def __init__(self, events_root: Location | Path | str):
        self.root = Location.of(events_root)

    def read_day(self, day: int) -> pa.Table:
        path = self.root / f"day={day:04d}"
        if not path.exists():
            return EVENTS_SCHEMA.empty_table()
        return path.read_table(EVENTS_SCHEMA).sort_by("ts")


class RayDataDayReader:
    """Streams the day partitions through ONE Ray Data execution and hands them out a day at a time.

    The first ``read_day(d)`` starts a streaming read of partitions d, d+1, ... (order
    preserved, progress bars off); each later call takes the next day's rows from the stream.
    One execution for the whole run instead of one per day: a Ray Data execution costs ~1.5 s
    of fixed overhead. Days must be read in increasing order (as the driver does).
    """

    def __init__(self, events_root: Location | Path | str, t0: int):
        import ray.data

        self.root = Location.of(events_root)
        self.t0 = t0
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False  # the CLI shows its own progress; Ray's log files keep the rest
        ctx.execution_options.preserve_order = True
        self._ray_data = ray.data
        self._it = None
        self._next_day = None
        self._pending: list[pa.Table] = []  # rows already pulled that belong to later days

    def _start(self, day: int) -> None:
        paths = [(p / "part-0.parquet").path for p in self.root.children()
                 if p.name.startswith("day=") and int(p.name.split("=")[1]) >= day]
        self._next_day = day
        if not paths:
            self._it = iter(())
            return
        # the filesystem travels with the read tasks: the partitions may be on an object store no node mounts
        ds = self._ray_data.read_parquet(paths, schema=EVENTS_SCHEMA, num_cpus=0.25, partitioning=None,
                                         filesystem=self.root.fs)
        self._it = iter(ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1))

    def read_day(self, day: int) -> pa.Table:
        if self._it is None or day < self._next_day:  # a recovery in place plays days again: a new stream from there
            self._pending = []
            self._start(day)
        lo, hi = self.t0 + day * SECONDS_PER_DAY, self.t0 + (day + 1) * SECONDS_PER_DAY
        parts, keep = [], []
        for t in self._pending:
            ts = t["ts"].to_numpy()
            parts.append(t.filter(pa.array((ts >= lo) & (ts < hi))))
            keep.append(t.filter(pa.array(ts >= hi)))
        self._pending = [t for t in keep if t.num_rows]
        while not self._pending:
            batch = next(self._it, None)
            if batch is None:
                break
            batch = batch.select(EVENTS_SCHEMA.names).cast(EVENTS_SCHEMA)
            ts = batch["ts"].to_numpy()
            if len(ts) and ts.min() < lo:
                raise ValueError(f"RayDataDayReader: rows before day {day} in the stream (log not sorted by day?)")
            parts.append(batch.filter(pa.array(ts < hi)))
            later = batch.filter(pa.array(ts >= hi))
            if later.num_rows:
                self._pending.append(later)
        self._next_day = day + 1
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return EVENTS_SCHEMA.empty_table()
        return pa.concat_tables(parts).sort_by("ts")


def requests_of_day(day_events: pa.Table, slate_size: int) -> pl.DataFrame:
    """The day's requests (user_id, ts): a user's exposures grouped into slates of ``slate_size``.

    A user with n logged exposures that day makes ceil(n / slate_size) requests, at the times of
    their 1st, (S+1)-th, ... exposure. Logs without exposures use every event instead.
    """
    ev = pl.from_arrow(day_events)
    if ev.height == 0:
        return pl.DataFrame({"user_id": [], "ts": []}, schema={"user_id": pl.Int64, "ts": pl.Int64})
    expo = ev.filter(pl.col("event") == "expose")
    if expo.height == 0:
        expo = ev
    expo = expo.sort(["user_id", "ts"]).with_columns(pl.int_range(pl.len()).over("user_id").alias("k"))
    req = expo.filter(pl.col("k") % slate_size == 0).select(["user_id", "ts"]).sort(["ts", "user_id"])
    return req


def tick_bounds(t0: int, day: int, ticks_per_day: int) -> np.ndarray:
    """Start times of each tick of ``day`` plus the end of the day: (ticks_per_day + 1,)."""
    start = t0 + day * SECONDS_PER_DAY
    return start + (np.arange(ticks_per_day + 1) * SECONDS_PER_DAY) // ticks_per_day
