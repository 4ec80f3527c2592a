"""Every state record of serving (feature store, arm policy, each strategy channel, DualRec's creator side): the
object has no attribute outside its record and ``NOT_SAVED`` (a new one is caught), and a round trip through a
snapshot restores an equal object."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from serving.arms import build_arm
from serving.features import FeatureStoreState
from serving.stack import ArmPolicyState
from serving.channels.dualrec.channel import DualRecChannelState
from serving.channels.dualrec.creator_side import CreatorSideState
from serving.channels.ihm.channel import IHMChannelState
from serving.channels.next_user import NextUserChannelState
from simulator.core.config import ArmSpec, DualRecSpec, IHMArmSpec, ModelConfig, NextUserSpec
from trainers.arm_context import ArmContext
from trainers.checkpoint import capture, unrecorded

torch.set_num_threads(1)
DAY = 86_400
T0 = 100 * DAY
S = 4
CTX = ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=S, n_item_dense=1, seed=0)
SPECS = {
    "base": ArmSpec(name="base", kind="base", share=1.0),
    "next_user": ArmSpec(name="nu", kind="next_user", share=1.0, next_user=NextUserSpec(k=5)),
    "ihm": ArmSpec(name="ihm", kind="ihm", share=1.0, ihm=IHMArmSpec(k=5, impressions_trigger=2)),
    "dualrec": ArmSpec(name="dr", kind="dualrec", share=1.0, dualrec=DualRecSpec(targets=3, cap=2)),
    "oracle_match": ArmSpec(name="om", kind="oracle_match", share=1.0, dualrec=DualRecSpec(targets=3, cap=2)),
}
CHANNEL_RECORDS = {"next_user": NextUserChannelState, "ihm": IHMChannelState, "dualrec": DualRecChannelState,
                   "oracle_match": DualRecChannelState}


def _upload(policy, ids, ts):
    ids = np.asarray(ids, np.int64)
    n = len(ids)
    oracle = (np.tile(np.arange(1000, 1004), (n, 1)), np.full((n, 4), 0.5)) if policy.name == "om" else None
    policy.upload_items(ids, ids % 3, np.full(n, ts, np.int64), ids % 4, np.ones((n, 1), np.float32), oracle=oracle)


def _driven(kind: str):
    """An arm after two days of uploads, requests and feedback (DualRec's activity model is fitted by then)."""
    policy = build_arm(SPECS[kind], CTX)
    users = np.arange(1000, 1008)
    for day in range(2):
        _upload(policy, np.arange(10 * day, 10 * day + 10), T0 + day * DAY)
        slates = policy.recommend(users, np.full(len(users), T0 + day * DAY + 100), seed=day)
        ok = slates.item_ids >= 0
        labels = np.zeros((int(ok.sum()), 5), bool)
        labels[::2, 0] = True
        policy.feedback(np.repeat(users, ok.sum(1)), slates.item_ids[ok], np.full(int(ok.sum()), T0 + day * DAY + 200),
                        labels)
        policy.end_day(T0 + (day + 1) * DAY)
    _upload(policy, [50, 51], T0 + 2 * DAY + 10)
    return policy


def assert_same_state(a, b, path="state"):
    """Records (and what they hold) equal: arrays and tensors by value, objects by their attributes."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            assert_same_state(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_state(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif hasattr(a, "booster_"):  # a fitted lightgbm model: the same trees
        assert a.booster_.model_to_string() == b.booster_.model_to_string(), path
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        assert type(a) is type(b), path
        assert_same_state(vars(a), vars(b), path)
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"


def _stateful(policy):
    """(object, its record type) for every stateful object of the arm."""
    out = [(policy, ArmPolicyState), (policy.store, FeatureStoreState)]
    for channel in policy.channels:
        if channel.name in CHANNEL_RECORDS:
            out.append((channel, CHANNEL_RECORDS[channel.name]))
        if hasattr(channel, "creator_side"):
            out.append((channel.creator_side, CreatorSideState))
    return out


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_attribute_is_in_the_record_or_not_saved_and_a_new_one_is_caught(kind):
    for obj, record in _stateful(_driven(kind)):
        assert unrecorded(obj, record) == [], type(obj).__name__
        obj.forgotten_counter = 0
        with pytest.raises(ValueError, match="forgotten_counter"):
            capture(obj, record)
        del obj.forgotten_counter


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_a_snapshot_round_trip_restores_an_equal_arm(kind):
    policy = _driven(kind)
    fresh = build_arm(SPECS[kind], CTX)
    fresh.restore(policy.snapshot())
    assert_same_state(policy.state(), fresh.state())
    # and the same future
    for p in (policy, fresh):
        _upload(p, [60], T0 + 2 * DAY + 20)
    a = policy.recommend(np.array([1000, 1003]), np.full(2, T0 + 2 * DAY + 30), seed=7)
    b = fresh.recommend(np.array([1000, 1003]), np.full(2, T0 + 2 * DAY + 30), seed=7)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.score, b.score)


def test_a_record_is_a_snapshot_later_changes_do_not_reach_it():
    policy = _driven("base")
    record = policy.store.state()
    before = record.item_expo.copy()
    policy.feedback(np.array([1000]), np.array([0]), np.array([T0 + 3 * DAY]), np.ones((1, 5), bool))
    np.testing.assert_array_equal(record.item_expo, before)
