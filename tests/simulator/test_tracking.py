"""Tests of simulator.run.tracking (MLflow parent/child runs, resume, failure) and of the tables and plots it logs
(simulator.run.report, simulator.run.plots)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient

from simulator.core.config import ArmSpec, MetricsConfig, Scenario
from simulator.run.plots import forest_frame, plot_dac, plot_expo_reach, plot_exposures_by_age, plot_forest
from simulator.run.replicates import aggregate_lifts, as_comparison
from simulator.run.report import (format_comparison_markdown, format_comparison_rich, format_replicates_markdown,
                                  metric_sort_key, undefined_reason)
from simulator.run.tracking import RunTracker, flatten_params, parent_url

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
        metrics=MetricsConfig(expo_k=[10, 50, 200]),  # fixed thresholds, as the daily outputs above
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
    assert parent.data.metrics["lift/fresh/expo_reach_10"] == pytest.approx(0.5)
    assert parent.data.metrics["lift/fresh/dac/ci_low"] == pytest.approx(-0.01)
    assert "lift/control/dac" not in parent.data.metrics
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3 opens the runs table

    kids = children(client, pid)
    assert sorted(kids) == ARMS
    for arm, rid in kids.items():
        run = client.get_run(rid)
        assert run.info.run_name == arm and run.info.status == "FINISHED"
        assert parent.data.tags[f"coldsim.child.{arm}"] == rid
        assert run.data.params["share"] == "0.5" and "stack.new_item_boost" in run.data.params
        hist = client.get_metric_history(rid, "daily/expo_reach_10")
        assert sorted(m.step for m in hist) == [0, 1, 2]
        assert {m.step: m.value for m in hist}[2] == day_metrics(arm, 2)["expo_reach_10"]
        assert run.data.metrics["kpi/dac"] == pytest.approx(outputs()[1][arm]["dac"])
        assert len(client.get_metric_history(rid, "daily/dac")) == DAYS  # overall values don't pollute the history
        assert len(hist) == DAYS  # finish does not log again what log_day logged
    # the treatment arm's child run carries its lifts under the same names as every arm's metrics
    fresh = client.get_run(kids["fresh"]).data.metrics
    assert fresh["lift/expo_reach_10"] == pytest.approx(0.5) and fresh["lift/dac/ci_low"] == pytest.approx(-0.01)
    assert not any(k.startswith("lift/") for k in client.get_run(kids["control"]).data.metrics)
    control_names = {k for k in client.get_run(kids["control"]).data.metrics if not k.startswith("lift/")}
    assert control_names == {k for k in fresh if not k.startswith("lift/")}  # the same names in every arm

    top = {f.path for f in client.list_artifacts(pid)}
    assert {"comparison.csv", "comparison.md", "daily_control.csv", "daily_fresh.csv", "plots", "config"} <= top
    plots = {f.path: f.file_size for f in client.list_artifacts(pid, "plots")}
    assert set(plots) == {"plots/forest.png", "plots/expo_reach.png", "plots/dac.png", "plots/exposures_by_age.png"}
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
        assert sorted(m.step for m in client.get_metric_history(rid, "daily/dac")) == [0, 1]
        assert client.get_run(rid).info.status == "FINISHED"

    with pytest.raises(ValueError, match="no MLflow run 'deadbeef'"):
        RunTracker(uri, "resume").resume("deadbeef")


def test_a_day_played_again_is_not_logged_twice(uri):
    """After an in-place recovery or a resume the driver plays days again, with the same values: MLflow keeps one
    point per day."""
    tracker = RunTracker(uri, "replay")
    pid = tracker.start("tiny", {"seed": 0}, ARMS, {})
    for d in (0, 1, 1):
        tracker.log_day(d, {a: day_metrics(a, d) for a in ARMS})
    again = RunTracker(uri, "replay")
    again.resume(pid)
    for d in (1, 2):
        again.log_day(d, {a: day_metrics(a, d) for a in ARMS})
    client = MlflowClient(uri)
    for rid in again.child_run_ids.values():
        assert sorted(m.step for m in client.get_metric_history(rid, "daily/dac")) == [0, 1, 2]
    assert again.url().startswith("http://127.0.0.1:5000/#/experiments/")
    assert again.url().endswith(f"/runs/{pid}?workflowType=machine_learning")
    assert parent_url(uri, pid) == again.url()


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
    assert client.get_run(tracker.child_run_ids["fresh"]).data.metrics["daily/dac"] == day_metrics("fresh", 0)["dac"]
    assert client.get_run(pid).data.params == {"seed": "0"}


def test_a_tracking_uri_mlflow_refuses_is_a_clear_error_naming_it(tmp_path, monkeypatch):
    """A plain path is MLflow's file store, which MLflow 3 refuses: the error names the URI and what works, before
    any run starts (the CLI prints ValueErrors as one line)."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ValueError, match=r"MLflow tracking URI '.*mlruns' cannot be used: .*sqlite:///"):
        RunTracker(str(tmp_path / "mlruns"), "bad")


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
    lift_cells = [c for c, name in zip(table.columns[2].cells, table.columns[0].cells, strict=True) if name.startswith("  ")]
    assert lift_cells[0].startswith("[green]") and not lift_cells[1].startswith("[")


