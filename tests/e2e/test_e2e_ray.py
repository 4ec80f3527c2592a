"""End to end through real Ray Data, Ray Serve (handles and HTTP) and Ray Train, recorded in MLflow."""

from __future__ import annotations

import socket

import httpx
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from scenarios import get_scenario
from simulator.core.config import ServeConfig
from simulator.run.session import RunOptions, run_scenario

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scenario():
    sc = get_scenario("coldstart_ab").at_scale("tiny")
    return sc.model_copy(update={"days": 2, "serve": ServeConfig(port=_free_port(), http=True)})


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def local_run(scenario, tmp_path_factory):
    opts = RunOptions(scenario=scenario.name, runtime="local", run_root=str(tmp_path_factory.mktemp("local")))
    return run_scenario(scenario, opts, tracking_uri=None)


@pytest.fixture(scope="module")
def ray_run(scenario, tracking, tmp_path_factory):
    seen: dict = {}

    def probe(sim):
        """While the Serve app is up: query it over handles and over HTTP."""
        rt = sim.runtime
        seen["stats"] = rt.stats()
        seen["url"] = rt.url
        arm = sim.arm_names[0]
        user = int(sim.arms[0].users[0])
        item = int(sim.world.items.ids[sim.world.items.rows(sim.arms[0].uploads[0]["item_id"].to_numpy()[:1])][0])
        day_end = int(sim.t0 + sim.days * 86_400)
        with httpx.Client(base_url=rt.url, timeout=30) as c:
            seen["health"] = c.get("/healthz").json()
            seen["recommend"] = c.post(f"/arms/{arm}/recommend", json={"user_ids": [user, user + 1], "ts": day_end})
            seen["upload"] = c.post(f"/arms/{arm}/upload", json={"items": [
                {"item_id": 10**9, "creator_id": int(sim.arms[0].creators[0]), "upload_ts": day_end - 60, "category": 1,
                 "features": [0.5] * sim.world.item_dense.shape[1]}]})
            seen["feedback"] = c.post(f"/arms/{arm}/feedback", json={"events": [
                {"ts": day_end, "user_id": user, "item_id": item, "event": "expose"},
                {"ts": day_end, "user_id": user, "item_id": item, "event": "like"}]})
            seen["bad_event"] = c.post(f"/arms/{arm}/feedback", json={"events": [
                {"ts": day_end, "user_id": user, "item_id": item, "event": "superlike"}]})
            seen["bad_ids"] = c.post(f"/arms/{arm}/recommend", json={"user_ids": [-3]})
            seen["unknown_item"] = c.post(f"/arms/{arm}/feedback", json={"events": [
                {"ts": day_end, "user_id": user, "item_id": 987654321, "event": "expose"}]})
            seen["unknown_arm"] = c.post("/arms/nope/recommend", json={"user_ids": [1]})
            # DualRec: an upload through the Serve path returns the item's creator-side target users; it comes two
            # days after the run, when the day's matches have expired (at its end every M_u may be at the cap N)
            dr = next(a for a in sim.arms if a.name.startswith("dualrec"))
            seen["dualrec_upload"] = c.post(f"/arms/{dr.name}/upload", json={"items": [
                {"item_id": 10**9 + 1, "creator_id": int(dr.creators[0]), "upload_ts": day_end + 2 * 86_400, "category": 1,
                 "features": [0.5] * sim.world.item_dense.shape[1]}]})
            seen["dualrec_users"] = set(dr.users.tolist())

    opts = RunOptions(scenario=scenario.name, runtime="ray", http=True, run_root=str(tmp_path_factory.mktemp("ray")))
    out = run_scenario(scenario, opts, tracking_uri=tracking, before_shutdown=probe)
    return out, seen


def _same_metrics(a, b):
    for arm in a.result.overall:
        assert a.result.overall[arm] == pytest.approx(b.result.overall[arm], rel=1e-9, abs=1e-12), arm
    assert a.result.comparison.equals(b.result.comparison)


def test_ray_run_equals_in_process_run(ray_run, local_run):
    """Serve + Train + Data give exactly the numbers of the in-process runtime (same seed)."""
    out, _ = ray_run
    assert out.result.events > 1000
    _same_metrics(out, local_run)


