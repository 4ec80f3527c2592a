"""Fuzz: requests drawn from the API's own OpenAPI schema (valid ones and broken ones) never get a 5xx or a long
error body, and what they hit lives on: arms of every kind on their own, and a simulation that drives its arms
runs its next day and resumes from the checkpoint afterwards. In process, no Ray."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the fuzz test needs hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from scenarios import get_scenario
from simulator.core.config import ArmSpec, DualRecSpec, Scenario
from simulator.run.loop import Simulation
from simulator.run.runtime import LocalRuntime
from simulator.sources.synthetic import generate_synthetic
from serving.arms import ARM_KINDS
from serving.arm_endpoint import MAX_DAY_GAP_DAYS
from serving.http import LocalBackend, build_local_api, local_arms

with warnings.catch_warnings():  # starlette's note on httpx; the in-process client is what these tests want
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

T0 = 1_767_225_600
DAY = 86_400
# derandomize: the same examples on every run of the same code (CI must not flake); database=None: no .hypothesis/
SETTINGS = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))

# values of the wrong type or out of range, for any field
JUNK = st.sampled_from(["7", "", "x" * 300, True, False, None, 1.5, -1, 2**63, 10**30, math.nan, math.inf, -math.inf,
                        [], {}, [1, "a"], {"a": 1}])


# ---------------------------------------------------------------------------- strategies from the OpenAPI schema
def weighted(*choices):
    """One of the (weight, strategy) ``choices``, in proportion to the weights (``st.one_of`` favours its ends)."""
    bounds = np.cumsum([w for w, _ in choices])
    pick = st.integers(0, int(bounds[-1]) - 1).map(lambda k: int(np.searchsorted(bounds, k, side="right")))
    return pick.flatmap(lambda i: choices[i][1])


def from_schema(schema: dict, components: dict, hints: dict, name: str | None = None, junk: bool = False):
    """Values for a JSON schema (the subset FastAPI emits). ``hints``: field name (``name[]`` for an array's
    items) -> a strategy drawn from as often as the schema's (ids and times the arms know, so that requests reach
    past validation); ``junk``: values are sometimes of the wrong kind or shape."""
    if name in hints:
        base = from_schema(schema, components, {k: v for k, v in hints.items() if k != name}, name, junk)
        return weighted((2, hints[name]), (1, base))
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[-1]], components, hints, name, junk)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, components, hints, name, junk) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        sub = {k: from_schema(v, components, hints, k, junk) for k, v in props.items()}
        obj = st.fixed_dictionaries({k: s for k, s in sub.items() if k in required},
                                    optional={k: s for k, s in sub.items() if k not in required})
        if not junk:
            return obj
        extra = obj.map(lambda d: {**d, "bogus": 1})
        missing = obj.map(lambda d: dict(list(d.items())[1:]))
        return weighted((8, obj), (1, extra), (1, missing))
    if kind == "array":
        lo = schema.get("minItems", 0)
        hi = min(schema.get("maxItems", lo + 4), lo + 4)
        items = from_schema(schema.get("items", {}), components, hints, f"{name}[]", junk)
        arr = st.lists(items, min_size=lo, max_size=hi)
        return weighted((9, arr), (1, st.just([]))) if junk else arr
    if "enum" in schema:
        leaf = st.sampled_from(schema["enum"])
    elif kind == "integer":
        lo = int(schema.get("minimum", -(2**63)))
        hi = int(schema["maximum"]) if "maximum" in schema else int(schema.get("exclusiveMaximum", 2**63)) - 1
        leaf = st.one_of(st.integers(lo, min(hi, lo + 50)), st.integers(lo, hi), st.sampled_from([lo, hi]))
    elif kind == "number":
        lo, hi = float(schema.get("minimum", -1e308)), float(schema.get("maximum", 1e308))
        leaf = st.one_of(st.floats(lo, hi, allow_nan=False), st.sampled_from([lo, hi, 0.0, 1e-30]))
    elif kind == "string":
        leaf = st.text(max_size=8)
    elif kind == "boolean":
        leaf = st.booleans()
    elif kind == "null":
        leaf = st.none()
    else:
        leaf = JUNK
    return weighted((9, leaf), (1, JUNK)) if junk else leaf


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    params: tuple[str, ...]
    body: dict | None  # the request body's schema


def operations(spec: dict) -> list[Operation]:
    out = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = tuple(p["name"] for p in op.get("parameters", []) if p["in"] == "path")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            out.append(Operation(method.upper(), path, params, body))
    return out


def request_strategy(spec: dict, hints: dict):
    """(method, url, body bytes) drawn from every operation of ``spec``: schema-valid bodies, bodies with broken
    fields, and bodies that are not the schema's at all (other JSON, not JSON)."""
    components = spec["components"]["schemas"]

    def for_op(op: Operation):
        path = st.fixed_dictionaries({p: weighted((9, hints[p]), (1, st.text(max_size=12))) for p in op.params})
        if op.body is None:
            body = st.just(None)
        else:
            valid = from_schema(op.body, components, hints).map(_json)
            broken = from_schema(op.body, components, hints, junk=True).map(_json)
            other = st.one_of(JUNK.map(_json), st.binary(max_size=64), st.just(b'{"user_ids": [1,'))
            body = weighted((6, valid), (3, broken), (1, other))
        return st.tuples(st.just(op), path, body)

    return st.sampled_from(operations(spec)).flatmap(for_op)


