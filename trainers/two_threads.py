"""A tick's learners on two threads of one process, with exactly one thread's numbers.

The learners of a tick (the shared base learner and the arms' strategy learners) share no tensor and read no other
learner's weights within a tick, and torch's kernels run without the GIL, so two threads can train them side by
side on two cores. What a thread cannot share is torch's global generator: a learner that draws from it (or seeds
it, as IHM's dropout does, forked and seeded by tick) must see the same draws as one after another. Such a learner
is *pinned*: every pinned learner trains in the caller's thread, in order, and nothing on the other thread draws
from the global generator. The other learners are taken in order by whichever thread is free first, so the threads
balance themselves whatever each learner costs. Which thread trained a learner changes none of its numbers
(tests/trainers/test_two_threads.py: a whole run bit for bit against one thread).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Job:
    """One learner's tick: ``call`` gives its result; ``pinned``: it draws from torch's global generator."""

    key: str
    call: Callable[[], Any]
    pinned: bool


class TwoThreads:
    """Runs a tick's jobs on the caller's thread and one helper thread (started on first use, torch on as many
    threads as the caller's, one in a Ray Train worker)."""

    def __init__(self, name: str = "coldsim-learner"):
        self.name = name
        self._pool: ThreadPoolExecutor | None = None

    def run(self, jobs: list[Job], share: bool = True) -> dict[str, Any]:
        """{key: result} of every job, in the jobs' order: the pinned ones run in the caller's thread in order,
        first; the others are taken in order by the first free thread. A failure in either thread is raised here
        once both threads are done. ``share=False``: every job in the caller's thread, in order."""
        free = deque(job for job in jobs if not job.pinned)
        if not share or not free or len(jobs) < 2:
            return {job.key: job.call() for job in jobs}
        if self._pool is None:  # torch 2.13 gives a new thread the process's count; set it anyway, for other builds
            self._pool = ThreadPoolExecutor(1, self.name, torch.set_num_threads, (torch.get_num_threads(),))
        lock = threading.Lock()
        results: dict[str, Any] = {}

        def drain() -> None:
            while True:
                with lock:
                    if not free:
                        return
                    job = free.popleft()
                results[job.key] = job.call()

        helper = self._pool.submit(drain)
        try:
            for job in jobs:
                if job.pinned:
                    results[job.key] = job.call()
            drain()
        finally:
            helper.result()
        return {job.key: results[job.key] for job in jobs}
