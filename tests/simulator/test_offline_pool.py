"""Offline variants in worker processes: results in job order, one process per job, a clear error when one dies."""

from __future__ import annotations

import os

import pytest

from simulator.run.offline_pool import run_jobs, worker_count


def test_results_come_back_in_job_order_in_or_out_of_process():
    jobs = [(2, 10), (3, 4), (5, 2)]
    done: list[int] = []
    assert run_jobs(pow, jobs, workers=2, done=done.append) == [1024, 81, 25]
    assert done == [0, 1, 2]
    assert run_jobs(pow, jobs, workers=1) == [1024, 81, 25]


def test_every_job_gets_a_fresh_process():
    pids = run_jobs(os.getpid, [()] * 3, workers=1)
    assert len(set(pids)) == 1 and pids[0] == os.getpid()  # workers=1: this process
    pids = run_jobs(os.getpid, [()] * 3, workers=2)
    assert len(set(pids)) == 3 and os.getpid() not in pids


def test_worker_count():
    assert worker_count(3, 2) == 2 and worker_count(1, 5) == 1
    assert 1 <= worker_count(0, 100) <= (os.cpu_count() or 1)


def test_a_worker_that_dies_is_a_clear_error():
    with pytest.raises(RuntimeError, match="__main__"):
        run_jobs(os._exit, [(3,)], workers=2)
