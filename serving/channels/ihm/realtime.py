"""The IHM channel's real-time bookkeeping, in simulated time: the per-item rate limit on inferences and the
action-to-serving latency (ATS) of the item index. Both are dataclasses whose fields are their whole state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from serving.features import grow_rows

NEVER = np.iinfo(np.int64).min // 4  # "no time": never inferred / nothing queued


def _never(n: int = 0) -> np.ndarray:
    return np.full(n, NEVER, np.int64)


@dataclass
class RateLimiter:
    """Inference triggers -> inference jobs: two inferences of an item are at least ``gap`` seconds apart; a trigger
    inside the gap queues one inference for the moment the gap expires (further triggers merge into it)."""

    gap: int
    last_infer: np.ndarray = field(default_factory=_never)  # by item row: time of the last triggered inference
    due: np.ndarray = field(default_factory=_never)  # by item row: time of the queued inference, NEVER when none

    def grow(self, n_items: int) -> None:
        self.last_infer = grow_rows(self.last_infer, n_items, NEVER)
        self.due = grow_rows(self.due, n_items, NEVER)

    def schedule(self, items: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Inference jobs (item rows, times) for triggers (item rows, times), and how many triggers were deferred
        into a queued inference; updates the rate limit and the queue."""
        job_items, job_times = [], []
        deferred = 0
        order = np.lexsort((times, items))
        items, times = items[order].tolist(), times[order].tolist()
        position = 0
        while position < len(items):
            row = items[position]
            last, due = int(self.last_infer[row]), int(self.due[row])
            while position < len(items) and items[position] == row:
                now = times[position]
                position += 1
                if due != NEVER and due <= now:  # the queued inference ran before this trigger
                    job_items.append(row), job_times.append(due)
                    last, due = due, NEVER
                if due != NEVER:
                    continue  # merged into the queued inference
                if now >= last + self.gap:
                    job_items.append(row), job_times.append(now)
                    last = now
                else:
                    due = last + self.gap
                    deferred += 1
            self.last_infer[row], self.due[row] = last, due
        return np.array(job_items, np.int64), np.array(job_times, np.int64), deferred

    def take_due(self, n_items: int, clock: int) -> tuple[np.ndarray, np.ndarray]:
        """The queued inferences due by ``clock`` as jobs (item rows, times); they count as run."""
        due = self.due[:n_items]
        rows = np.flatnonzero((due != NEVER) & (due <= clock))
        times = self.due[rows]
        if len(rows):
            self.last_infer[rows] = self.due[rows]
            self.due[rows] = NEVER
        return rows, times

    def clear_queue(self, n_items: int) -> None:
        """Drop every queued inference (a batch inference of every cold item covers them)."""
        self.due[:n_items] = NEVER


def _no_samples() -> np.ndarray:
    return np.zeros((2, 0), np.int64)


@dataclass
class ATSTracker:
    """ATS of the item index: for each like/comment on an indexed (cold) item, the simulated time until an inference
    whose history includes it has updated the index. Samples are (seconds, late flag) columns."""

    pending_item: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # positives not reflected yet
    pending_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pending_late: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # seen after a later inference
    day: list[np.ndarray] = field(default_factory=list)  # today's samples, (2, m) blocks
    run: np.ndarray = field(default_factory=_no_samples)  # every earlier day's samples

    def add(self, items: np.ndarray, times: np.ndarray, late: np.ndarray) -> None:
        """Positives (item row, action time) that the index does not reflect yet."""
        self.pending_item = np.concatenate([self.pending_item, items])
        self.pending_ts = np.concatenate([self.pending_ts, times])
        self.pending_late = np.concatenate([self.pending_late, late])

    def resolve(self, job_item: np.ndarray, job_t: np.ndarray) -> None:
        """Inference jobs ran: each pending positive is reflected by its item's first inference at or after it."""
        if len(self.pending_item) == 0 or len(job_item) == 0:
            return
        base = min(int(job_t.min()), int(self.pending_ts.min()))
        span = max(int(job_t.max()), int(self.pending_ts.max())) - base + 1
        job_keys = job_item * span + (job_t - base)
        order = np.argsort(job_keys, kind="stable")
        job_keys, job_item, job_t = job_keys[order], job_item[order], job_t[order]
        pending_keys = self.pending_item * span + (self.pending_ts - base)
        first = np.minimum(np.searchsorted(job_keys, pending_keys, side="left"), len(job_keys) - 1)
        hit = (job_item[first] == self.pending_item) & (job_t[first] >= self.pending_ts)
        if hit.any():
            self.day.append(np.stack([job_t[first[hit]] - self.pending_ts[hit], self.pending_late[hit]]))
        self.keep_pending(~hit)

    def keep_pending(self, keep: np.ndarray) -> None:
        self.pending_item, self.pending_ts = self.pending_item[keep], self.pending_ts[keep]
        self.pending_late = self.pending_late[keep]

    def close_day(self) -> tuple[np.ndarray, np.ndarray]:
        """Today's samples join the run's: returns (today's, the run's) as (2, m) arrays."""
        today = np.concatenate(self.day, 1) if self.day else _no_samples()
        self.run = np.concatenate([self.run, today], 1)
        self.day = []
        return today, self.run


def ats_percentiles(today: np.ndarray, run: np.ndarray) -> dict[str, float]:
    """p50 and p95 in minutes of today's and the run's samples, all and on time only (without the late ones)."""
    out = {}
    for name, samples in (("", today), ("run.", run)):
        for sub, seconds in (("", samples[0]), ("ontime_", samples[0, samples[1] == 0])):
            if len(seconds):
                out[f"{name}ats_{sub}p50_min"] = float(np.percentile(seconds, 50) / 60)
                out[f"{name}ats_{sub}p95_min"] = float(np.percentile(seconds, 95) / 60)
    return out
