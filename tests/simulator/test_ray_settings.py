"""How coldsim starts Ray and Serve: Ray's unread background work off on a local Ray, the user's environment wins.

The settings themselves run in every Ray end-to-end test (tests/e2e); here only what ``init_ray`` and
``start_serve`` hand to Ray, with ``ray.init`` and ``serve.start`` replaced by recorders (no Ray started)."""

from __future__ import annotations

import pytest

from simulator.run import ray_runtime


ENV_KEYS = sorted(ray_runtime.RAY_ENV | ray_runtime.SERVE_CONTROLLER_ENV)


@pytest.fixture
def recorded(monkeypatch):
    """``ray.init`` records its arguments and the environment it would start Ray's processes with."""
    calls: dict = {}
    connected: list[str] = []  # the GCS address of the Ray "started"

    def init(**kw):
        calls.setdefault("init", kw)
        calls.setdefault("env", {k: ray_runtime.os.environ.get(k) for k in ENV_KEYS})
        connected.append(kw.get("address") or "127.0.0.1:6379")

    monkeypatch.setattr(ray_runtime.ray, "is_initialized", lambda: bool(connected))
    monkeypatch.setattr(ray_runtime.ray, "init", init)
    monkeypatch.setattr(ray_runtime.ray, "get_runtime_context",
                        lambda: type("Ctx", (), {"gcs_address": connected[-1]})())
    monkeypatch.setattr(ray_runtime.serve, "start", lambda **kw: calls.setdefault("serve", kw))
    monkeypatch.setattr(ray_runtime, "_STARTED_HERE", [])
    for key in ("RAY_enable_metrics_collection", "RAY_event_stats", *ENV_KEYS):
        monkeypatch.delenv(key, raising=False)
    calls["disconnect"] = connected.clear
    return calls


def test_a_local_ray_starts_without_metrics_export_and_event_stats(recorded):
    assert ray_runtime.init_ray() is True
    assert recorded["init"]["_system_config"] == {"enable_metrics_collection": False, "event_stats": False}
    assert recorded["init"]["include_dashboard"] is False


def test_a_variable_in_the_environment_wins_over_the_local_setting(recorded, monkeypatch):
    monkeypatch.setenv("RAY_enable_metrics_collection", "1")
    ray_runtime.init_ray()
    assert recorded["init"]["_system_config"] == {"event_stats": False}


def test_a_local_ray_inherits_coldsims_environment_without_a_job_runtime_env(recorded, monkeypatch):
    """No ``runtime_env``: Ray would start every worker through its setup_worker.py. The raylet starts with the
    settings in its environment instead, a value already in the driver's environment wins, and the driver's
    environment is as it was afterwards."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    ray_runtime.init_ray()
    assert "runtime_env" not in recorded["init"]
    assert recorded["env"] == {**ray_runtime.RAY_ENV, **ray_runtime.SERVE_CONTROLLER_ENV, "MALLOC_ARENA_MAX": "4"}
    assert ray_runtime.os.environ["MALLOC_ARENA_MAX"] == "4"
    for key in set(ENV_KEYS) - {"MALLOC_ARENA_MAX", ray_runtime.FOOTER_ACTORS}:  # the footer setting stays (it is read
        assert key not in ray_runtime.os.environ                                # where a read is planned: the driver)
    ray_runtime.start_serve({"location": "NoServer"})  # the controller inherits its settings too
    assert recorded["serve"]["controller_options"] == {}


def test_a_joined_cluster_keeps_its_own_configuration(recorded):
    ray_runtime.init_ray("ray://head:10001")
    assert recorded["init"]["address"] == "ray://head:10001"
    assert "_system_config" not in recorded["init"]
    # its workers on other nodes get coldsim's environment from the job
    assert recorded["init"]["runtime_env"] == {"env_vars": ray_runtime.RAY_ENV}
    assert recorded["env"] == dict.fromkeys(ENV_KEYS) | {ray_runtime.FOOTER_ACTORS: "1"}


def test_serve_controller_reconciles_every_half_second_unless_the_environment_says_otherwise(recorded, monkeypatch):
    recorded["disconnect"]()
    ray_runtime.init_ray("127.0.0.1:6379")  # joined, not started here: the settings travel in a runtime_env
    ray_runtime.start_serve({"location": "NoServer"})
    assert recorded["serve"]["http_options"] == {"location": "NoServer"}
    assert recorded["serve"]["controller_options"] == {
        "runtime_env": {"env_vars": {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}}}
    recorded.clear()
    monkeypatch.setenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.1")
    ray_runtime.start_serve({"location": "NoServer"})
    assert recorded["serve"]["controller_options"]["runtime_env"]["env_vars"] == {
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1"}


class _Trainer:
    def __init__(self, calls: list, fail: bool):
        self.calls, self.fail = calls, fail

    def stop(self):
        self.calls.append("trainer.stop")
        if self.fail:
            raise RuntimeError("trainer stop failed")


@pytest.mark.parametrize("trainer_fails", [False, True])
def test_shutdown_deletes_every_app_at_once_stops_the_trainer_meanwhile_and_always_ends_ray(monkeypatch,
                                                                                            trainer_fails):
    calls: list = []
    apps = {"arm_a": "RUNNING", "arm_b": "RUNNING"}
    monkeypatch.setattr(ray_runtime.serve, "delete", lambda name, _blocking=True: calls.append(("delete", name,
                                                                                                 _blocking)))
    polls = iter([dict(apps), {"arm_b": "DELETING"}, {}])  # Serve drops the apps as their replicas stop
    monkeypatch.setattr(ray_runtime.serve, "status", lambda: type("S", (), {"applications": next(polls)})())
    monkeypatch.setattr(ray_runtime.ray, "shutdown", lambda: calls.append("ray.shutdown"))
    runtime = object.__new__(ray_runtime.RayRuntime)
    runtime.app_names, runtime._owns_ray, runtime.trainer = list(apps), True, _Trainer(calls, trainer_fails)
    monkeypatch.setattr(ray_runtime.time, "sleep", lambda s: calls.append("poll"))
    if trainer_fails:
        with pytest.raises(RuntimeError, match="trainer stop failed"):
            runtime.shutdown()
    else:
        runtime.shutdown()
    # no delete waits for its app: both apps' graceful stops and the trainer's run at the same time
    assert calls[:3] == [("delete", "arm_a", False), ("delete", "arm_b", False), "trainer.stop"]
    assert calls[-3:] == ["poll", "poll", "ray.shutdown"]  # Ray ends once Serve lists none of the apps


def test_shutdown_on_a_ray_it_did_not_start_waits_for_the_trainer_and_leaves_ray_up(monkeypatch):
    calls: list = []
    monkeypatch.setattr(ray_runtime.serve, "delete", lambda name, _blocking=True: calls.append(("delete", name)))
    monkeypatch.setattr(ray_runtime.serve, "status", lambda: type("S", (), {"applications": {}})())
    monkeypatch.setattr(ray_runtime.ray, "shutdown", lambda: calls.append("ray.shutdown"))
    runtime = object.__new__(ray_runtime.RayRuntime)
    runtime.app_names, runtime._owns_ray, runtime.trainer = ["arm_a"], False, _Trainer(calls, False)
    runtime.shutdown()
    assert calls == [("delete", "arm_a"), "trainer.stop", ("delete", "arm_a")]
