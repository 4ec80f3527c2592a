"""The train workers' coordinator (trainers.online._Coordinator, used as a Ray actor; here as a plain object):
commands reach every worker, results are the workers' union, and a restarted worker loses the run's learners
(TrainerLost: the driver recovers from the last checkpoint or stops)."""

import asyncio

import pytest

from trainers.online import TrainerLost, _Coordinator


def _run(coroutine):
    return asyncio.run(coroutine)


def test_commands_reach_every_worker_and_results_are_their_union():
    async def scenario():
        coordinator = _Coordinator(world=2)
        await coordinator.put(0, ("train", 0, {}))
        assert await coordinator.get(0, "a") == ("train", 0, {})
        assert await coordinator.get(1, "b") == ("train", 0, {})
        await coordinator.put_result(("train", 0), {"arm0": 1, "arm2": 3}, 0)
        waiting = asyncio.ensure_future(coordinator.get_result(("train", 0)))
        await asyncio.sleep(0)
        assert not waiting.done()  # one worker's part is not the result
        await coordinator.put_result(("train", 0), {"arm1": 2}, 1)
        return await waiting

    assert _run(scenario()) == {"arm0": 1, "arm2": 3, "arm1": 2}


def test_commands_reach_the_workers_in_the_order_the_driver_sent_them():
    """Ray may run an async actor's tasks out of order: tick 1's command arriving before tick 0's waits for it."""
    async def scenario():
        coordinator = _Coordinator(world=2)
        await coordinator.put(1, ("train", 1, {}))
        await coordinator.put(2, ("snapshot", 1))
        first = asyncio.ensure_future(coordinator.get(0, "a"))
        await asyncio.sleep(0)
        assert not first.done()  # nothing before command 0
        await coordinator.put(0, ("train", 0, {}))
        worker1 = [await coordinator.get(1, "b") for _ in range(2)]
        return [await first, await coordinator.get(0, "a"), await coordinator.get(0, "a")], worker1

    worker0, worker1 = _run(scenario())
    assert worker0 == [("train", 0, {}), ("train", 1, {}), ("snapshot", 1)]
    assert worker1 == [("train", 0, {}), ("train", 1, {})]


def test_a_command_number_sent_twice_is_refused():
    async def scenario():
        coordinator = _Coordinator(world=1)
        await coordinator.put(0, ("train", 0, {}))
        with pytest.raises(ValueError, match="number 0 was sent twice"):
            await coordinator.put(0, ("train", 0, {}))

    _run(scenario())


def test_a_restarted_worker_stops_the_run_instead_of_training_blank_learners():
    async def scenario():
        coordinator = _Coordinator(world=1)
        await coordinator.put(0, ("train", 0, {}))
        await coordinator.put(1, ("train", 1, {}))
        assert (await coordinator.get(0, "first"))[1] == 0  # the first worker took tick 0, then died
        waiting = asyncio.ensure_future(coordinator.get_result(("train", 0)))
        await asyncio.sleep(0)
        assert await coordinator.get(0, "second") == ("stop",)  # Ray Train's replacement is told to stop
        with pytest.raises(TrainerLost, match="was restarted during the run"):
            await waiting  # the driver waiting for tick 0 hears why
        with pytest.raises(TrainerLost, match="lost their state"):
            await coordinator.get_result(("train", 1))
        assert "rank 0" in await coordinator.is_restarted()  # the driver's check before it trusts the learners

    _run(scenario())


def test_stop_drops_the_commands_no_worker_has_taken():
    """At a run's end the ticks submitted last are never published: the workers stop without training them."""
    async def scenario():
        coordinator = _Coordinator(world=1)
        for seq in range(3):
            await coordinator.put(seq, ("train", seq, {}))
        assert (await coordinator.get(0, "a"))[1] == 0  # training tick 0 when the run ends
        await coordinator.stop()
        await coordinator.put(3, ("train", 3, {}))  # a command that reached the coordinator after the stop
        return await coordinator.get(0, "a")

    assert _run(scenario()) == ("stop",)


def test_stop_keeps_for_every_worker_the_commands_one_of_them_has_taken():
    """Workers that train together (DDP) must take the same commands: one already in tick 1's collective waits for
    its peer, which still has to take tick 1 before it stops."""
    async def scenario():
        coordinator = _Coordinator(world=2)
        for seq in range(3):
            await coordinator.put(seq, ("train", seq, {}))
        for _ in range(2):
            await coordinator.get(0, "a")  # rank 0 took ticks 0 and 1
        await coordinator.get(1, "b")  # rank 1 only tick 0
        await coordinator.stop()
        rank0 = [await coordinator.get(0, "a")]
        rank1 = [await coordinator.get(1, "b"), await coordinator.get(1, "b")]
        return rank0, rank1

    rank0, rank1 = _run(scenario())
    assert rank0 == [("stop",)]
    assert rank1 == [("train", 1, {}), ("stop",)]


def test_a_worker_waiting_for_a_command_is_stopped():
    async def scenario():
        coordinator = _Coordinator(world=1)
        waiting = asyncio.ensure_future(coordinator.get(0, "a"))
        await asyncio.sleep(0)
        await coordinator.stop()
        return await waiting

    assert _run(scenario()) == ("stop",)
