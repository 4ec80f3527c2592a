"""The HTTP API in process (no Ray): strict payloads, 422s that name the field, 413 before parsing, short error
bodies, 409 while a simulation drives the arm, the end-of-day route and the OpenAPI schema."""

from __future__ import annotations

import time

import warnings

import numpy as np
import pytest

from serving.http import ERROR_ITEMS, LocalBackend, build_local_api, local_arms

with warnings.catch_warnings():  # starlette's note on httpx; the in-process client is what these tests want
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

T0 = 1_767_225_600  # 2026-01-01, a UTC midnight
DAY = 86_400
WIDTH = 2


def _items(ids, ts=T0, width=WIDTH, creator=1):
    return {"items": [{"item_id": i, "creator_id": creator, "upload_ts": ts, "category": 1, "features": [0.5] * width}
                      for i in ids]}


@pytest.fixture(scope="module")
def arms():
    return local_arms([("base", "base"), ("dr", "dualrec")], n_item_dense=WIDTH)


@pytest.fixture(scope="module")
def policies(arms):
    return {name: a.policy for name, a in arms.items()}


@pytest.fixture(scope="module")
def client(arms):
    c = TestClient(build_local_api(LocalBackend(arms)))
    for arm in ("base", "dr"):
        assert c.post(f"/arms/{arm}/upload", json=_items(range(20))).status_code == 200
    return c


def _loc(r) -> list:
    assert r.status_code == 422, r.text
    return r.json()["detail"][0]["loc"]


@pytest.mark.parametrize("bad", ["7", True, 7.0, -1, 2**63, None])
def test_user_ids_are_strict_ints(client, bad):
    r = client.post("/arms/base/recommend", json={"user_ids": [1, bad]})
    assert _loc(r) == ["body", "user_ids", 1]