def request_sequences(spec: dict, hints: dict):
    """A few requests per example: later ones meet the state the earlier ones left."""
    return st.lists(request_strategy(spec, hints), min_size=1, max_size=4)


def _json(value) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as Python's json writes them (what a sloppy client sends)


def send(client: TestClient, draw) -> object:
    op, params, body = draw
    url = op.path
    for k, v in params.items():
        url = url.replace("{" + k + "}", quote(v, safe="") or "%20")
    r = client.request(op.method, url, content=body, headers={"content-type": "application/json"} if body else {})
    assert r.status_code < 500, f"{op.method} {url} {body[:300] if body else ''!r} -> {r.status_code} {r.text[:500]}"
    if r.status_code >= 400:
        assert len(r.content) < 4_000, f"{op.method} {url}: a {r.status_code} body of {len(r.content)} bytes"
        json.loads(r.content)
    return r


def _time_hint(days: int):
    return st.one_of(st.integers(T0 - DAY, T0 + days * DAY), st.sampled_from([T0 + d * DAY for d in range(days + 1)]))


# ---------------------------------------------------------------------------- arms on their own
def test_fuzz_arms_on_their_own_stay_live():
    arms = [(kind, kind) for kind in ARM_KINDS]
    endpoints = local_arms(arms, n_item_dense=2)
    client = TestClient(build_local_api(LocalBackend(endpoints)))
    ids = np.arange(30)
    for name, _ in arms:  # a catalogue, so requests reach past "unknown item" (as a driver would upload it)
        endpoints[name].policy.upload_items(ids, ids % 4, T0 + 10 * ids, ids % 3,
                                            np.stack([0.1 * ids, np.ones(30)], 1).astype(np.float32))
    users = st.integers(0, 30)
    hints = {"arm": st.sampled_from([n for n, _ in arms] + ["nope"]), "item_id": st.integers(0, 60), "user_id": users,
             "user_ids[]": users, "creator_id": st.integers(0, 5), "ts": _time_hint(3), "upload_ts": _time_hint(3),
             "features": st.lists(st.floats(-10, 10), min_size=2, max_size=2)}
    spec = client.get("/openapi.json").json()

    @SETTINGS
    @given(request_sequences(spec, hints))
    def fuzz(draws):
        for draw in draws:
            send(client, draw)

    fuzz()
    assert client.get("/healthz").json()["status"] == "ok"
    for j, (name, _) in enumerate(arms):  # every arm still serves, learns and ends its day
        info = client.get(f"/arms/{name}").json()
        assert client.post(f"/arms/{name}/recommend", json={"user_ids": [1, 2], "ts": T0 + 4 * DAY}).status_code == 200
        fb = client.post(f"/arms/{name}/feedback", json={"events": [
            {"ts": T0 + 4 * DAY, "user_id": 1, "item_id": 3, "event": "like"}]})
        assert fb.status_code == 200, fb.text
        last, end = info["last_day_end"], T0 + 5 * DAY
        in_order = last is None or last // DAY < end // DAY <= last // DAY + MAX_DAY_GAP_DAYS
        assert client.post(f"/arms/{name}/end_day", json={"ts": end}).status_code == (200 if in_order else 409)
        up = client.post(f"/arms/{name}/upload", json={"items": [{"item_id": 10**12 + j, "creator_id": 1, "upload_ts": end}]})
        assert up.status_code == (200 if info["uploads"] else 409), up.text
    assert not client.get("/arms/oracle_match").json()["uploads"]  # the positive control needs the truth


