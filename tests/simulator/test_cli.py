"""The `simulate` command as a user types it (in-process runtime, tiny scale)."""

from __future__ import annotations

from mlflow import MlflowClient
from typer.testing import CliRunner

from simulator.cli import app

runner = CliRunner()


def test_list_shows_scenarios():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0, res.output
    assert "coldstart_ab" in res.output and "next_user" in res.output


def test_unknown_scenario_is_a_clear_error():
    res = runner.invoke(app, ["--scenario", "nope"])
    assert res.exit_code == 2
    assert "unknown scenario 'nope'" in res.output and "coldstart_ab" in res.output


def test_unknown_scale_is_a_clear_error():
    res = runner.invoke(app, ["--scale", "huge", "--runtime", "local"])
    assert res.exit_code == 2 and "no scale 'huge'" in res.output


def test_resume_of_unknown_run_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["--resume", "deadbeef", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert res.exit_code == 2 and "deadbeef" in res.output


def test_bad_log_path_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["--runtime", "local", "--log", str(tmp_path / "missing.csv"), "--no-progress",
                              "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--run-root", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "missing.csv" in res.output


def test_dry_run_validates_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["--scenario", "oracle_ab", "--scale", "tiny", "--runtime", "local", "--replicates", "2",
                              "--dry-run"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "dry run: scenario oracle_ab (ab), scale tiny, 3 days, seed 0, 2 replicates" in out
    assert "base(base, 50%), oracle_match(oracle_match, 50%)" in out and "1,500 users, 150 creators" in out
    assert "runtime local on in-process" in out
    assert not any(tmp_path.iterdir())  # no run directory, no MLflow database
    bad = runner.invoke(app, ["--log", "synthetic:?n_users=abc", "--dry-run"])
    assert bad.exit_code == 2 and "n_users" in bad.output
    missing = runner.invoke(app, ["--log", f"tabular:{tmp_path / 'nope.csv'}", "--dry-run"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_tiny_local_run_prints_table_and_records_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    res = runner.invoke(app, ["--scenario", "coldstart_ab", "--scale", "tiny", "--days", "1", "--runtime", "local",
                              "--no-progress", "--tracking-uri", uri, "--run-root", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "expo_reach_5" in res.output and "simulated exposures" in res.output
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("coldsim").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["base", "coldstart_ab", "dualrec_v5", "ihm", "next_user"]
