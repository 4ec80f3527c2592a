"""Replicates and sweeps run concurrently in Ray tasks: the same numbers and the same MLflow record as one after
another."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest
from mlflow import MlflowClient
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from scenarios import get_scenario
from simulator.run.cli import app
from simulator.run.groups import run_replicates
from simulator.run.session import RunOptions

pytestmark = pytest.mark.ray


def _runs(uri: str):
    client = MlflowClient(uri)
    return client, client.search_runs([client.get_experiment_by_name("coldsim").experiment_id])


def test_parallel_replicates_equal_sequential_ones(tmp_path):
    scenario = get_scenario("boost_ab")
    opts = RunOptions(scenario="boost_ab", scale="tiny", days=1, seed=3, runtime="local", run_root=str(tmp_path / "runs"))
    uris = {mode: f"sqlite:///{tmp_path}/{mode}.db" for mode in ("sequential", "parallel")}
    sequential = run_replicates(scenario, opts, 2, tracking_uri=uris["sequential"], parallel=1)
    parallel = run_replicates(scenario, opts, 2, tracking_uri=uris["parallel"], parallel=2)
    assert parallel.seeds == sequential.seeds == [3, 4]
    assert_frame_equal(parallel.table, sequential.table)
    for one, other in zip(sequential.runs, parallel.runs):
        assert one.result.overall == other.result.overall
        assert one.run_dir != other.run_dir
    # recorded alike: the same runs, parameters and metric keys, and every day's metrics with its step
    records = {}
    for mode, uri in uris.items():
        client, runs = _runs(uri)
        by_seed = {r.data.tags["coldsim.replicate_seed"]: r for r in runs if r.info.run_name == "boost_ab"}
        assert sorted(by_seed) == ["3", "4"]
        parent = by_seed["3"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        arm = next(c for c in children if c.info.run_name != "boost_ab")
        history = client.get_metric_history(arm.info.run_id, "daily/dac")  # logged live each day (step = day)
        records[mode] = (sorted(parent.data.params.items()), sorted(parent.data.metrics),
                         sorted((m.step, m.value) for m in history), sorted(arm.data.metrics))
        assert sum(r.info.run_name == "boost_ab-replicates" for r in runs) == 1
    seq, par = records["sequential"], records["parallel"]
    assert seq[0] == par[0] and seq[1] == par[1] and seq[3] == par[3]
    assert seq[2] == par[2] and [step for step, _ in seq[2]] == [0]


@pytest.mark.heavy  # keeps CI under 30 minutes; the in-process parallel replicates stay in CI
def test_parallel_ray_runtime_replicates_each_run_their_own_serve_app(tmp_path):
    """--runtime ray with --parallel 2: each task is a driver of its own (its Serve app, its TorchTrainer) on the
    one cluster; the runs equal in-process runs of the same seeds."""
    scenario = get_scenario("boost_ab")
    opts = RunOptions(scenario="boost_ab", scale="tiny", days=1, seed=3, run_root=str(tmp_path / "runs"))
    on_ray = run_replicates(scenario, opts, 2, tracking_uri=None, parallel=2)
    in_process = run_replicates(scenario, replace(opts, runtime="local"), 2, tracking_uri=None, parallel=1)
    for ray_run, local_run in zip(on_ray.runs, in_process.runs):
        assert ray_run.result.overall == local_run.result.overall
    assert_frame_equal(on_ray.table, in_process.table)


def test_parallel_sweep_through_the_cli(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    res = CliRunner().invoke(app, ["--scenario", "boost_ab", "--scale", "tiny", "--days", "1", "--runtime", "local",
                                   "--sweep", "world.creator_elasticity=0.0,1.0", "--parallel", "2", "--no-progress",
                                   "--tracking-uri", uri, "--run-root", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "at 2 points" in res.output
    assert "world.creator_elasticity=0.0" in res.output and "world.creator_elasticity=1.0" in res.output
    client, runs = _runs(uri)
    points = {r.data.tags.get("coldsim.sweep_point") for r in runs if r.info.run_name == "boost_ab"}
    assert points == {"world.creator_elasticity=0.0", "world.creator_elasticity=1.0"}
    elasticity = {r.data.tags["coldsim.sweep_point"]: r.data.params["world.creator_elasticity"]
                  for r in runs if r.info.run_name == "boost_ab"}
    assert elasticity == {"world.creator_elasticity=0.0": "0.0", "world.creator_elasticity=1.0": "1.0"}
    sweep = next(r for r in runs if r.info.run_name == "boost_ab-sweep")
    assert {a.path for a in client.list_artifacts(sweep.info.run_id)} >= {"sweep.md", "sweep.csv"}
    assert sweep.data.params["point.p1"] == "world.creator_elasticity=1.0"
    arm = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id)
    assert {"lift.p0.dac", "lift.p1.dac"} <= set(arm.data.metrics)  # each point's lift in the arm's child run
    table = pl.read_csv(client.download_artifacts(sweep.info.run_id, "sweep.csv", str(tmp_path)))
    assert set(table["point"]) == set(points) and "world.creator_elasticity" in table.columns
