"""One arm's recommender stack (built through the arm registry): slates, filters, boost, weight swaps, errors."""

import numpy as np
import pytest
import torch

from serving.arms import ARM_KINDS, build_arm

from trainers.arm_context import ArmContext
from simulator.core.config import ArmSpec, ModelConfig, StackConfig

S = 4
DAY = 86_400
T = 10 * DAY  # request time used throughout


def _policy(slate_size: int = S, **stack) -> "ArmPolicy":  # noqa: F821
    spec = ArmSpec(name="a", kind="base", share=0.5, stack=StackConfig(**stack))
    ctx = ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=slate_size, n_item_dense=1, seed=3)
    return build_arm(spec, ctx)


def _upload(p, item_ids, upload_ts, creator=None):
    item_ids = np.asarray(item_ids, np.int64)
    n = len(item_ids)
    creator = np.full(n, 1) if creator is None else np.asarray(creator)
    upload_ts = np.broadcast_to(np.asarray(upload_ts, np.int64), (n,))
    return p.upload_items(item_ids, creator, upload_ts, item_ids % 3, np.ones((n, 1), np.float32))


def _zero(n=None):
    return np.zeros((n, 5), bool)


def test_recommend_returns_slates_of_size_s():
    p = _policy()
    _upload(p, np.arange(30), T - DAY)
    out = p.recommend(np.array([1, 2, 3]), np.full(3, T), seed=0)
    assert out.item_ids.shape == (3, S) and out.score.shape == (3, S)
    assert out.creator_id.shape == out.upload_ts.shape == out.channel.shape == (3, S)
    assert out.item_dense.shape == (3, S, 1) and out.pair_dense.shape == (3, S, 3) and out.user_dense.shape == (3, 3)
    assert (out.item_ids >= 0).all()
    assert out.channel_names == ["two_tower", "fresh", "popular", "following"]
    # slates are in descending final score
    assert (np.diff(out.score, axis=1) <= 0).all()
    # the logged features belong to the returned items
    np.testing.assert_array_equal(out.category, out.item_ids % 3)


def test_never_returns_items_uploaded_after_the_request():
    p = _policy()
    _upload(p, [0, 1, 2], T - 100)  # three items exist at request time
    _upload(p, np.arange(100, 150), T + 1)  # fifty only later
    out = p.recommend(np.array([7, 8]), np.full(2, T), seed=0)
    for row in out.item_ids:
        assert sorted(row[row >= 0].tolist()) == [0, 1, 2]
        assert row[-1] == -1  # only three candidates survive: padded
    assert np.isneginf(out.score[:, -1]).all()
    # an item uploaded exactly at the request time may be served
    out = p.recommend(np.array([7]), np.array([T + 1]), seed=0)
    assert (out.item_ids >= 100).sum() > 0


def test_never_returns_seen_items_and_no_duplicates():
    p = _policy()
    _upload(p, np.arange(10), T - DAY)
    user = np.array([42])
    served = []
    for r in range(4):
        out = p.recommend(user, np.array([T + r]), seed=r)
        row = out.item_ids[0]
        items = row[row >= 0]
        assert len(set(items.tolist())) == len(items)  # no duplicates across channels
        assert not set(items.tolist()) & set(served), f"round {r}: re-served a seen item"
        served += items.tolist()
        p.feedback(np.repeat(user, len(items)), items, np.full(len(items), T + r), _zero(len(items)))
    assert sorted(served) == list(range(10))  # 4 + 4 + 2, then nothing left
    assert (p.recommend(user, np.array([T + 9]), seed=9).item_ids == -1).all()
    # another user still gets everything
    assert (p.recommend(np.array([43]), np.array([T]), seed=0).item_ids >= 0).all()


def test_no_duplicates_within_slates_many_requests():
    p = _policy(slate_size=12)
    _upload(p, np.arange(40), T - 3600)  # all fresh and all in the index: channels overlap heavily
    out = p.recommend(np.arange(200), np.full(200, T), seed=1)
    for row in out.item_ids:
        v = row[row >= 0]
        assert len(np.unique(v)) == len(v) == 12


