"""A real run through the driver on the in-process runtime: no leakage between arms, deterministic per seed."""

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from scenarios import get_scenario
from simulator.core.diversion import HOLDOUT
from simulator.run.loop import Simulation
from simulator.run.runtime import LocalRuntime
from simulator.run.session import RunOptions, run_scenario
from simulator.sources.synthetic import generate_synthetic

DAYS = 2


@pytest.fixture(scope="module")
def scenario():
    sc = get_scenario("coldstart_ab").at_scale("tiny")
    return sc.model_copy(update={"days": DAYS})


@pytest.fixture(scope="module")
def log(scenario):
    return generate_synthetic(scenario.synthetic, scenario.seed)


def _run(sc, log, tmp_path_factory):
    sim = Simulation(sc, log, LocalRuntime, tmp_path_factory.mktemp("run"), progress=False)
    sim.run()
    return sim


def _exposures(sim) -> dict[str, pl.DataFrame]:
    return {a.name: pl.concat(a.exposures) for a in sim.arms}


@pytest.fixture(scope="module")
def sim(scenario, log, tmp_path_factory):
    return _run(scenario, log, tmp_path_factory)


def test_run_produces_exposures_in_every_arm(sim):
    assert sim.days == DAYS
    for name, ex in _exposures(sim).items():
        assert ex.height > 1000, name
        assert set(ex["day"].unique().to_list()) == set(range(DAYS))


def test_exposed_creator_is_in_the_users_arm(sim):
    div = sim.diversion
    for a in sim.arms:
        ex = pl.concat(a.exposures)
        u_arm = div.arm_of_users(ex["user_id"].to_numpy())
        c_arm = div.arm_of_creators(ex["creator_id"].to_numpy())
        assert (u_arm == a.index).all(), f"{a.name}: exposures to users of another arm"
        assert (c_arm == a.index).all(), f"{a.name}: exposed items of another arm's creators"
        # the creator recorded with the exposure is the item's real creator in the world
        rows = sim.world.items.rows(ex["item_id"].to_numpy())
        np.testing.assert_array_equal(sim.world.item_creator[rows], ex["creator_id"].to_numpy())
        # and no item was exposed before its upload
        assert (ex["upload_ts"] <= ex["ts"]).all()


def test_each_arm_only_gets_its_own_creators_uploads(sim):
    div = sim.diversion
    for a in sim.arms:
        up = pl.concat(a.uploads)
        assert up.height > 0
        assert (div.arm_of_creators(up["creator_id"].to_numpy()) == a.index).all()
        # what the arm's serving stack actually holds: catalogue + uploads, all of its own creators
        store = sim.runtime.policies[a.name].store
        held = store.item_creator[: store.n_items]
        assert store.n_items > up.height  # the pre-day-0 catalogue is there too
        assert (div.arm_of_creators(held) == a.index).all()
        # the arm's users are exactly the users of its bucket
        assert (div.arm_of_users(a.users) == a.index).all()
    # users and creators of the two arms are disjoint, and nobody served is held out
    u0, u1 = sim.arms[0].users, sim.arms[1].users
    assert len(np.intersect1d(u0, u1)) == 0
    assert len(np.intersect1d(sim.arms[0].creators, sim.arms[1].creators)) == 0
    assert (div.arm_of_users(np.concatenate([u0, u1])) != HOLDOUT).all()


def test_same_seed_same_exposures_other_seed_differs(sim, scenario, log, tmp_path_factory):
    first = _exposures(sim)
    again = _exposures(_run(scenario, log, tmp_path_factory))
    for name in first:
        assert first[name].equals(again[name]), f"{name}: same seed, different exposures"
    other = _exposures(_run(scenario.model_copy(update={"seed": scenario.seed + 1}), log, tmp_path_factory))
    assert any(not first[n].equals(other[n]) for n in first)


