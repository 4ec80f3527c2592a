"""`simulate` as a user runs it: the installed console script in a fresh process, on Ray, ends with exit status 0
after recording the run in MLflow. The suite's other end-to-end tests run the simulation inside the pytest
process, which never shows how a real process exits (Ray's and Serve's teardown, the background threads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.ray

SIMULATE = Path(sys.executable).with_name("simulate")


def test_simulate_on_ray_exits_cleanly_and_records_the_run(tmp_path):
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    res = subprocess.run([str(SIMULATE), "--scenario", "coldstart_ab", "--scale", "tiny", "--days", "1",
                          "--tracking-uri", tracking, "--storage", str(tmp_path / "runs"), "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert "MLflow: parent run" in res.stdout
    assert "Segmentation fault" not in res.stderr and "Fatal Python error" not in res.stderr
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("coldsim").experiment_id])
    assert len(runs) == 5  # the parent and its four arms
    assert {run.info.status for run in runs} == {"FINISHED"}
