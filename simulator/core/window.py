"""Which days of a real log a run replays, and the warnings a user needs before trusting its read-out.

A real log often spans far more days than a scenario simulates (MovieLens-1M: three years; a scale asks
for 3 or 14 days). Replaying its first calendar days can mean almost no traffic. :func:`choose_window`
picks the window: ``--start DATE`` when given, else the densest run of ``days`` days (most interaction
events), and records it as the log's ``start_ts`` (earlier events become the pre-period: history the
world reads, never replayed). :func:`log_warnings` says what would make the read-out meaningless: sparse
days, no interaction events, too few creators or users per arm. Pure pyarrow/numpy; docs/sources.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow.compute as pc

from simulator.core.schema import INTERACTION_TYPES, SECONDS_PER_DAY, Log

class ColdsimWarning(UserWarning):
    """A condition that makes a run's read-out doubtful; ``simulate`` prints it in the console."""


MIN_EVENTS_PER_DAY = 100
"""A replayed day with fewer events than this is too thin to read (warned)."""
MIN_CREATORS_PER_ARM = 30
MIN_USERS_PER_ARM = 100
"""Below these an arm's bootstrap CIs rest on too few randomisation units (warned)."""


def parse_start(start: str) -> int:
    """Midnight (UTC) of an ISO date ``YYYY-MM-DD`` as unix seconds; a clear error otherwise."""
    try:
        day = dt.date.fromisoformat(start)
    except ValueError:
        raise ValueError(f"--start {start!r} is not a date (YYYY-MM-DD)") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())


def iso_day(ts: int) -> str:
    """The UTC date (YYYY-MM-DD) of unix seconds ``ts``."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date().isoformat()


def daily_event_counts(log: Log, first_day_ts: int) -> tuple[np.ndarray, np.ndarray]:
    """(all events, interaction events) per day from the midnight ``first_day_ts`` to the last event's day."""
    ts = log.events["ts"].to_numpy()
    day = (ts - first_day_ts) // SECONDS_PER_DAY
    keep = day >= 0
    n = int(day[keep].max()) + 1 if keep.any() else 0
    inter = np.isin(log.events["event"].to_numpy(zero_copy_only=False), list(INTERACTION_TYPES))
    return (np.bincount(day[keep], minlength=n), np.bincount(day[keep & inter], minlength=n))


def choose_window(log: Log, days: int, start: str | None = None) -> Log:
    """``log`` with ``meta["start_ts"]`` set to the first replayed day and ``meta["window"]`` saying why.

    ``start``: that date (it must lie within the log). Otherwise, when the log holds more than ``days``
    days from its current ``t0``, the ``days``-day window with the most interaction events (all events when
    the log has no interactions; the earliest on ties). A log that fits is returned unchanged.
    """
    first = log.t0
    last_ts = int(pc.max(log.events["ts"]).as_py())
    if start is not None:
        t0 = parse_start(start)
        if not first <= t0 <= last_ts:
            raise ValueError(f"--start {start}: the log '{log.name}' covers {iso_day(first)} to {iso_day(last_ts)}")
        why = f"--start {start}"
    else:
        if log.n_days <= days:
            return log
        total, inter = daily_event_counts(log, first)
        weight = inter if inter.sum() else total
        sums = np.convolve(weight, np.ones(days, np.int64), mode="valid")  # window starting at each day
        best = int(np.argmax(sums))
        t0 = first + best * SECONDS_PER_DAY
        why = (f"densest {days}-day window of {log.n_days} days: {int(sums[best]):,} of {int(weight.sum()):,} "
               f"{'interaction ' if inter.sum() else ''}events (pass --start DATE to choose)")
    meta = {**log.meta, "start_ts": t0, "window": f"{iso_day(t0)} to {iso_day(t0 + (days - 1) * SECONDS_PER_DAY)}, {why}"}
    return dataclasses.replace(log, meta=meta)


def log_warnings(log: Log, days: int, shares: list[float]) -> list[str]:
    """What makes a run on ``log`` (``days`` days from its ``t0``, arms of ``shares``) hard to read."""
    out = []
    total, inter = daily_event_counts(log, log.t0)
    total, inter = total[:days], inter[:days]
    if total.size and not inter.any():
        out.append(f"log '{log.name}': no interaction events ({', '.join(INTERACTION_TYPES)}) in the replayed days: "
                   "every interaction metric will be 0 (is the event column mapped? see docs/sources.md)")
    thin = [i for i, n in enumerate(total) if n < MIN_EVENTS_PER_DAY]
    if thin:
        shown = ", ".join(f"day {i} ({total[i]} events)" for i in thin[:5]) + (" ..." if len(thin) > 5 else "")
        out.append(f"log '{log.name}': {len(thin)} of {len(total)} replayed days have fewer than {MIN_EVENTS_PER_DAY} "
                   f"events: {shown}; lifts on them are noise (choose another window with --start or --days)")
    n_creators = len(np.unique(log.items["creator_id"].to_numpy()))
    n_users = len(np.unique(log.events["user_id"].to_numpy()))
    small = min(shares) if shares else 1.0
    if n_creators * small < MIN_CREATORS_PER_ARM or n_users * small < MIN_USERS_PER_ARM:
        out.append(f"log '{log.name}': the smallest arm ({small:.0%}) gets about {n_creators * small:.0f} creators and "
                   f"{n_users * small:.0f} users (fewer than {MIN_CREATORS_PER_ARM} / {MIN_USERS_PER_ARM}): its "
                   "confidence intervals rest on too few units to mean much")
    return out