def test_run_does_not_mutate_the_log(scenario, log, tmp_path_factory):
    """Dynamic uploads are registered in the world's own copy of the response model, not the Log's."""
    n_truth_items = len(log.truth.items)
    # creators that react within a day (the default half-life of a week adds almost nothing in a 2-day run)
    fast = scenario.world.model_copy(update={"satisfaction_halflife_days": 0.25, "creator_elasticity": 2.0})
    sim = _run(scenario.model_copy(update={"seed": 7, "world": fast}), log, tmp_path_factory)
    n_dynamic = sum(int((u["origin"] == "dynamic").sum()) for a in sim.arms for u in a.uploads)
    assert n_dynamic > 0  # the run did create items
    assert len(log.truth.items) == n_truth_items


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(sim, scenario, log, tmp_path_factory):
    """Stop after day 0 (as an interrupted run would), resume from its checkpoint in a new driver: same metrics."""
    run_dir = tmp_path_factory.mktemp("resume")
    first = Simulation(scenario, log, LocalRuntime, run_dir, progress=False)
    first.days = 1
    first.run()
    resumed = Simulation(scenario, log, LocalRuntime, run_dir, progress=False)
    assert resumed.restore_latest() == 1
    result, uninterrupted = resumed.run(), sim.results()
    assert result.events == uninterrupted.events
    assert result.overall == uninterrupted.overall
    assert result.comparison.equals(uninterrupted.comparison)
    for name, frame in _exposures(sim).items():
        assert pl.concat(resumed.arms[resumed.arm_names.index(name)].exposures).equals(frame), name
    assert set(result.timings) >= {"setup", "runtime_start", "replay", "world", "serve", "train", "metrics", "checkpoint"}


def test_checkpoints_are_due_every_n_days_and_on_an_early_stop_never_on_the_last_day():
    def due(every: int, days: int, planned: int) -> list[int]:
        sim = SimpleNamespace(scenario=SimpleNamespace(checkpoint_every=every), days=days, planned_days=planned)
        return [day for day in range(days) if Simulation.checkpoint_due(sim, day)]

    assert due(1, 3, 3) == [0, 1]
    assert due(3, 14, 14) == [2, 5, 8, 11]
    assert due(3, 5, 14) == [2, 4]  # stopped after day 4: its state is saved for --resume


def test_resume_replays_the_days_after_an_older_checkpoint(scenario, log, tmp_path_factory):
    """A run whose latest checkpoint is days old (checkpoint_every > 1, or a newer one lost) resumes from it and
    replays the days after it, over their stale exposure files: the same metrics as the uninterrupted run."""
    three_days = scenario.model_copy(update={"days": 3, "checkpoint_every": 1})
    run_dir = tmp_path_factory.mktemp("replay")
    full = Simulation(three_days, log, LocalRuntime, run_dir, progress=False, keep_last=2)
    uninterrupted = full.run()
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["day=0000.pkl", "day=0001.pkl"]  # none after the last day
    (checkpoints / "day=0001.pkl").unlink()
    resumed = Simulation(three_days, log, LocalRuntime, run_dir, progress=False)
    assert resumed.restore_latest() == 1
    result = resumed.run()  # days 1 and 2 again
    assert result.events == uninterrupted.events
    assert result.overall == uninterrupted.overall
    assert result.comparison.equals(uninterrupted.comparison)
    for name, frame in _exposures(full).items():
        assert pl.concat(resumed.arms[resumed.arm_names.index(name)].exposures).equals(frame), name


def _dir_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_a_finished_run_deletes_its_checkpoints_unless_kept_and_an_interrupted_one_keeps_them(scenario, tmp_path):
    """Retention (``RunOptions.keep_checkpoints``) and the size of a finished tiny run's directory (<= 50 MB)."""
    every_day = scenario.model_copy(update={"checkpoint_every": 1})
    finished = run_scenario(every_day, RunOptions(scenario=scenario.name, runtime="local", run_root=str(tmp_path / "a")),
                            tracking_uri=None).result.run_dir
    assert not (finished / "checkpoints").exists() and list((finished / "exposures").rglob("day=*.parquet"))
    assert _dir_bytes(finished) <= 50 * 2**20, _dir_bytes(finished)
    kept = run_scenario(every_day, RunOptions(scenario=scenario.name, runtime="local", run_root=str(tmp_path / "b"),
                                              keep_checkpoints=True), tracking_uri=None).result.run_dir
    assert [p.name for p in (kept / "checkpoints").iterdir()] == ["day=0000.pkl"]
    stopped = run_scenario(every_day, RunOptions(scenario=scenario.name, runtime="local", run_root=str(tmp_path / "c")),
                           tracking_uri=None, stop_after_day=0).result.run_dir
    assert [p.name for p in (stopped / "checkpoints").iterdir()] == ["day=0000.pkl"]


