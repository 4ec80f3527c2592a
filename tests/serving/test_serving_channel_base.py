"""The declared Channel interface: every channel subclasses it, ArmPolicy calls each hook on every channel with
what that hook needs (a channel's own retrieval comes back to its rerank; the truth reaches on_upload), and the
no-op defaults change nothing."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import torch

import serving.channels
import serving.stack
from serving.arms import model_configs, user_side_channels
from serving.channels.base import Channel, OracleCandidates, RequestContext, Retrieval
from serving.stack import ArmPolicy
from simulator.core.config import ArmSpec, ModelConfig

torch.set_num_threads(1)
T = 1_000_000
S = 4


def _channel_classes() -> list[type]:
    out = []
    for info in pkgutil.walk_packages(serving.channels.__path__, "serving.channels."):
        module = importlib.import_module(info.name)
        out += [c for _, c in inspect.getmembers(module, inspect.isclass)
                if c.__module__ == module.__name__ and c.__name__.endswith("Channel")]
    return out


def test_every_channel_class_subclasses_the_base_class():
    classes = _channel_classes()
    assert {"TwoTowerChannel", "NextUserChannel", "IHMChannel", "DualRecChannel", "OracleMatchChannel"} <= {
        c.__name__ for c in classes}
    assert all(issubclass(c, Channel) for c in classes), [c for c in classes if not issubclass(c, Channel)]


def test_arm_policy_declares_rather_than_discovers():
    assert "hasattr(" not in inspect.getsource(serving.stack)


class Recorder(Channel):
    """Overrides every hook and records what it was given."""

    name = "recorder"

    def __init__(self):
        self.calls: list[tuple[str, object]] = []

    def retrieve(self, ctx: RequestContext) -> Retrieval:
        rows = np.tile(np.arange(2), (ctx.n, 1))
        self.calls.append(("retrieve", ctx.n))
        return Retrieval(rows, scores=np.full(rows.shape, 0.5, np.float32))

    def on_upload(self, policy, rows, oracle):
        self.calls.append(("on_upload", (rows.tolist(), None if oracle is None else oracle.user_ids.tolist())))
        return {int(policy.store.items.ids[rows[0]]): [7]} if len(rows) else {}

    def on_feedback(self, policy, rows, now):
        self.calls.append(("on_feedback", now))

    def on_weights(self, policy, weights, now):
        self.calls.append(("on_weights", now))

    def on_requests(self, policy, ctx):
        self.calls.append(("on_requests", ctx.n))

    def rerank(self, policy, ctx, cand, chan, valid, score, retrieval):
        self.calls.append(("rerank", (retrieval.columns, retrieval.scores.shape, cand.shape[1])))
        ctx.effects[self.name] = ctx.n
        return score, valid

    def apply_effects(self, policy, parts):
        self.calls.append(("apply_effects", parts))

    def on_served(self, policy, ctx, rows, chan, valid):
        self.calls.append(("on_served", rows.shape))

    def log_features(self, policy, ctx, rows, valid):
        self.calls.append(("log_features", rows.shape))
        return {"recorder_flag": np.ones(rows.shape, np.int64)}

    def on_day_end(self, policy, ts):
        self.calls.append(("on_day_end", ts))
        return {"recorder.days": 1.0}

    def state(self):
        return len(self.calls)

    def load_state(self, state):
        self.calls.append(("load_state", state))


def _policy(*channels: Channel) -> ArmPolicy:
    spec = ArmSpec(name="a", kind="base", share=1.0)
    tt, rk = model_configs(ModelConfig(dim=8, id_buckets=1024, hidden=16), 1)
    return ArmPolicy(name="a", stack=spec.stack, slate_size=S, tt_cfg=tt, rk_cfg=rk, seed=0,
                     channels=user_side_channels(spec) + list(channels))


def _upload(policy, ids, oracle=None):
    ids = np.asarray(ids, np.int64)
    policy.upload_items(ids, ids % 2, np.full(len(ids), T - 3600), ids % 3, np.ones((len(ids), 1), np.float32),
                        oracle=oracle)


def test_every_hook_is_called_with_its_inputs():
    recorder = Recorder()
    policy = _policy(recorder)
    _upload(policy, [10, 11, 12])
    _upload(policy, [12, 13], oracle=(np.array([[5], [6]]), np.array([[0.1], [0.2]])))  # 12 is known already
    assert recorder.calls[:2] == [("on_upload", ([0, 1, 2], None)), ("on_upload", ([3], [[6]]))]
    assert policy.last_targets == {13: [7]}
    slates = policy.recommend(np.array([1, 2]), np.full(2, T), seed=0)
    names = [name for name, _ in recorder.calls[2:]]
    # the whole batch's requests first; retrieval to features change nothing; then the served slates and effects
    assert names == ["on_requests", "retrieve", "rerank", "log_features", "on_served", "apply_effects"]
    assert recorder.calls[2] == ("on_requests", 2) and recorder.calls[-1] == ("apply_effects", [2])
    assert recorder.calls[-2] == ("on_served", (2, S))
    columns, scores_shape, width = recorder.calls[4][1]
    assert columns == slice(width - 2, width) and scores_shape == (2, 2)  # its own block: the last two columns
    assert slates.extra["recorder_flag"].shape == (2, S)
    policy.feedback(np.array([1]), np.array([10]), np.array([T + 5]), np.ones((1, 5), bool))
    policy.set_weights(1, {"two_tower": {k: v.numpy() for k, v in policy.two_tower.state_dict().items()},
                           "ranker": {k: v.numpy() for k, v in policy.ranker.state_dict().items()}}, ts=T + 10)
    assert policy.end_day(T + 86_400) == {"recorder.days": 1.0}
    assert recorder.calls[-3:] == [("on_feedback", T + 5), ("on_weights", T + 10), ("on_day_end", T + 86_400)]
    fresh = Recorder()
    _policy(fresh).restore(policy.snapshot())
    assert fresh.calls == [("load_state", len(recorder.calls))]


def test_the_no_op_defaults_change_nothing():
    plain = _policy()
    with_noop = _policy(Channel())  # every hook inherited: retrieves nothing, returns its inputs
    for policy in (plain, with_noop):
        _upload(policy, np.arange(20))
    a = plain.recommend(np.array([1, 2, 3]), np.full(3, T), seed=4)
    b = with_noop.recommend(np.array([1, 2, 3]), np.full(3, T), seed=4)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.score, b.score)
    assert b.extra == {} and with_noop.end_day(T + 86_400) == {} and with_noop.last_targets == {}
    assert Channel().state() is None


def test_oracle_candidates_are_a_plain_record():
    truth = OracleCandidates(np.array([[1, -1]]), np.array([[0.5, 0.0]]))
    assert truth.user_ids.shape == truth.scores.shape
