"""The same API through Ray Serve (the Gateway ingress over arm deployments, over real HTTP on 127.0.0.1): the
app is ``build_api``; a driven arm refuses uploads and day ends with 409 until released; errors raised in an arm
replica come back as their status; 413 and strict 422s hold behind the Serve proxy too."""

from __future__ import annotations

import socket

import httpx
import numpy as np
import pytest

from simulator.core.config import ArmSpec, ModelConfig
from trainers.arm_context import ArmContext, arm_context

pytestmark = pytest.mark.ray

T0 = 1_767_225_600
DAY = 86_400


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    import ray
    from ray import serve

    from serving.app import build_app, deployment_name

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        ctx = ArmContext(model=ModelConfig(dim=8, hidden=8), slate_size=5, n_item_dense=2, seed=0)
        arms = [(ArmSpec(name="base", kind="base", share=0.5), arm_context(ctx, 0)),
                (ArmSpec(name="dr", kind="dualrec", share=0.5), arm_context(ctx, 1))]
        serve.run(build_app(arms, driven=True, max_body_bytes=100_000), name="http_test", route_prefix="/")
        handles = {a.name: serve.get_deployment_handle(deployment_name(a.name), app_name="http_test") for a, _ in arms}
        ids = np.arange(10)
        items = {"item_id": ids, "creator_id": ids % 3, "upload_ts": np.full(10, T0), "category": ids % 2,
                 "dense": np.zeros((10, 2), np.float32)}
        for h in handles.values():  # the driver's catalogue
            h.upload.remote(items).result()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client, handles
    finally:
        serve.shutdown()
        ray.shutdown()


def test_serve_ingress_routes_and_schema(served):
    client, _ = served
    assert client.get("/healthz").json() == {"status": "ok", "arms": ["base", "dr"]}
    assert "/arms/{arm}/end_day" in client.get("/openapi.json").json()["paths"]
    r = client.post("/arms/base/recommend", json={"user_ids": [1, 2], "ts": T0 + 60})
    assert r.status_code == 200 and len(r.json()["slates"]) == 2
    assert client.post("/arms/base/recommend", json={"user_ids": ["7"]}).status_code == 422
    big = b'{"user_ids": [' + b"1," * 100_000 + b"1]}"
    r = client.post("/arms/base/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and len(r.content) < 200
    r = client.post("/arms/base/feedback", json={"events": [{"ts": T0, "user_id": 1, "item_id": 999, "event": "like"}]})
    assert r.status_code == 404 and "999" in r.text  # raised in the replica, unwrapped by the gateway


def test_driven_arms_refuse_uploads_until_released(served):
    client, handles = served
    item = {"item_id": 50, "creator_id": 1, "upload_ts": T0 + DAY + 60, "features": [0.5, 0.5]}
    r = client.post("/arms/dr/upload", json={"items": [item]})
    assert r.status_code == 409 and "driven by a running simulation" in r.text
    assert client.post("/arms/dr/end_day", json={"ts": T0 + DAY}).status_code == 409
    assert client.get("/arms/dr").json()["driven"] is True
    for h in handles.values():
        h.release.remote().result()
    assert client.post("/arms/dr/recommend", json={"user_ids": [1, 2], "ts": T0 + 60}).status_code == 200
    r = client.post("/arms/dr/end_day", json={"ts": T0 + DAY})
    assert r.status_code == 200 and r.json()["diagnostics"]["dualrec.active_share"] > 0
    r = client.post("/arms/dr/upload", json={"items": [item]})
    assert r.status_code == 200 and set(r.json()["targets"]["50"]) <= {1, 2}
    r = client.post("/arms/dr/upload", json={"items": [item]})
    assert r.status_code == 409 and "already in arm 'dr'" in r.text
    r = client.post("/arms/dr/upload", json={"items": [{**item, "item_id": 51, "features": [1.0]}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "items", 0, "features"]


def test_an_arm_in_two_shards_answers_http_clients_as_one_arm_in_process(served):
    """shards=2 behind the gateway (uploads, feedback and day ends to both shards, each recommend served in the two
    steps of serving.shards) answers every call exactly as one in-process arm does, and both shards keep one state."""
    from fastapi.testclient import TestClient
    from ray import serve

    from serving.app import build_app, deployment_name
    from serving.arms import build_arm
    from serving.http import LocalBackend, build_local_api

    client, _ = served
    ctx = arm_context(ArmContext(model=ModelConfig(dim=8, hidden=8), slate_size=5, n_item_dense=2, seed=0), 1)
    spec = ArmSpec(name="dr", kind="dualrec", share=0.5)
    serve.run(build_app([(spec, ctx)], shards=2), name="http_sharded", route_prefix="/sharded")
    local = TestClient(build_local_api(LocalBackend({"dr": build_arm(spec, ctx)})))
    items = [{"item_id": i, "creator_id": i % 3, "upload_ts": T0 + 60 * i, "features": [0.1 * i, 1.0]} for i in range(30)]
    calls = [("upload", {"items": items}),
             *[("recommend", {"user_ids": list(range(3 * k, 3 * k + 1 + k)), "ts": T0 + 3000 + k}) for k in range(5)],
             ("feedback", {"events": [{"ts": T0 + 3100, "user_id": u, "item_id": u % 30, "event": "like"} for u in range(8)]}),
             ("recommend", {"user_ids": list(range(12)), "ts": T0 + 3200}),
             ("end_day", {"ts": T0 + DAY})]
    for method, body in calls:
        sharded, one = client.post(f"/sharded/arms/dr/{method}", json=body), local.post(f"/arms/dr/{method}", json=body)
        assert sharded.status_code == one.status_code == 200, (method, sharded.text)
        assert sharded.json() == one.json(), method
    shards = [serve.get_deployment_handle(deployment_name("dr", k), app_name="http_sharded") for k in range(2)]
    assert shards[0].snapshot.remote().result() == shards[1].snapshot.remote().result()
    serve.delete("http_sharded")
