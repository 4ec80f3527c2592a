"""What a user reads in MLflow: docs/mlflow.md's snippets run against a real replicate group's store (tiny, in
process), the column names are stable, the runs land in the runs view, the parent's description holds the answer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from scenarios import get_scenario
from simulator.run.groups import REPLICATE_GROUP_TAG, run_replicates
from simulator.run.session import RunOptions

DOC = Path(__file__).resolve().parents[2] / "docs" / "mlflow.md"
SNIPPET = re.compile(r"^```python snippet[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/m.db"
    opts = RunOptions(scenario="coldstart_ab", scale="tiny", days=1, runtime="local", run_root=str(tmp / "runs"))
    group = run_replicates(get_scenario("coldstart_ab"), opts, 2, tracking_uri=uri)
    return uri, group


def test_the_docs_snippets_run_and_their_columns_are_stable(store):
    uri, group = store
    client = MlflowClient(uri)
    first = group.runs[0].parent_run_id
    gid = client.get_run(first).data.tags[REPLICATE_GROUP_TAG]
    snippets = SNIPPET.findall(DOC.read_text())
    assert len(snippets) == 3
    ns = {"TRACKING_URI": uri, "PARENT_RUN_ID": first, "GROUP": gid}
    for source in snippets:
        exec(compile(source, str(DOC), "exec"), ns)  # noqa: S102 - the doc's code is what is tested
    comparison, curves, pooled = ns["comparison"], ns["curves"], ns["pooled"]
    assert list(comparison.index) == ["base", "dualrec_v5", "ihm", "next_user"]
    assert list(comparison.columns) == ["metrics.kpi/dac", "metrics.lift/dac", "metrics.lift/dac/ci_low",
                                        "metrics.lift/dac/ci_high", "metrics.guard/view_rate", "params.kind"]
    assert comparison.loc["base", "metrics.lift/dac"] != comparison.loc["base", "metrics.lift/dac"]  # control: NaN
    assert comparison.loc["ihm", "params.kind"] == "ihm" and comparison["metrics.kpi/dac"].notna().all()
    assert set(curves.columns) == {"arm", "day", "dac"} and sorted(set(curves["day"])) == [0]
    assert sorted(pooled.index) == ["dualrec_v5", "ihm", "next_user"] and (pooled["count"] == 2).all()
    lifts = [client.get_run(run.parent_run_id).data.metrics["lift/ihm/dac"] for run in group.runs]
    assert pooled.loc["ihm", "mean"] == pytest.approx(sum(lifts) / 2)


def test_runs_view_description_and_pooled_run(store):
    uri, group = store
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("coldsim")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    pooled = client.get_run(group.parent_run_id)
    note = pooled.data.tags["mlflow.note.content"]
    assert note.startswith("**Lifts over control pooled over 2 seeds**") and "| dac | ihm |" in note
    kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{group.parent_run_id}'")
    assert {"lift/dac", "lift/dac/ci_low", "lift/dac/sign_agreement"} <= set(kids[0].data.metrics)
    for run in group.runs:
        parent = client.get_run(run.parent_run_id)
        assert parent.data.tags["mlflow.note.content"].startswith("**coldstart_ab**")
        assert {"time/serve_s", "run/simulated_exposures"} <= set(parent.data.metrics)
        tags = parent.data.tags
        assert (tags["coldsim.scenario"], tags["coldsim.scale"], tags["coldsim.log"]) == ("coldstart_ab", "tiny", "synthetic")