# -- trustworthy read-outs: order, undefined lifts, CUPED, resolved K, forest plot, ExpoReach history ---------

NAN = float("nan")


def cmp_rows(*rows: tuple) -> pl.DataFrame:
    """A comparison from ``(metric, arm, control_value, arm_value, lift, ci_low, ci_high)`` tuples."""
    cols = ["metric", "arm", "control_value", "arm_value", "lift", "ci_low", "ci_high"]
    return pl.DataFrame([dict(zip(cols, r, strict=True)) for r in rows],
                        schema={c: pl.String if c in ("metric", "arm") else pl.Float64 for c in cols})


def rich_text(table, width: int) -> str:
    from rich.console import Console

    console = Console(record=True, width=width)
    console.print(table)
    return console.export_text()


def test_rows_lead_with_the_metrics_that_matter():
    shuffled = ["dau", "zzz_custom", "expo_reach_q99", "dac", "expo_reach_200", "expo_reach_q50", "share_rate",
                "interactions_per_exposure", "publications", "expo_reach_50", "expo_reach_q90", "cold_interactions",
                "new_item_coverage", "exposures", "aaa_custom", "engaged_users", "view_rate", "interactions"]
    expected = ["expo_reach_50", "expo_reach_200", "expo_reach_q50", "expo_reach_q90", "expo_reach_q99", "dac",
                "publications", "cold_interactions", "interactions_per_exposure", "engaged_users", "dau", "view_rate",
                "share_rate", "exposures", "interactions", "new_item_coverage", "zzz_custom", "aaa_custom"]
    assert sorted(shuffled, key=metric_sort_key) == expected  # the rest keep their input order
    rows = [(m, arm, 10.0, 11.0, 0.1, 0.05, 0.15) for arm in ("b", "a") for m in shuffled]
    comparison = cmp_rows(*rows, ("dac", "control", 10.0, 10.0, 0.0, 0.0, 0.0))
    md = format_comparison_markdown(comparison, "control")
    cells = [line.split(" | ") for line in md.splitlines() if line.startswith("| ")][1:]  # after the header
    assert [(c[0].removeprefix("| "), c[2]) for c in cells] == [(m, a) for m in expected for a in ("b", "a")]

    table = format_comparison_rich(comparison, "control")
    names = list(table.columns[0].cells)
    assert names[:3] == ["[bold]expo_reach_50[/bold]", "  b", "  a"]
    assert [n for n in names if n.startswith("[bold]")] == [f"[bold]{m}[/bold]" for m in expected]