def test_string_and_bool_ids_rejected_everywhere(client):
    assert _loc(client.post("/arms/base/feedback", json={"events": [
        {"ts": T0, "user_id": 1, "item_id": "3", "event": "like"}]})) == ["body", "events", 0, "item_id"]
    assert _loc(client.post("/arms/base/upload", json={"items": [
        {"item_id": 90, "creator_id": False, "upload_ts": T0}]})) == ["body", "items", 0, "creator_id"]
    assert _loc(client.post("/arms/base/recommend", json={"user_ids": [1], "ts": "1767225600"})) == ["body", "ts"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_features_are_422_naming_the_field(client, literal):
    body = '{"items": [{"item_id": 90, "creator_id": 1, "upload_ts": %d, "features": [0.5, %s]}]}' % (T0, literal)
    r = client.post("/arms/base/upload", content=body, headers={"content-type": "application/json"})
    assert _loc(r) == ["body", "items", 0, "features", 1]
    assert "finite" in r.text or "less than" in r.text or "greater than" in r.text


def test_feature_width_must_match_the_arm(client, policies):
    n = policies["base"].store.n_items
    r = client.post("/arms/base/upload", json=_items([90], width=3))
    assert _loc(r) == ["body", "items", 0, "features"] and "takes 2 content feature(s)" in r.text
    mixed = _items([90, 91, 92])
    mixed["items"][2]["features"] = [0.5]
    r = client.post("/arms/base/upload", json=mixed)
    assert _loc(r) == ["body", "items", 2, "features"] and len(r.json()["detail"]) == 1
    assert policies["base"].store.n_items == n  # nothing entered the catalogue
    # no features: zeros of the arm's width
    mixed["items"][2]["features"] = []
    ok = client.post("/arms/base/upload", json=mixed)
    assert ok.status_code == 200, ok.text
    st = policies["base"].store
    np.testing.assert_array_equal(st.item_dense[st.items.rows(np.array([91, 92]))], [[0.5, 0.5], [0, 0]])


def test_repeated_and_known_item_ids(client, policies):
    r = client.post("/arms/base/upload", json=_items([95, 95]))
    assert _loc(r) == ["body", "items"] and "repeat" in r.text
    n = policies["base"].store.n_items
    r = client.post("/arms/base/upload", json=_items([3, 96]))
    assert r.status_code == 409 and "already in arm 'base'" in r.text and "[3]" in r.text
    assert policies["base"].store.n_items == n


def test_unknown_arm_and_unknown_items_are_404_and_record_nothing(client, policies):
    assert client.post("/arms/nope/recommend", json={"user_ids": [1]}).status_code == 404
    users = len(policies["base"].store.users)
    r = client.post("/arms/base/feedback", json={"events": [
        {"ts": T0, "user_id": 10**9, "item_id": 987654321, "event": "like"}]})
    assert r.status_code == 404 and "987654321" in r.text
    assert len(policies["base"].store.users) == users


def test_body_limit_is_enforced_before_parsing(policies):
    c = TestClient(build_local_api(LocalBackend(policies), max_body_bytes=10_000))
    big = b'{"user_ids": [' + b"1," * 5_000_000 + b"1]}"
    t = time.perf_counter()
    r = c.post("/arms/base/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and time.perf_counter() - t < 2.0
    assert len(r.content) < 200 and "10,000 bytes" in r.text

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"user_ids": ['
        for _ in range(100):
            yield b"1," * 1_000
        yield b"1]}"

    r = c.post("/arms/base/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and len(r.content) < 200
    assert c.post("/arms/base/recommend", json={"user_ids": [1], "ts": T0}).status_code == 200


def test_error_bodies_do_not_echo_large_inputs(client):
    r = client.post("/arms/base/recommend", json={"user_ids": ["x" * 1000] * 5_000})
    assert r.status_code == 422 and len(r.content) < 3_000
    detail = r.json()["detail"]
    assert len(detail) == ERROR_ITEMS + 1 and "4,990 more" in detail[-1]["msg"]
    r = client.post("/arms/" + "a" * 10_000 + "/recommend", json={"user_ids": [1]})
    assert r.status_code == 404 and len(r.content) < 1_000
    r = client.post("/arms/base/recommend", content=b"{" * 100_000, headers={"content-type": "application/json"})
    assert r.status_code == 422 and len(r.content) < 1_000


def test_a_driven_arm_refuses_uploads_and_day_ends_until_released():
    policies = {"base": local_arms([("base", "base")], n_item_dense=WIDTH)["base"].policy}
    backend = LocalBackend(policies, driven=True)
    c = TestClient(build_local_api(backend))
    policies["base"].upload_items(np.arange(5), np.ones(5, np.int64), np.full(5, T0), np.ones(5, np.int64),
                                  np.zeros((5, WIDTH), np.float32))  # the driver's catalogue
    r = c.post("/arms/base/upload", json=_items([50]))
    assert r.status_code == 409 and "driven by a running simulation" in r.text
    assert c.post("/arms/base/end_day", json={"ts": T0 + DAY}).status_code == 409
    assert policies["base"].store.n_items == 5
    assert c.get("/arms/base").json()["driven"] is True
    # recommend and feedback are served (they change the arm's state, never what the world knows)
    assert c.post("/arms/base/recommend", json={"user_ids": [1], "ts": T0 + 60}).status_code == 200
    assert c.post("/arms/base/feedback", json={"events": [
        {"ts": T0 + 60, "user_id": 1, "item_id": 2, "event": "like"}]}).status_code == 200
    backend.release()
    assert c.post("/arms/base/upload", json=_items([50])).status_code == 200
    assert c.get("/arms/base").json()["driven"] is False


def test_end_day_route_does_the_daily_work(client):
    r = client.post("/arms/dr/recommend", json={"user_ids": [1, 2, 3], "ts": T0 + 3600})
    assert r.status_code == 200
    r = client.post("/arms/dr/end_day", json={"ts": T0 + DAY})
    assert r.status_code == 200, r.text
    diag = r.json()["diagnostics"]
    assert diag["dualrec.active_share"] > 0  # DualRec's activity model saw the day's visits
    assert client.get("/arms/dr").json()["last_day_end"] == T0 + DAY
    # an upload the next day is matched to users predicted active
    up = client.post("/arms/dr/upload", json=_items([500], ts=T0 + DAY + 60))
    assert up.status_code == 200 and set(up.json()["targets"]["500"]) <= {1, 2, 3} and up.json()["targets"]["500"]
    again = client.post("/arms/dr/end_day", json={"ts": T0 + DAY + 7_200})
    assert again.status_code == 409 and "not after the last day end" in again.text
    assert client.post("/arms/dr/end_day", json={"ts": T0 + 40 * DAY}).status_code == 409  # days skipped
    assert client.post("/arms/dr/end_day", json={"ts": T0 + 2 * DAY}).status_code == 200
    assert client.post("/arms/base/end_day", json={"ts": T0 + DAY}).json()["diagnostics"] == {}  # base: no daily work


def test_openapi_lists_every_route_with_its_errors(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) == {"/healthz", "/arms/{arm}", "/arms/{arm}/recommend", "/arms/{arm}/upload",
                          "/arms/{arm}/feedback", "/arms/{arm}/end_day"}
    for route in ("recommend", "upload", "feedback", "end_day"):
        codes = set(paths[f"/arms/{{arm}}/{route}"]["post"]["responses"])
        assert {"200", "404", "413", "422"} <= codes, route
        assert ("409" in codes) == (route in ("upload", "end_day")), route
    item = spec["components"]["schemas"]["ItemIn"]
    assert item["additionalProperties"] is False and item["properties"]["features"]["items"]["type"] == "number"
