"""Training an offline protocol's variants side by side: each job in a fresh process, as many at once as asked.

The variants of a protocol are independent: in processes of their own they use every core. A fresh process per
job also keeps one job's memory from growing the next's. The results are the same as one after another in this
process (tested), and are returned in the jobs' order whatever order they finish in.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool


def worker_count(requested: int, jobs: int) -> int:
    """``requested`` processes at once (0: one per CPU core this process may use), never more than the jobs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or cores, jobs))


def run_jobs(fn: Callable, jobs: Sequence[tuple], workers: int, done: Callable[[int], None] | None = None) -> list:
    """``fn(*job)`` for every job, each in a fresh spawned process, ``workers`` at a time (0: one per core); with
    ``workers == 1`` they run one after another in this process instead (no process start-up). ``done(i)`` is
    called as job ``i``'s result is collected."""
    if workers == 1:
        out = []
        for i, job in enumerate(jobs):
            out.append(fn(*job))
            if done is not None:
                done(i)
        return out
    pool = ProcessPoolExecutor(max_workers=worker_count(workers, len(jobs)),
                               mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1)
    try:
        with pool:
            futures = [pool.submit(fn, *job) for job in jobs]
            out = []
            for i, future in enumerate(futures):
                out.append(future.result())
                if done is not None:
                    done(i)
    except BrokenProcessPool as exc:
        raise RuntimeError(
            "a worker process training the variants died (out of memory, or killed). A Python script that runs an "
            "offline protocol must keep its top-level code under `if __name__ == '__main__':`, because each worker "
            "process imports the script again. Set offline.workers=1 to train in this process instead.") from exc
    return out