def test_undefined_lifts_read_undefined_without_a_marker():
    comparison = cmp_rows(
        ("expo_reach_10", "fresh", 0.0, 4.0, NAN, NAN, NAN),  # zero control
        ("dac", "fresh", 21.0, 0.0, -1.0, -1.0, -1.0),  # zero treatment, collapsed CI
        ("publications", "fresh", 30.0, 12.0, -0.6, -0.6, -0.6),  # degenerate bootstrap
        ("exposures", "fresh", 1000.0, 1100.0, NAN, 0.05, 0.2),  # no lift
        ("dau", "fresh", 50.0, 60.0, 0.2, 0.1, 0.3),  # a real one
    )
    reasons = [undefined_reason(r) for r in comparison.iter_rows(named=True)]
    assert reasons == ["control is 0", "treatment is 0", "degenerate CI", "no lift", None]
    md = format_comparison_markdown(comparison, "control")
    assert "| expo_reach_10 | 0 | fresh | 4 | undefined | (control is 0) |" in md
    assert "| dac | 21 | fresh | 0 | undefined | (treatment is 0) |" in md
    assert "| publications | 30 | fresh | 12 | undefined | (degenerate CI) |" in md
    assert "| dau | 50 | fresh | 60 | +20.0% ▲ | [+10.0%, +30.0%] |" in md
    table_md = "\n".join(line for line in md.splitlines() if line.startswith("| "))
    assert "100.0%" not in table_md and table_md.count("▲") + table_md.count("▼") == 1

    table = format_comparison_rich(comparison, "control")
    text = rich_text(table, 120)
    assert "100.0%" not in text and text.count("undefined") == 4
    lift_cells = [c for c, name in zip(table.columns[2].cells, table.columns[0].cells, strict=True) if name.startswith("  ")]
    assert [c.startswith("[green]") or c.startswith("[red]") for c in lift_cells] == [False, False, False, True, False]  # dau reads before exposures

    # a `significant` column, when present, can only take a marker away
    flagged = comparison.with_columns(significant=pl.Series([False] * 4 + [False]))
    assert "+20.0% |" in format_comparison_markdown(flagged, "control")
    assert "+20.0% ▲ |" in format_comparison_markdown(comparison.with_columns(significant=pl.lit(True)), "control")


def test_cuped_column_only_when_present_and_finite():
    base = cmp_rows(("dac", "fresh", 21.0, 23.0, 0.095, 0.01, 0.18), ("dau", "fresh", 50.0, 51.0, 0.02, -0.03, 0.07))
    assert "CUPED" not in format_comparison_markdown(base, "control")
    all_nan = base.with_columns(lift_cuped=pl.lit(NAN), ci_low_cuped=pl.lit(NAN), ci_high_cuped=pl.lit(NAN))
    assert "CUPED" not in format_comparison_markdown(all_nan, "control")
    assert [c.header for c in format_comparison_rich(all_nan, "control").columns][-1] == "lift [95% CI]"

    cuped = base.with_columns(lift_cuped=pl.Series([0.09, NAN]), ci_low_cuped=pl.Series([0.05, NAN]),
                              ci_high_cuped=pl.Series([0.13, NAN]))
    md = format_comparison_markdown(cuped, "control")
    assert "| lift % | 95% CI | CUPED lift % | CUPED 95% CI |" in md
    assert "| dac | 21 | fresh | 23 | +9.5% ▲ | [+1.0%, +18.0%] | +9.0% ▲ | [+5.0%, +13.0%] |" in md
    assert "| dau | 50 | fresh | 51 | +2.0% | [-3.0%, +7.0%] | n/a | |" in md
    table = format_comparison_rich(cuped, "control")
    assert [c.header for c in table.columns] == ["metric / arm", "value", "lift [95% CI]", "CUPED lift [CI]"]
    assert list(table.columns[3].cells)[1] == "[green]+9.0%\n[+5.0%, +13.0%][/green]"  # CI under the lift


