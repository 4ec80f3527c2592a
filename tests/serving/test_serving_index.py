"""The hnswlib inner-product index: recall against exact search, padding, replace, NaN rejection, round trip."""

import numpy as np
import pytest

from serving.index import ANNIndex


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_recall_against_exact_inner_product_search():
    rng = np.random.default_rng(0)
    dim, n, n_q, k = 32, 5_000, 300, 10
    vecs = _unit(rng.standard_normal((n, dim)))
    queries = _unit(rng.standard_normal((n_q, dim)))
    idx = ANNIndex(dim)  # default m / ef_construction / ef
    idx.add(np.arange(n), vecs)
    assert len(idx) == n
    labels, scores = idx.query(queries, k)
    exact = np.argsort(-(queries @ vecs.T), axis=1)[:, :k]
    recall = np.mean([len(np.intersect1d(labels[i], exact[i])) / k for i in range(n_q)])
    print(f"HNSW recall@{k} on {n} random unit {dim}-d vectors at ef={idx.ef}: {recall:.4f}")
    assert recall >= 0.9
    # scores are the inner products of the returned labels, best first
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vecs.T, labels, 1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_query_with_fewer_items_than_k_pads():
    rng = np.random.default_rng(1)
    idx = ANNIndex(8)
    v = _unit(rng.standard_normal((3, 8)))
    idx.add(np.array([5, 6, 7]), v)
    labels, scores = idx.query(v[:2], 10)
    assert labels.shape == scores.shape == (2, 10)
    assert labels[0, 0] == 5 and labels[1, 0] == 6
    assert sorted(labels[0, :3].tolist()) == [5, 6, 7]
    assert (labels[:, 3:] == -1).all()
    assert np.isneginf(scores[:, 3:]).all() and np.isfinite(scores[:, :3]).all()


def test_empty_index_and_empty_query():
    idx = ANNIndex(4)
    labels, scores = idx.query(np.ones((2, 4), np.float32), 3)
    assert (labels == -1).all() and np.isneginf(scores).all()
    idx.add(np.array([0]), _unit(np.ones((1, 4))))
    labels, _ = idx.query(np.zeros((0, 4), np.float32), 3)
    assert labels.shape == (0, 3)


def test_replace_existing_label_updates_its_vector():
    idx = ANNIndex(4)
    e = np.eye(4, dtype=np.float32)
    idx.add(np.array([0, 1, 2]), e[:3])
    labels, scores = idx.query(e[3:4], 1)
    assert scores[0, 0] == pytest.approx(0.0, abs=1e-6)
    idx.add(np.array([1]), e[3:4])  # label 1 now points along axis 3
    assert len(idx) == 3
    labels, scores = idx.query(e[3:4], 1)
    assert labels[0, 0] == 1 and scores[0, 0] == pytest.approx(1.0, abs=1e-6)
    labels, scores = idx.query(e[1:2], 3)
    assert scores.max() == pytest.approx(0.0, abs=1e-6)  # nothing is along axis 1 any more


def test_nan_vectors_rejected():
    idx = ANNIndex(4)
    bad = np.ones((2, 4), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        idx.add(np.array([0, 1]), bad)
    assert len(idx) == 0
    with pytest.raises(ValueError, match="NaN"):
        idx.add(np.array([0]), np.array([[np.inf, 0, 0, 0]], np.float32))


def test_grows_past_initial_capacity():
    rng = np.random.default_rng(2)
    idx = ANNIndex(8, initial_capacity=16)
    v = _unit(rng.standard_normal((100, 8)))
    idx.add(np.arange(50), v[:50])
    idx.add(np.arange(50, 100), v[50:])
    assert len(idx) == 100
    labels, _ = idx.query(v, 1)
    assert (labels[:, 0] == np.arange(100)).mean() > 0.95


def test_bytes_round_trip_gives_identical_results():
    rng = np.random.default_rng(3)
    v = _unit(rng.standard_normal((500, 16)))
    q = _unit(rng.standard_normal((50, 16)))
    idx = ANNIndex(16, seed=5)
    idx.add(np.arange(500), v)
    data = idx.to_bytes()
    other = ANNIndex(16, seed=5)
    other.from_bytes(data)
    assert len(other) == 500
    l1, s1 = idx.query(q, 20)
    l2, s2 = other.query(q, 20)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(s1, s2)
    # the restored index can still be written to
    other.add(np.array([500]), q[:1])
    assert other.query(q[:1], 1)[0][0, 0] == 500


def test_build_is_deterministic():
    rng = np.random.default_rng(4)
    v = _unit(rng.standard_normal((800, 16)))
    q = _unit(rng.standard_normal((40, 16)))
    a, b = ANNIndex(16, seed=1), ANNIndex(16, seed=1)
    a.build(np.arange(800), v)
    b.build(np.arange(800), v)
    np.testing.assert_array_equal(a.query(q, 10)[0], b.query(q, 10)[0])