class _LosesOnce:
    """A local runtime whose recommend raises ComponentLost at given calls (a replica lost mid-tick)."""

    def __init__(self, calls: set[int]):
        self.calls, self.count, self.recovered = calls, 0, 0

    def __call__(self, spec):
        from simulator.run.runtime import ComponentLost

        runtime = LocalRuntime(spec)
        recommend, outer = runtime.recommend, self

        def flaky(requests):
            outer.count += 1
            if outer.count in outer.calls:
                raise ComponentLost(f"test: replica lost at call {outer.count}")
            return recommend(requests)

        def recover():
            outer.recovered += 1

        runtime.recommend, runtime.recover = flaky, recover
        return runtime


def test_a_lost_component_is_recovered_in_place_from_the_last_checkpoint(scenario, log, sim, tmp_path):
    """ComponentLost during day 1 (after day 0's checkpoint), twice: each time the run goes back to the checkpoint
    and plays day 1 again, and ends with exactly the metrics of the uninterrupted run."""
    every_day = scenario.model_copy(update={"checkpoint_every": 1})
    faults = _LosesOnce({14, 17})  # day 0 makes recommend calls 1..11, day 1 12..20 (then again from 15, and 18)
    recovered = Simulation(every_day, log, faults, tmp_path / "run", progress=False)
    result = recovered.run()
    assert recovered.recoveries == faults.recovered == 2
    assert result.overall == sim.results().overall
    for arm in sim.arms:
        assert pl.concat(arm.exposures).equals(pl.concat(recovered.arms[arm.index].exposures)), arm.name


def test_a_component_lost_before_any_checkpoint_or_too_often_stops_the_run(scenario, log, tmp_path):
    from simulator.run.recovery import MAX_RECOVERIES

    early = Simulation(scenario, log, _LosesOnce({2}), tmp_path / "early", progress=False)
    with pytest.raises(RuntimeError, match=r"test: replica lost at call 2; .*no checkpoint to recover from yet \(day 0"):
        early.run()
    every_day = scenario.model_copy(update={"checkpoint_every": 1})
    often = Simulation(every_day, log, _LosesOnce(set(range(14, 1000, 2))), tmp_path / "often", progress=False)
    with pytest.raises(RuntimeError, match=f"stops after {MAX_RECOVERIES} recoveries in place"):
        often.run()


def _stop_at_first_tick():
    """A progress bar that stops the driver at its first tick (an exception where a SIGKILL would be)."""
    import contextlib

    def advance(is_ticks):
        if is_ticks:
            raise KeyboardInterrupt("stopped at the first tick")

    return contextlib.nullcontext(SimpleNamespace(add_task=lambda description, **_: description.startswith("ticks"),
                                                  advance=advance))


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_day_0(sim, scenario, tmp_path):
    """(tests/e2e/test_e2e_faults.py kills the driver there for real; marked heavy.)"""
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    opts = RunOptions(scenario=scenario.name, runtime="local", run_root=str(tmp_path / "runs"))
    with pytest.raises(KeyboardInterrupt):
        run_scenario(scenario, opts, tracking_uri=tracking, progress_factory=_stop_at_first_tick)
    from mlflow import MlflowClient

    from simulator.run.session import OPTIONS_TAG
    from simulator.run.tracking import PARENT_TAG

    client = MlflowClient(tracking)
    parent = next(r.info.run_id for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
                  if OPTIONS_TAG in r.data.tags and PARENT_TAG not in r.data.tags)
    resumed = run_scenario(scenario, opts, tracking_uri=tracking, resume_run_id=parent)
    assert resumed.result.overall == sim.results().overall


def test_a_half_written_checkpoint_is_ignored_on_resume(sim, scenario, log, tmp_path):
    """A driver killed halfway through writing day 1's checkpoint leaves day 0's and a partial temporary file: the
    resume starts after day 0 and ends with the uninterrupted metrics."""
    every_day = scenario.model_copy(update={"checkpoint_every": 1, "days": 3})
    reference = Simulation(every_day, log, LocalRuntime, tmp_path / "reference", progress=False).run()
    first = Simulation(every_day, log, LocalRuntime, tmp_path / "run", progress=False)
    first.days = 1
    first.run()
    whole = (tmp_path / "run" / "checkpoints" / "day=0000.pkl").read_bytes()
    (tmp_path / "run" / "checkpoints" / "day=0001.pkl.tmp").write_bytes(whole[: len(whole) // 2])
    resumed = Simulation(every_day, log, LocalRuntime, tmp_path / "run", progress=False)
    assert resumed.restore_latest() == 1
    assert resumed.run().overall == reference.overall