def test_rich_table_fits_80_columns_with_whole_ci_cells():
    metrics = ["expo_reach_q50", "expo_reach_q90", "interactions_per_exposure", "new_item_coverage"]
    rows = [(m, arm, 12345.6, 11000.2, lift, lift - 0.41, lift + 0.37)
            for m in metrics for arm, lift in (("dualrec_v5", -0.109), ("next_user", 1.234), ("ihm", 0.05))]
    k = {"expo_reach_q50": 12, "expo_reach_q90": 137}
    plain = cmp_rows(*rows)
    cuped = plain.with_columns(lift_cuped=pl.col("lift") * 0.9, ci_low_cuped=pl.col("ci_low") * 0.9,
                               ci_high_cuped=pl.col("ci_high") * 0.9)
    for comparison in (plain, cuped):
        text = rich_text(format_comparison_rich(comparison, "base", expo_k=k), 80)
        lines = text.splitlines()
        assert max(len(line.rstrip()) for line in lines) <= 80
        assert "expo_reach_q90 (K=137)" in text
        for line in lines:  # a CI is never broken across lines
            assert line.count("[") == line.count("]"), line
        assert text.count("[+") + text.count("[\u2212") == len(rows) * (2 if comparison is cuped else 1)


def test_resolved_k_labels_the_derived_thresholds():
    comparison = cmp_rows(("expo_reach_q90", "fresh", 10.0, 12.0, 0.2, 0.1, 0.3), ("expo_reach_10", "fresh", 5.0, 6.0, 0.2, -0.1, 0.5))
    md = format_comparison_markdown(comparison, "control", expo_k={"expo_reach_q90": 37, "expo_reach_10": 10})
    assert "| expo_reach_10 | 5 |" in md and "| expo_reach_q90 (K=37) | 10 |" in md
    assert md.index("expo_reach_10 ") < md.index("expo_reach_q90")