def _zero_ranker(p):
    w = {
        "two_tower": {k: v.numpy().copy() for k, v in p.two_tower.state_dict().items()},
        "ranker": {k: np.zeros_like(v.numpy()) for k, v in p.ranker.state_dict().items()},
    }
    p.set_weights(1, w, ts=T)


def test_new_item_boost_lifts_a_zero_exposure_item_above_an_equal_one():
    p = _policy(slate_size=2, new_item_boost=0.15, boost_max_exposures=50)
    _upload(p, [1], T - DAY)  # the old item first: it wins any tie on insertion order
    _upload(p, [2], T - DAY)
    _zero_ranker(p)  # every task logit is 0 -> p = 0.5 for every candidate
    # item 1: 60 exposures (beyond boost_max_exposures) by other users, no interactions
    p.feedback(np.arange(1000, 1060), np.ones(60, np.int64), np.full(60, T - 10), _zero(60))
    out = p.recommend(np.array([5]), np.array([T]), seed=0)
    base = 0.5 * sum(StackConfig().rank_weights.values())
    np.testing.assert_array_equal(out.item_ids, [[2, 1]])
    np.testing.assert_allclose(out.score, [[base + 0.15, base]], rtol=1e-6)
    # without the boost the two items tie
    q = _policy(slate_size=2, new_item_boost=0.0)
    _upload(q, [1], T - DAY)
    _upload(q, [2], T - DAY)
    _zero_ranker(q)
    q.feedback(np.arange(1000, 1060), np.ones(60, np.int64), np.full(60, T - 10), _zero(60))
    out = q.recommend(np.array([5]), np.array([T]), seed=0)
    np.testing.assert_allclose(out.score, [[base, base]], rtol=1e-6)


def test_boost_decays_linearly_with_exposures():
    p = _policy(slate_size=2, new_item_boost=0.2, boost_max_exposures=40)
    _upload(p, [1, 2], T - DAY)
    _zero_ranker(p)
    p.feedback(np.arange(1000, 1010), np.ones(10, np.int64), np.full(10, T - 10), _zero(10))  # item 1: 10 exposures
    out = p.recommend(np.array([5]), np.array([T]), seed=0)
    base = 0.5 * sum(StackConfig().rank_weights.values())
    np.testing.assert_array_equal(out.item_ids, [[2, 1]])
    np.testing.assert_allclose(out.score, [[base + 0.2, base + 0.2 * (1 - 10 / 40)]], rtol=1e-6)


def test_set_weights_swaps_in_place_and_rebuilds_the_index():
    p = _policy()
    _upload(p, np.arange(25), T - DAY)
    tt, rk, idx_obj = p.two_tower, p.ranker, p.index
    g = torch.Generator().manual_seed(0)
    new = {  # the weights moved (the embedding tables' bookkeeping buffers, init_rng and touched, are not weights)
        "two_tower": {k: (v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v).numpy()
                      for k, v in p.two_tower.state_dict().items()},
        "ranker": {k: (v + 1.0 if v.is_floating_point() else v).numpy() for k, v in p.ranker.state_dict().items()},
    }
    p.set_weights(7, new, ts=123)
    assert p.two_tower is tt and p.ranker is rk and p.index is idx_obj
    assert p.weights_version == 7 and p.weights_ts == 123
    for k, v in p.two_tower.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), new["two_tower"][k])
    for k, v in p.ranker.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), new["ranker"][k])
    assert len(p.index) == p.store.n_items == 25
    # the index holds the items' vectors under the new weights: each item finds itself
    vecs = p.item_vectors(np.arange(25))
    labels, scores = p.index.query(vecs, 1)
    np.testing.assert_array_equal(labels[:, 0], np.arange(25))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    # the model does not alias the caller's arrays
    new["ranker"]["heads.bias"][:] = 99.0
    assert not (p.ranker.state_dict()["heads.bias"] == 99.0).any()


