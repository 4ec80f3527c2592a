"""Faults (issue 14): a driver killed anywhere resumes to exactly the uninterrupted run's metrics, and a chaos run
(an arm replica, then the Train worker, then the driver killed at seeded random ticks) ends with them too.

The driver runs in a subprocess (tests/e2e/chaos_driver.py) so it can be SIGKILLed; the resume runs here, as
``simulate --resume`` does. ``heavy`` variants are left out of CI to keep it under 30 minutes (``pytest -m heavy``
runs them; they passed when written)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from scenarios import get_scenario
from simulator.core.storage import Location
from simulator.run.tracking import PARENT_TAG
from simulator.run.session import OPTIONS_TAG, RUN_DIR_TAG, RunOptions, options_of_run, resolve_scenario, run_scenario

DRIVER = Path(__file__).resolve().parent / "chaos_driver.py"
SCENARIO = "coldstart_ab"
DAYS = 3
OVERRIDES = {"checkpoint_every": 1}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in process: the Ray runtime equals it, tests/e2e/test_e2e_ray.py)."""
    opts = RunOptions(scenario=SCENARIO, scale="tiny", days=DAYS, runtime="local", overrides=OVERRIDES,
                      run_root=str(tmp_path_factory.mktemp("reference")))
    return run_scenario(get_scenario(SCENARIO), opts, tracking_uri=None)


def _ticks_per_day() -> int:
    return resolve_scenario(get_scenario(SCENARIO), RunOptions(scenario=SCENARIO, scale="tiny", days=DAYS)).ticks_per_day


def _killed_then_resumed(tmp_path: Path, runtime: str, faults: dict, overrides: dict = OVERRIDES):
    """Run the driver with ``faults`` until it kills itself, then resume the run here; the resumed outcome, the
    parent MLflow run and what the killed driver wrote to stderr."""
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    config = {"scenario": SCENARIO, "scale": "tiny", "days": DAYS, "runtime": runtime, "run_root": str(tmp_path / "runs"),
              "tracking": tracking, "overrides": overrides, **faults}
    (tmp_path / "config.json").write_text(json.dumps(config))
    killed = subprocess.run([sys.executable, str(DRIVER), str(tmp_path / "config.json")], capture_output=True, text=True,
                            timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    client = MlflowClient(tracking)
    parents = [run for run in client.search_runs([e.experiment_id for e in client.search_experiments()])
               if OPTIONS_TAG in run.data.tags and PARENT_TAG not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"  # killed: nobody marked it
    parent = parents[0].info.run_id
    opts = options_of_run(tracking, parent)
    resumed = run_scenario(get_scenario(opts.scenario), opts, tracking_uri=tracking, resume_run_id=parent)
    return resumed, client.get_run(parent), killed.stderr


def _same(resumed, reference) -> None:
    assert resumed.result.overall == reference.result.overall
    for arm, daily in reference.result.daily.items():
        assert resumed.result.daily[arm].equals(daily), arm


@pytest.mark.heavy  # CI: the chaos test kills the driver at a seeded tick, and tests/simulator/test_loop_local.py
# resumes in process from no checkpoint and past a half-written one
@pytest.mark.parametrize("fault", ["tick", "before_first_checkpoint", "checkpoint_write", "mlflow_logging"])
def test_a_driver_killed_anywhere_resumes_to_the_uninterrupted_metrics(fault, reference, tmp_path):
    ticks = _ticks_per_day()
    rng = np.random.default_rng(14)  # the seeded random tick: anywhere after the first checkpoint
    faults = {"tick": {"driver_tick": int(rng.integers(ticks + 1, DAYS * ticks))},
              "before_first_checkpoint": {"driver_tick": 1},
              "checkpoint_write": {"driver_checkpoint": 2},  # day 1's, half written under its temporary name
              "mlflow_logging": {"driver_mlflow": 1}}[fault]
    resumed, parent, _ = _killed_then_resumed(tmp_path, "local", faults)
    _same(resumed, reference)
    assert parent.info.status == "FINISHED"
    run_dir = Location.of(parent.data.tags[RUN_DIR_TAG])
    assert not (run_dir / "checkpoints").exists()  # a finished run keeps no checkpoint (a half-written one neither)


def _chaos(tmp_path, reference, seed: int, runtime_overrides: dict | None = None):
    ticks = _ticks_per_day()
    rng = np.random.default_rng(seed)
    replica = int(rng.integers(ticks + 1, 2 * ticks))  # during day 1 (after day 0's checkpoint)
    worker = replica + 1  # the first tick of day 1 played again (the next tick found the replica lost)
    # after day 1's end has waited for the dead worker's ticks (the second recovery), within the next day
    driver = worker + ticks + int(rng.integers(1, ticks + 1))
    faults = {"replica": ["ihm", replica], "worker": worker, "driver_tick": driver}
    resumed, parent, stderr = _killed_then_resumed(tmp_path, "ray", faults, {**OVERRIDES, **(runtime_overrides or {})})
    assert stderr.count("recovering in place from the last checkpoint") == 2, stderr[-3000:]  # then the driver died
    _same(resumed, reference)
    assert parent.info.status == "FINISHED"


@pytest.mark.ray
def test_chaos_replica_then_train_worker_then_driver_killed_ends_with_the_clean_metrics(reference, tmp_path):
    """An arm replica, then the Train worker (both recovered in place), then the driver (resumed) killed at seeded
    random ticks of a Ray-runtime run: the final metrics equal the clean run's."""
    _chaos(tmp_path, reference, seed=0)


@pytest.mark.ray
@pytest.mark.heavy
@pytest.mark.parametrize("seed", [1, 2])
def test_chaos_at_other_seeds_and_with_sharded_arms(seed, reference, tmp_path):
    _chaos(tmp_path, reference, seed=seed, runtime_overrides={"serve.arm_replicas": 2})