def test_serve_handles_hold_trained_state(ray_run, scenario):
    out, seen = ray_run
    stats = seen["stats"]
    assert set(stats) == {a.name for a in scenario.arms}
    for s in stats.values():
        assert s["weights_version"] >= 2  # weights from Ray Train were swapped in, without a restart
        assert s["index"] == s["items"] > 0


def test_http_ingress(ray_run):
    _, seen = ray_run
    assert seen["url"].startswith("http://127.0.0.1:")
    assert seen["health"]["status"] == "ok"
    rec = seen["recommend"]
    assert rec.status_code == 200, rec.text
    body = rec.json()
    assert len(body["slates"]) == 2 and all(len(s) > 0 for s in body["slates"])
    assert len(body["channels"][0]) == len(body["slates"][0])
    assert seen["upload"].status_code == 200 and seen["upload"].json()["uploaded"] == 1
    assert seen["feedback"].status_code == 200 and seen["feedback"].json()["exposures"] == 1
    assert seen["bad_event"].status_code == 422 and "superlike" in seen["bad_event"].text
    assert seen["bad_ids"].status_code == 422
    assert seen["unknown_item"].status_code == 404 and "987654321" in seen["unknown_item"].text
    assert seen["unknown_arm"].status_code == 404 and "nope" in seen["unknown_arm"].text
    dr = seen["dualrec_upload"]
    assert dr.status_code == 200, dr.text
    targets = dr.json()["targets"][str(10**9 + 1)]
    assert 0 < len(targets) <= 200 and set(targets) <= seen["dualrec_users"]  # the arm's own users only


def test_mlflow_parent_and_child_runs(ray_run, tracking, scenario):
    out, _ = ray_run
    c = MlflowClient(tracking)
    parent = c.get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED"
    exp = parent.info.experiment_id
    children = c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{out.parent_run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(a.name for a in scenario.arms)
    for r in children:
        hist = c.get_metric_history(r.info.run_id, "daily/expo_reach_5")
        assert [m.step for m in hist] == [0, 1]
        assert "kpi/dac" in r.data.metrics
    arts = {a.path for a in c.list_artifacts(out.parent_run_id)} | {a.path for a in c.list_artifacts(out.parent_run_id, "plots")}
    assert {"comparison.csv", "comparison.md", "plots/expo_reach.png", "plots/dac.png", "plots/exposures_by_age.png"} <= arts
    assert any(k.startswith("lift/next_user/") for k in parent.data.metrics)
    dr = next(r for r in children if r.info.run_name.startswith("dualrec"))
    assert [m.step for m in c.get_metric_history(dr.info.run_id, "diag/dualrec.active_share")] == [0, 1]
    assert "diag/run/dualrec.hit_rate.actual" in dr.data.metrics or "diag/run/dualrec.coverage.user_side" in dr.data.metrics
    tables = {a.path for a in c.list_artifacts(out.parent_run_id, "tables")}
    assert f"tables/diagnostics_{dr.info.run_name}.csv" in tables


@pytest.mark.heavy  # keeps CI under 30 minutes (about 5 of them); in CI: the chaos test (tests/e2e/test_e2e_faults.py)
# resumes a killed Ray-runtime driver and checks the metrics, tests/simulator/test_loop_local.py a stopped and resumed
# run, tests/simulator/test_tracking.py the MLflow side of a resume (one point per day)
def test_resumed_run_equals_uninterrupted(ray_run, scenario, tracking, tmp_path_factory):
    out, _ = ray_run
    opts = RunOptions(scenario=scenario.name, runtime="ray", run_root=str(tmp_path_factory.mktemp("resume")))
    first = run_scenario(scenario, opts, tracking_uri=tracking, stop_after_day=0)
    assert MlflowClient(tracking).get_run(first.parent_run_id).info.status == "RUNNING"
    resumed = run_scenario(scenario, opts, tracking_uri=tracking, resume_run_id=first.parent_run_id)
    _same_metrics(resumed, out)
    hist = MlflowClient(tracking).get_metric_history(
        MlflowClient(tracking).get_run(first.parent_run_id).data.tags["coldsim.child.base"], "daily/dac")
    assert [m.step for m in hist] == [0, 1]


def kill_arm_replica(arm: str) -> None:
    """Kill the Serve replica of ``arm`` (shard 0) as a crash would and wait until Serve's replacement, a blank arm,
    answers."""
    import time

    import ray
    from ray import serve

    replica = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                   if f"arm_{arm}#" in a["name"] and a["name"].startswith("SERVE_REPLICA"))
    app = replica["name"].split("::")[1].split("#")[0]
    handle = serve.get_deployment_handle(f"arm_{arm}", app_name=app)
    before = handle.incarnation_token.remote().result()
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if handle.incarnation_token.remote().result(timeout_s=10) != before:
                return
        except Exception:  # the dead replica's calls fail until the controller replaces it
            time.sleep(0.5)
    raise AssertionError("Serve did not replace the killed replica within 120 s")


