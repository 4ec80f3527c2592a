"""Tests of simulator.tracking: MLflow parent/child runs, resume, failure, tables and plots."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient

from simulator.config import ArmSpec, Scenario
from simulator.tracking import (
    RunTracker,
    flatten_params,
    format_comparison_markdown,
    format_comparison_rich,
    plot_dac,
    plot_expo_reach,
    plot_exposures_by_age,
)

ARMS = ["control", "fresh"]
DAYS = 3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One sqlite db per module: creating MLflow's tables takes a few seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def day_metrics(arm: str, day: int) -> dict[str, float]:
    bump = 1.5 if arm == "fresh" else 1.0
    return {"expo_reach_10": (day + 1) * 4 * bump, "expo_reach_50": day * bump, "dac": 20 + day + bump, "exposures": 1000.0 + day}


def outputs(days: int = DAYS):
    daily = {a: pl.DataFrame([{"day": d, **day_metrics(a, d)} for d in range(days)]) for a in ARMS}
    overall = {a: {"expo_reach_10": float(daily[a]["expo_reach_10"][-1]), "dac": float(daily[a]["dac"].mean())} for a in ARMS}
    comparison = pl.DataFrame(
        {
            "metric": ["expo_reach_10", "dac"],
            "arm": ["fresh", "fresh"],
            "control_value": [12.0, 21.0],
            "arm_value": [18.0, 21.5],
            "lift": [0.5, 0.0238],
            "ci_low": [0.21, -0.01],
            "ci_high": [0.8, 0.06],
        }
    )
    age = {
        a: pl.DataFrame({"age_bin": ["<1h", "1-6h", "6-24h", "1-3d", ">3d"], "exposures": [50 * (a == "fresh") + 10, 80, 120, 300, 500]})
        for a in ARMS
    }
    return daily, overall, comparison, age


def scenario() -> Scenario:
    return Scenario(
        name="tiny",
        description="test",
        arms=[ArmSpec(name="control", share=0.5), ArmSpec(name="fresh", kind="fresh_boost", share=0.5)],
        control="control",
    )


def children(client: MlflowClient, parent_id: str) -> dict[str, str]:
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {r.data.tags["coldsim.arm"]: r.info.run_id for r in runs}


def test_start_log_finish(uri):
    tracker = RunTracker(uri, "full")
    params = flatten_params(scenario())
    pid = tracker.start("tiny", params, ARMS, {"coldsim.scale": "tiny"})
    for d in range(DAYS):
        tracker.log_day(d, {a: day_metrics(a, d) for a in ARMS})
    tracker.log_parent_metrics({"tick_seconds": 0.5}, step=1)
    extra = Path(tracker.client.tracking_uri.removeprefix("sqlite:///")).parent / "scenario.json"
    extra.write_text(scenario().model_dump_json())
    tracker.finish(*outputs(), control="control", extra_artifacts={"config/scenario.json": extra})

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("full")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [pid]
    parent = parents[0]
    assert parent.info.run_name == "tiny" and parent.info.status == "FINISHED"
    assert parent.data.tags["coldsim.scale"] == "tiny"
    assert parent.data.params["arm.fresh.kind"] == "fresh_boost"
    assert parent.data.params["metrics.expo_k"] == "[10,50,200]"
    assert parent.data.metrics["lift.fresh.expo_reach_10"] == pytest.approx(0.5)
    assert parent.data.metrics["lift.fresh.dac.ci_low"] == pytest.approx(-0.01)
    assert "lift.control.dac" not in parent.data.metrics

    kids = children(client, pid)
    assert sorted(kids) == ARMS
    for arm, rid in kids.items():
        run = client.get_run(rid)
        assert run.info.run_name == arm and run.info.status == "FINISHED"
        assert parent.data.tags[f"coldsim.child.{arm}"] == rid
        assert run.data.params["share"] == "0.5" and "stack.new_item_boost" in run.data.params
        hist = client.get_metric_history(rid, "expo_reach_10")
        assert sorted(m.step for m in hist) == [0, 1, 2]
        assert {m.step: m.value for m in hist}[2] == day_metrics(arm, 2)["expo_reach_10"]
        assert run.data.metrics["overall.dac"] == pytest.approx(outputs()[1][arm]["dac"])
        assert len(client.get_metric_history(rid, "dac")) == DAYS  # overall values don't pollute the history

    top = {f.path for f in client.list_artifacts(pid)}
    assert {"comparison.csv", "comparison.md", "daily_control.csv", "daily_fresh.csv", "plots", "config"} <= top
    plots = {f.path: f.file_size for f in client.list_artifacts(pid, "plots")}
    assert set(plots) == {"plots/expo_reach.png", "plots/dac.png", "plots/exposures_by_age.png"}
    assert all(size > 1000 for size in plots.values())
    md = Path(client.download_artifacts(pid, "comparison.md", str(extra.parent / "dl"))).read_text()
    assert "| expo_reach_10 | 12 | fresh | 18 | +50.0% ▲ | [+21.0%, +80.0%] |" in md
    assert client.list_artifacts(pid, "config")[0].path == "config/scenario.json"


def test_resume_continues_the_same_runs(uri):
    first = RunTracker(uri, "resume")
    pid = first.start("tiny", flatten_params(scenario()), ARMS, {})
    first.log_day(0, {a: day_metrics(a, 0) for a in ARMS})
    ids = dict(first.child_run_ids)

    second = RunTracker(uri, "resume")
    second.resume(pid)
    assert second.child_run_ids == ids
    second.log_day(1, {a: day_metrics(a, 1) for a in ARMS})
    second.finish(*outputs(2), control="control")

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_run(pid).info.experiment_id])
    assert len(runs) == 3
    assert children(client, pid) == ids
    for arm, rid in ids.items():
        assert sorted(m.step for m in client.get_metric_history(rid, "dac")) == [0, 1]
        assert client.get_run(rid).info.status == "FINISHED"

    with pytest.raises(ValueError, match="no MLflow run 'deadbeef'"):
        RunTracker(uri, "resume").resume("deadbeef")


def test_fail_keeps_what_was_logged(uri):
    tracker = RunTracker(uri, "fail")
    RunTracker(uri, "fail").fail("nothing started")  # a no-op
    pid = tracker.start("tiny", {"seed": 0}, ARMS, {})
    tracker.log_day(0, {a: day_metrics(a, 0) for a in ARMS})
    tracker.fail("boom: " + "x" * 10_000)

    client = MlflowClient(uri)
    for rid in [pid, *tracker.child_run_ids.values()]:
        run = client.get_run(rid)
        assert run.info.status == "FAILED"
        assert run.data.tags["coldsim.error"].startswith("boom: ")
    assert client.get_run(tracker.child_run_ids["fresh"]).data.metrics["dac"] == day_metrics("fresh", 0)["dac"]
    assert client.get_run(pid).data.params == {"seed": "0"}


def test_plots_are_nonempty_pngs(tmp_path):
    daily, _, _, age = outputs()
    paths = [
        plot_expo_reach(daily, "control", tmp_path / "a" / "expo.png"),
        plot_dac(daily, "control", tmp_path / "dac.png"),
        plot_exposures_by_age(age, "control", tmp_path / "age.png"),
    ]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    no_expo = {a: df.select("day", "dac") for a, df in daily.items()}
    assert plot_expo_reach(no_expo, "control", tmp_path / "none.png") is None


def test_flatten_params():
    p = flatten_params(scenario())
    assert p["arm.control.share"] == "0.5"
    assert p["arm.fresh.stack.rank_weights"] == '{"like":1.0,"comment":1.0,"follow":2.0,"view":0.3}'
    assert p["world.creator_elasticity"] == "0.5"
    assert not any(k.startswith("arms") for k in p)
    assert "scales" not in flatten_params(scenario(), exclude={"scales"})
    long = scenario().model_copy(update={"description": "y" * 7000})
    assert len(flatten_params(long)["description"]) == 6000


def test_comparison_formats():
    _, _, comparison, _ = outputs()
    md = format_comparison_markdown(comparison, "control")
    assert "| metric | control | arm | value | lift % | 95% CI |" in md
    assert "| dac | 21 | fresh | 21.5 | +2.4% | [-1.0%, +6.0%] |" in md

    from rich.console import Console

    table = format_comparison_rich(comparison, "control")
    console = Console(record=True, width=120)
    console.print(table)
    text = console.export_text()
    assert "+2.4% [\u22121.0%, +6.0%]" in text and "+50.0% [+21.0%, +80.0%]" in text
    cells = list(table.columns[4].cells)
    assert cells[0].startswith("[green]") and not cells[1].startswith("[")
