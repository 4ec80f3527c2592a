"""Two training threads (trainers/two_threads.py): pinned jobs stay in the caller's thread in order, the others
balance between the threads, results come back in the jobs' order, and a whole run is the same bit for bit."""

import threading
import time

import polars as pl
import pytest
import torch

from trainers.learner import draws_global_rng
from trainers.two_threads import Job, TwoThreads


def _job(key: str, pinned: bool, seconds: float, seen: list):
    def call():
        seen.append((key, threading.current_thread().name))
        time.sleep(seconds)
        return key.upper()

    return Job(key, call, pinned)


def test_pinned_jobs_keep_the_callers_thread_and_order_and_the_free_ones_balance():
    seen: list = []
    threads = TwoThreads("helper")
    jobs = [_job("base", False, 0.05, seen), _job("p1", True, 0.2, seen), _job("f1", False, 0.01, seen),
            _job("p2", True, 0.2, seen), _job("f2", False, 0.01, seen)]
    assert list(threads.run(jobs)) == ["base", "p1", "f1", "p2", "f2"]  # the jobs' order, not the finishing order
    main = threading.current_thread().name
    assert [k for k, t in seen if t == main] == ["p1", "p2"]  # the pinned ones, in order
    # the helper took the free jobs in order while the caller ran the pinned ones
    assert [k for k, t in seen if t.startswith("helper")] == ["base", "f1", "f2"]
    seen.clear()
    quick = [_job("base", False, 0.3, seen), _job("p1", True, 0.05, seen), _job("f1", False, 0.01, seen)]
    assert threads.run(quick) == {"base": "BASE", "p1": "P1", "f1": "F1"}
    assert [k for k, t in seen if t == main] == ["p1", "f1"]  # done with its own, the caller takes what is left


def test_one_thread_when_there_is_nothing_to_share():
    seen: list = []
    threads = TwoThreads("helper")
    assert threads.run([_job("p", True, 0, seen), _job("q", True, 0, seen)]) == {"p": "P", "q": "Q"}
    assert threads.run([_job("only", False, 0, seen)]) == {"only": "ONLY"}
    assert threads.run([_job("a", False, 0, seen), _job("b", False, 0, seen)], share=False) == {"a": "A", "b": "B"}
    assert {t for _, t in seen} == {threading.current_thread().name}
    assert threads._pool is None  # no thread was started


def test_a_failure_in_either_thread_is_raised_after_both_are_done():
    seen: list = []

    def boom():
        raise ValueError("learner failed")

    threads = TwoThreads("helper")
    with pytest.raises(ValueError, match="learner failed"):
        threads.run([Job("bad", boom, False), _job("p", True, 0.02, seen), _job("f", False, 0, seen)])
    assert sorted(k for k, _ in seen) == ["f", "p"]  # the other jobs still ran
    with pytest.raises(ValueError, match="learner failed"):
        threads.run([_job("f", False, 0.02, seen), Job("bad", boom, True)])


def test_a_task_that_does_not_say_is_taken_to_draw():
    class Quiet:
        pass

    class Free:
        draws_global_rng = False

    assert draws_global_rng(Quiet()) and not draws_global_rng(Free())


def _tiny_run(tmp_path, two_threads: bool):
    from scenarios import get_scenario
    from simulator.run.loop import Simulation
    from simulator.run.runtime import LocalRuntime
    from simulator.sources.synthetic import generate_synthetic

    sc = get_scenario("coldstart_ab").at_scale("tiny").model_copy(update={"days": 2})
    sc = sc.model_copy(update={"train": sc.train.model_copy(update={"base_thread": two_threads})})
    sim = Simulation(sc, generate_synthetic(sc.synthetic, sc.seed), LocalRuntime, tmp_path / f"run{int(two_threads)}",
                     progress=False)
    return sim, sim.run()


def test_a_run_on_two_threads_is_the_same_and_only_the_declared_learners_leave_the_callers_thread(tmp_path,
                                                                                                   monkeypatch):
    """Each strategy task's declaration is checked where one thread runs it (a learner that says it draws nothing
    leaves torch's global generator as it was), then the run on two threads gives the same losses, exposures and
    metrics, with IHM's learner (dropout) always in the caller's thread and others in the helper's."""
    from trainers.learner import OnlineLearner

    tick = OnlineLearner.train_tick
    ran: list = []
    helper_took = threading.Event()  # the helper thread has taken a strategy learner
    hold_ihm = threading.Event()  # on two threads IHM (pinned) waits for that, not to leave the schedule to luck

    def recorded(self, batch, seed):
        name = "+".join(t.name for t in self.extra_tasks) or "base"
        if name != "base" and threading.current_thread().name.startswith("coldsim-learner"):
            helper_took.set()
        if name == "ihm" and hold_ihm.is_set():
            helper_took.wait(10)
        before = torch.get_rng_state()
        out = tick(self, batch, seed)
        ran.append((name, threading.current_thread().name, torch.equal(before, torch.get_rng_state())))
        return out

    monkeypatch.setattr(OnlineLearner, "train_tick", recorded)
    one_sim, one = _tiny_run(tmp_path, False)
    assert {n for n, _, _ in ran} == {"base", "next_user", "dualrec", "ihm"}
    assert all(same for name, _, same in ran if name != "ihm")  # the declarations hold (one thread: no interleaving)
    ran.clear()
    hold_ihm.set()
    two_sim, two = _tiny_run(tmp_path, True)
    main = threading.current_thread().name
    assert {t for n, t, _ in ran if n == "ihm"} == {main}
    assert {n for n, t, _ in ran if t.startswith("coldsim-learner")} >= {"base"}
    assert helper_took.is_set()  # a strategy learner trained beside IHM
    for name, diag in one.diagnostics.items():
        trained = [c for c in diag.columns if c.startswith("train.")]
        assert trained and diag.select(trained).equals(two.diagnostics[name].select(trained)), name
    for a, b in zip(one_sim.arms, two_sim.arms):
        assert pl.concat(a.exposures).equals(pl.concat(b.exposures)), a.name
    assert one.overall == two.overall