def kill_train_worker() -> None:
    """SIGKILL the run's Ray Train worker process (found through the run's named coordinator)."""
    import os
    import signal

    import ray

    from trainers.online import COORDINATOR_PREFIX

    names = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(COORDINATOR_PREFIX)]
    assert len(names) == 1, names
    coordinator = ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])
    for pid in ray.get(coordinator.pids.remote()).values():
        os.kill(pid, signal.SIGKILL)


class Faults:
    """A progress bar that injects faults at given ticks of the run (counted over the whole run, from 1):
    ``{tick: callable}``; what the fault tests drive a run with."""

    def __init__(self, faults: dict):
        self.faults = dict(faults)
        self.ticks = 0

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, description, **kwargs):
        return description.startswith("ticks")

    def advance(self, is_ticks):
        if not is_ticks:
            return
        self.ticks += 1
        fault = self.faults.pop(self.ticks, None)
        if fault is not None:
            fault()


@pytest.mark.heavy  # keeps CI under 30 minutes; in CI: tests/simulator/test_loop_local.py (no checkpoint: the run stops)
def test_a_replica_lost_before_the_first_checkpoint_stops_the_run_instead_of_serving_a_blank_arm(scenario,
                                                                                                tmp_path_factory):
    opts = RunOptions(scenario=scenario.name, runtime="ray", run_root=str(tmp_path_factory.mktemp("kill")))
    plain = scenario.model_copy(update={"serve": ServeConfig()})
    with pytest.raises(RuntimeError, match=r"replica of arm\(s\) \['base'\] was restarted during the run.*no "
                                           r"checkpoint to recover from yet \(day 0"):
        run_scenario(plain, opts, tracking_uri=None, progress_factory=Faults({1: lambda: kill_arm_replica("base")}))


@pytest.mark.heavy  # CI: the chaos test (tests/e2e/test_e2e_faults.py) recovers from both and checks the metrics
def test_a_lost_replica_and_a_lost_train_worker_are_recovered_in_place_with_the_same_metrics(scenario,
                                                                                           tmp_path_factory):
    """Three days, a checkpoint after each but the last: arm ihm's replica killed during day 1 (every arm and learner
    back to day 0's checkpoint, day 1 played again), then the Train worker SIGKILLed during day 1's replay (found
    when the day's checkpoint waits for its ticks: a new trainer, every arm and learner back to day 0's checkpoint
    again): the run ends with exactly the metrics of an uninterrupted run."""
    every_day = scenario.model_copy(update={"serve": ServeConfig(), "checkpoint_every": 1, "days": 3})
    reference = run_scenario(every_day, RunOptions(scenario=scenario.name, runtime="local",
                                                   run_root=str(tmp_path_factory.mktemp("ref"))), tracking_uri=None)
    ticks = every_day.ticks_per_day
    # counted over the run: day 0 is ticks 1..T; the replica dies after day 1's first tick (T+1) and the next tick
    # finds it; day 1 again starts at T+2, after which the Train worker dies
    faults = Faults({ticks + 1: lambda: kill_arm_replica("ihm"), ticks + 2: kill_train_worker})
    seen: dict = {}
    opts = RunOptions(scenario=scenario.name, runtime="ray", run_root=str(tmp_path_factory.mktemp("recover")))
    out = run_scenario(every_day, opts, tracking_uri=None, progress_factory=faults,
                       before_shutdown=lambda sim: seen.update(recoveries=sim.recoveries, stats=sim.runtime.stats()))
    assert not faults.faults and seen["recoveries"] == 2
    assert min(arm["weights_version"] for arm in seen["stats"].values()) >= 2  # the new trainer published
    _same_metrics(out, reference)
