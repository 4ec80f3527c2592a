"""ColdItemIndex: what makes an item cold, and each request's first k cold neighbours in similarity order."""

import numpy as np

from serving.channels.cold import ColdItemIndex
from serving.features import FeatureStore

HOUR = 3600


def _store() -> FeatureStore:
    store = FeatureStore(n_item_dense=1)
    ids = np.arange(4)
    store.add_items(ids, ids, np.array([0, 0, 0, 10 * HOUR]), ids, np.ones((4, 1), np.float32))
    store.record(np.array([1, 2]), np.array([1, 1]), np.array([5, 6]), np.zeros((2, 5), bool))  # item 1: 2 exposures
    return store


def test_cold_means_few_exposures_and_young():
    store = _store()
    index = ColdItemIndex(2, max_exposures=2, max_age_s=12 * HOUR, m=8, ef_construction=50, ef=50, seed=0)
    rows = np.arange(4)
    assert index.is_cold(store, rows, 11 * HOUR).tolist() == [True, False, True, True]
    assert index.is_cold(store, rows, 13 * HOUR).tolist() == [False, False, False, True]  # 0 and 2 aged out
    per_request = index.is_cold(store, rows[None, :], np.array([[HOUR], [13 * HOUR]]))  # one time per request
    assert per_request.tolist() == [[True, False, True, True], [False, False, False, True]]


def test_nearest_cold_skips_items_that_stopped_being_cold():
    store = _store()
    index = ColdItemIndex(2, max_exposures=2, max_age_s=12 * HOUR, m=8, ef_construction=50, ef=50, seed=0)
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.add(np.arange(4), vectors)
    query = np.array([[1.0, 0.0]], np.float32)
    got = index.nearest_cold(store, query, np.array([11 * HOUR]), k=2)
    assert got.tolist() == [[0, 3]]  # item 1 (second nearest) has too many exposures
    got = index.nearest_cold(store, query, np.array([13 * HOUR]), k=2)
    assert got.tolist() == [[3, -1]]
