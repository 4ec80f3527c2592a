"""The `simulate` command as a user types it (in-process runtime, tiny scale)."""

from __future__ import annotations

from mlflow import MlflowClient
from typer.testing import CliRunner

from simulator.run.cli import app

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
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())  # rich wraps long paths
    offline = runner.invoke(app, ["--scenario", "next_user_ablation", "--scale", "tiny", "--replicates", "3",
                                  "--sweep", "world.creator_elasticity=0.2,0.5"])
    assert offline.exit_code == 2 and "--replicates N pools N seeds of the protocol" in " ".join(offline.output.split())
    start = runner.invoke(app, ["--scale", "tiny", "--start", "2024-01-01", "--dry-run"])
    assert start.exit_code == 2 and "--start picks the window of a real log" in start.output
    shards = runner.invoke(app, ["--scale", "tiny", "--arm-replicas", "3", "--dry-run"])
    assert shards.exit_code == 0 and "every arm in 3 shards" in " ".join(shards.output.split())
    placed = runner.invoke(app, ["--scale", "tiny", "--arm-replicas", "3", "--set", 'serve.shard_resources=[{"a": 1}]',
                                 "--dry-run"])
    assert placed.exit_code == 2 and "shard_resources has 1 entries for arm_replicas=3" in " ".join(placed.output.split())


def test_a_long_real_log_replays_its_densest_window_and_warns(tmp_path, monkeypatch):
    """A 40-day implicit log (every row a 'view', no interactions) with a busy week: a 3-day run replays the
    densest window and says the log has no interaction events (docs/sources.md, "Windows and warnings")."""
    monkeypatch.chdir(tmp_path)
    day = 86_400
    rows = ["user,item,ts"] + [f"{u},{(u * 7 + d) % 50},{1_600_000_000 + d * day + u}" for d in range(40)
                               for u in range(40 if 20 <= d < 27 else 2)]
    (tmp_path / "plays.csv").write_text("\n".join(rows) + "\n")
    spec = "tabular:plays.csv?user_id=user&item_id=item&event=view&creator_group_size=1"
    res = runner.invoke(app, ["--scale", "tiny", "--log", spec, "--dry-run"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "densest 3-day window of 40 days" in out
    assert "warning: log 'tabular:plays.csv': no interaction events" in out
    assert "3 of 3 replayed days have fewer than 100 events" in out  # 40 plays a day, even in the busy week


def test_tiny_local_run_prints_table_and_records_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    res = runner.invoke(app, ["--scenario", "coldstart_ab", "--scale", "tiny", "--days", "1", "--runtime", "local",
                              "--no-progress", "--tracking-uri", uri, "--run-root", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "expo_reach_5" in res.output and "simulated exposures" in res.output
    exp = MlflowClient(uri).get_experiment_by_name("coldsim")
    runs = MlflowClient(uri).search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["base", "coldstart_ab", "dualrec_v5", "ihm", "next_user"]
    parent = next(r for r in runs if r.info.run_name == "coldstart_ab")
    url = f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning"
    assert url in res.output  # where to click, once `mlflow ui` runs
    note = parent.data.tags["mlflow.note.content"]  # the run page shows the answer first
    assert note.startswith("**coldstart_ab**: ") and "seed 0, scale tiny" in note.replace("Seed", "seed")
    assert "**Answer**" in note.split("\n\n")[1]  # the answer in one line, before the table (shown above 'Show more')
    assert "| metric | arm | control | arm value | lift [95% CI] | significant |" in note
    assert "| expo_reach_5 | next_user |" in note and "| view_rate | ihm |" in note and "plots/forest.png" in note
    child = next(r for r in runs if r.info.run_name == "ihm").data.metrics
    assert {"kpi/expo_reach_5", "kpi/dac", "guard/view_rate", "lift/dac", "daily/dac"} <= set(child)


def test_ray_data_console_is_quiet_and_its_log_file_keeps_everything(monkeypatch, tmp_path):
    import logging

    from simulator.run import cli

    monkeypatch.delenv("RAY_DATA_LOGGING_CONFIG", raising=False)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    cli._quiet_ray_data()
    import os

    assert os.environ["RAY_DATA_LOGGING_CONFIG"] == str(tmp_path / "coldsim-ray-data-logging.yaml")
    from ray.data._internal.logging import configure_logging

    configure_logging()  # what `import ray.data` does: reads the file
    handlers = {type(h).__name__: h.level for h in logging.getLogger("ray.data").handlers}
    assert handlers["PlainRayHandler"] == logging.ERROR and handlers["SessionFileHandler"] == logging.NOTSET
    monkeypatch.setenv("RAY_DATA_LOGGING_CONFIG", "/mine.yaml")
    cli._quiet_ray_data()  # a user's own setting wins
    assert os.environ["RAY_DATA_LOGGING_CONFIG"] == "/mine.yaml"