def test_upload_indexes_only_new_items():
    p = _policy()
    rows = _upload(p, [1, 2, 3], T - DAY)
    np.testing.assert_array_equal(rows, [0, 1, 2])
    rows = _upload(p, [2, 3, 4], T - DAY)
    np.testing.assert_array_equal(rows, [3])
    assert len(p.index) == p.store.n_items == 4


def test_empty_request_batch():
    p = _policy()
    _upload(p, np.arange(5), T - DAY)
    out = p.recommend(np.array([], np.int64), np.array([], np.int64), seed=0)
    assert out.item_ids.shape == (0, S) and out.score.shape == (0, S) and out.pair_dense.shape[:2] == (0, S)
    # and requests against an arm with no items yet
    q = _policy()
    out = q.recommend(np.array([1, 2]), np.array([T, T]), seed=0)
    assert out.item_ids.shape == (2, S) and (out.item_ids == -1).all()


def test_mismatched_lengths_raise():
    p = _policy()
    with pytest.raises(ValueError, match=r"recommend: 2 user ids but 1 timestamps"):
        p.recommend(np.array([1, 2]), np.array([T]), seed=0)
    _upload(p, [1], T - DAY)
    with pytest.raises(ValueError, match="same length"):
        p.feedback(np.array([1, 2]), np.array([1]), np.array([T, T]), _zero(2))


def test_unknown_arm_kind_lists_known_kinds():
    spec = ArmSpec(name="x", kind="nope", share=0.5)
    ctx = ArmContext(model=ModelConfig(dim=8, id_buckets=64, hidden=8), slate_size=2, n_item_dense=1, seed=0)
    with pytest.raises(ValueError, match=r"unknown kind 'nope'") as exc:
        build_arm(spec, ctx)
    for kind in ARM_KINDS:
        assert repr(kind) in str(exc.value)


def test_snapshot_restore_round_trip():
    p = _policy()
    _upload(p, np.arange(20), T - DAY)
    p.feedback(np.array([1, 1]), np.array([3, 4]), np.array([T - 5, T - 5]), np.array([[1, 0, 0, 0, 0], [0] * 5], bool))
    data = p.snapshot()
    q = _policy()
    q.restore(data)
    a = p.recommend(np.array([1, 2]), np.full(2, T), seed=5)
    b = q.recommend(np.array([1, 2]), np.full(2, T), seed=5)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.score, b.score)


def test_non_finite_ranker_predictions_are_never_ranked_and_counted(caplog):
    p = _policy()
    _upload(p, np.arange(30), T - DAY)
    ranker = p.ranker

    class HalfNaN(torch.nn.Module):  # NaN logits for odd item ids
        def forward(self, batch):
            out = ranker(batch)
            return torch.where((batch["item_id"] % 2 == 1)[:, None], torch.full_like(out, float("nan")), out)

    p.ranker = HalfNaN()
    with caplog.at_level("WARNING"):
        out = p.recommend(np.array([1, 2, 3]), np.full(3, T), seed=0)
    assert (out.item_ids >= 0).all() and (out.item_ids % 2 == 0).all()  # 15 finite candidates fill the slates
    assert np.isfinite(out.score).all()
    assert p.nonfinite_scores > 0 and "non-finite scores" in caplog.text


@pytest.mark.parametrize("kind", sorted(ARM_KINDS))
def test_an_arm_without_items_serves_empty_slates(kind):
    """Before its first upload (an HTTP client early in a run) every kind answers with padded empty slates and
    logged features of the usual widths, not an error."""
    spec = ArmSpec(name="a", kind=kind, share=0.5)
    p = build_arm(spec, ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=S, n_item_dense=1,
                                   seed=3))
    out = p.recommend(np.array([1, 2]), np.full(2, T), seed=0)
    assert (out.item_ids == -1).all() and out.item_ids.shape == (2, S) and np.isneginf(out.score).all()
    assert all(v.shape[:2] == (2, S) for v in out.extra.values())