def test_forest_plot_rows(tmp_path):
    comparison = cmp_rows(
        ("dau", "a", 50.0, 55.0, 0.1, 0.02, 0.18), ("dau", "b", 50.0, 45.0, -0.1, -0.2, 0.01),
        ("expo_reach_q90", "a", 10.0, 0.0, -1.0, -1.0, -1.0), ("expo_reach_q90", "b", 10.0, 12.0, 0.2, 0.1, 0.3),
        ("dac", "a", 20.0, 21.0, 0.05, -0.01, 0.11), ("dac", "b", 20.0, 19.0, -0.05, -0.1, 0.0),
        ("dac", "control", 20.0, 20.0, 0.0, 0.0, 0.0),
    ).with_columns(lift_cuped=pl.when(pl.col("metric") == "dau").then(pl.col("lift") / 2).otherwise(NAN),
                   ci_low_cuped=pl.col("ci_low") / 2, ci_high_cuped=pl.col("ci_high") / 2)
    data = forest_frame(comparison, "control", expo_k={"expo_reach_q90": 37})
    assert data.height == 6 and data["row"].n_unique() == 3  # one row per metric, a point per treatment arm
    assert data.unique("row", keep="first", maintain_order=True)["label"].to_list() == ["expo_reach_q90 (K=37)", "dac", "dau"]
    assert data["arm"].to_list() == ["a", "b"] * 3
    undefined = data.filter(~pl.col("defined"))
    assert undefined.select("metric", "arm").rows() == [("expo_reach_q90", "a")] and undefined["lift"].is_nan().all()
    assert data.filter(pl.col("lift_cuped").is_not_nan())["metric"].to_list() == ["dau", "dau"]

    path = plot_forest(comparison, "control", tmp_path / "f" / "forest.png", expo_k={"expo_reach_q90": 37})
    data_png = path.read_bytes()
    assert data_png.startswith(PNG_MAGIC) and len(data_png) > 5000
    assert plot_forest(comparison.filter(pl.col("arm") == "control"), "control", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_pooled_replicates_read_like_a_comparison(tmp_path):
    def one(lifts):
        return cmp_rows(*[(m, "a", 1.0, 1.0, v, 0.0, 0.0) for m, v in zip(["dau", "publications", "expo_reach_q50"], lifts, strict=True)])

    pooled = aggregate_lifts([one([0.1, NAN, -1.0]), one([0.2, NAN, -1.0]), one([0.3, NAN, -1.0])])
    md = format_replicates_markdown(pooled, [0, 1, 2], expo_k={"expo_reach_q50": 9})
    body = [line for line in md.splitlines() if line.startswith("| ") and "seed 0" not in line]
    assert [line.split(" | ")[0][2:] for line in body] == ["expo_reach_q50 (K=9)", "publications", "dau"]
    assert "| expo_reach_q50 (K=9) | a | undefined |" in md and "| publications | a | undefined |" in md
    assert forest_frame(as_comparison(pooled), "control")["defined"].to_list() == [False, False, True]
    assert plot_forest(as_comparison(pooled), "control", tmp_path / "pooled.png").stat().st_size > 5000


def test_finish_logs_derived_expo_history_and_k(uri):
    tracker = RunTracker(uri, "derived")
    pid = tracker.start("tiny", {"seed": 0}, ARMS, {})
    daily, overall, comparison, age = outputs()
    daily = {a: df.rename({"expo_reach_10": "expo_reach_q50", "expo_reach_50": "expo_reach_q90"}) for a, df in daily.items()}
    for d in range(DAYS):  # during the run only the metrics whose definition is fixed are logged
        tracker.log_day(d, {a: {k: v for k, v in day_metrics(a, d).items() if not k.startswith("expo_")} for a in ARMS})
    expo_k = {"expo_reach_q50": 12, "expo_reach_q90": 37}
    comparison = comparison.with_columns(pl.col("metric").replace({"expo_reach_10": "expo_reach_q50"}))
    tracker.finish(daily, overall, comparison, age, control="control", expo_k=expo_k)

    client = MlflowClient(uri)
    parent = client.get_run(pid)
    assert parent.data.params["expo_k.expo_reach_q50"] == "12" and parent.data.params["expo_k.expo_reach_q90"] == "37"
    assert parent.data.metrics["lift/fresh/expo_reach_q50"] == pytest.approx(0.5)
    for arm, rid in tracker.child_run_ids.items():
        for col in ("expo_reach_q50", "expo_reach_q90"):
            hist = {m.step: m.value for m in client.get_metric_history(rid, f"daily/{col}")}
            assert hist == {d: pytest.approx(daily[arm][col][d]) for d in range(DAYS)}
        assert len(client.get_metric_history(rid, "daily/dac")) == DAYS
    md = Path(client.download_artifacts(pid, "comparison.md", str(Path(uri.removeprefix("sqlite:///")).parent / "dl2"))).read_text()
    assert "| expo_reach_q50 (K=12) | 12 | fresh | 18 | +50.0% ▲ |" in md


def test_undefined_and_cuped_lifts_in_mlflow(uri):
    tracker = RunTracker(uri, "lifts")
    pid = tracker.start("tiny", {"seed": 0}, ARMS, {})
    daily, overall, _, age = outputs()
    comparison = cmp_rows(("dac", "fresh", 21.0, 0.0, -1.0, -1.0, -1.0), ("dau", "fresh", 50.0, 60.0, 0.2, 0.1, 0.3)).with_columns(
        lift_cuped=pl.Series([NAN, 0.18]), ci_low_cuped=pl.Series([NAN, 0.12]), ci_high_cuped=pl.Series([NAN, 0.24]))
    tracker.finish(daily, overall, comparison, age, control="control")
    metrics = MlflowClient(uri).get_run(pid).data.metrics
    assert not any(k.startswith("lift/fresh/dac") for k in metrics)  # undefined: nothing to log
    assert metrics["lift/fresh/dau"] == pytest.approx(0.2) and metrics["lift/fresh/dau/cuped"] == pytest.approx(0.18)
    assert metrics["lift/fresh/dau/cuped/ci_low"] == pytest.approx(0.12)