# ---------------------------------------------------------------------------- a simulation driving its arms
@pytest.fixture(scope="module")
def scenario() -> Scenario:
    """coldstart_ab's arms and the positive control, on a small synthetic platform: 3 days of 1 tick."""
    d = get_scenario("coldstart_ab").at_scale("tiny").model_dump()
    d["synthetic"].update(n_users=400, n_creators=50, days=3)
    d["days"], d["ticks_per_day"] = 3, 1
    oracle = ArmSpec(name="oracle", kind="oracle_match", share=0.2, dualrec=DualRecSpec.for_version(5))
    d["arms"] = [{**a, "share": 0.2} for a in d["arms"]] + [oracle.model_dump()]
    return Scenario.model_validate(d)


def test_fuzz_during_a_simulation_then_it_runs_on_and_resumes(scenario, tmp_path):
    log = generate_synthetic(scenario.synthetic, scenario.seed)
    sim = Simulation(scenario, log, LocalRuntime, tmp_path, progress=False)
    sim.days = 1
    sim.run()  # day 0 (and its checkpoint)
    backend = LocalBackend(sim.runtime.policies, driven=True)
    client = TestClient(build_local_api(backend))
    users = np.concatenate([a.users for a in sim.arms])
    known_users = st.sampled_from(users.tolist())
    hints = {"arm": st.sampled_from(sim.arm_names + ["nope"]), "item_id": st.sampled_from(sim.world.items.ids.tolist()),
             "user_id": known_users, "user_ids[]": known_users, "creator_id": st.sampled_from(sim.arms[0].creators.tolist()),
             "ts": _time_hint(3), "upload_ts": _time_hint(3)}
    spec = client.get("/openapi.json").json()
    accepted: list[str] = []

    @SETTINGS
    @given(request_sequences(spec, hints))
    def fuzz(draws):
        for draw in draws:
            r = send(client, draw)
            if r.status_code == 200:
                accepted.append(draw[0].path)
            assert not (r.status_code == 200 and draw[0].path.endswith(("/upload", "/end_day"))), "a driven arm took it"

    fuzz()
    assert {"/arms/{arm}/recommend", "/arms/{arm}/feedback"} <= set(accepted)  # traffic reached the arms
    n_items = len(sim.world.items)
    sim.start_day, sim.days = 1, 2
    sim.run()  # the driver's next day, after the traffic
    resumed = Simulation(scenario, log, LocalRuntime, tmp_path, progress=False)
    assert resumed.restore_latest() == 2
    result = resumed.run()  # --resume after HTTP traffic
    assert result.days == 3 and len(resumed.world.items) >= n_items
    for a in resumed.arms:
        assert {int(e["day"][0]) for e in a.exposures if e.height} == {0, 1, 2}, a.name
