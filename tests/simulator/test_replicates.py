"""Seed replicates: pooling lifts over seeds (hand-computed), and a real two-seed run through the CLI."""

import json

import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from simulator.run.cli import app
from simulator.run.replicates import aggregate_lifts
from simulator.run.report import format_replicates_markdown


def _cmp(lifts):
    return pl.DataFrame({"metric": ["dac", "dac"], "arm": ["a", "b"], "control_value": [1.0, 1.0],
                         "arm_value": [1.0, 1.0], "lift": lifts, "ci_low": [0.0, 0.0], "ci_high": [0.0, 0.0]})


def test_pooled_lift_is_the_mean_with_a_t_interval_over_seeds():
    t = aggregate_lifts([_cmp([0.1, -0.2]), _cmp([0.2, 0.1]), _cmp([0.3, float("nan")])])
    a, b = t.row(0, named=True), t.row(1, named=True)
    # a: lifts 0.1, 0.2, 0.3 -> mean 0.2, sd 0.1, t(0.975, 2) = 4.3027 -> half width 4.3027 * 0.1 / sqrt(3)
    assert a["n"] == 3 and a["mean_lift"] == pytest.approx(0.2)
    assert a["ci_high"] - a["mean_lift"] == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert a["sign_agreement"] == 1.0
    # b: the NaN seed is left out: lifts -0.2, 0.1 -> mean -0.05, one of two seeds agrees
    assert b["n"] == 2 and b["mean_lift"] == pytest.approx(-0.05) and b["sign_agreement"] == 0.5
    md = format_replicates_markdown(t, [0, 1, 2])
    assert "| dac | a | +20.0% [-4.8%, +44.8%] | 100% | +10.0% | +20.0% | +30.0% |" in md  # 0 inside: no star
    assert "| seed 0 | seed 1 | seed 2 |" in md
    single = aggregate_lifts([_cmp([0.1, 0.2])])
    assert np.isnan(single["ci_low"][0])  # one seed: no interval
    with pytest.raises(ValueError, match="other metrics or arms"):
        aggregate_lifts([_cmp([0.1, 0.2]), _cmp([0.1, 0.2]).with_columns(pl.lit("x").alias("arm"))])


def test_two_seed_replicates_through_the_cli(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    res = CliRunner().invoke(app, ["--scenario", "boost_ab", "--scale", "tiny", "--days", "1", "--runtime", "local",
                                   "--replicates", "2", "--seed", "5", "--no-progress", "--tracking-uri", uri,
                                   "--run-root", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "seed 5:" in res.output and "seed 6:" in res.output and "pooled over 2 seeds" in res.output
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("coldsim").experiment_id])
    groups = {r.data.tags.get("coldsim.replicate_group") for r in runs if r.info.run_name in ("boost_ab", "boost_ab-replicates")}
    assert len(groups) == 1 and None not in groups  # both replicates and the pooled run share one group
    salts = {json.loads(r.data.tags["coldsim.options"])["salt"] for r in runs if r.info.run_name == "boost_ab"}
    assert salts == {"coldsim-5", "coldsim-6"}  # each replicate is a new randomisation of the buckets
    pooled = next(r for r in runs if r.info.run_name == "boost_ab-replicates")
    assert {a.path for a in c.list_artifacts(pooled.info.run_id)} >= {"replicates.md", "replicates.csv"}
    bad = CliRunner().invoke(app, ["--replicates", "2", "--resume", "abc", "--tracking-uri", uri])
    assert bad.exit_code == 2
