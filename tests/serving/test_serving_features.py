"""The arm's real-time feature store: uploads, counters, the seen filter and each item's positive-user ring buffer."""

import numpy as np
import pytest

from serving.features import FeatureStore, SortedRuns, sequence_tail

LIKE = np.array([1, 0, 0, 0, 0], bool)
COMMENT = np.array([0, 1, 0, 0, 0], bool)
FOLLOW = np.array([0, 0, 1, 0, 0], bool)
VIEW = np.array([0, 0, 0, 0, 1], bool)
NONE = np.zeros(5, bool)


def _store(max_seq: int = 50, item_ids=(100, 101, 102), upload_ts=(10, 30, 20)) -> FeatureStore:
    s = FeatureStore(n_item_dense=2, max_seq=max_seq)
    n = len(item_ids)
    s.add_items(np.array(item_ids), np.arange(n) + 7, np.array(upload_ts), np.arange(n) % 2,
                np.arange(2 * n, dtype=np.float32).reshape(n, 2))
    return s


def test_add_items_is_idempotent():
    s = _store()
    assert s.n_items == 3
    rows = s.add_items(np.array([101, 100]), np.array([99, 99]), np.array([0, 0]), np.array([5, 5]),
                       np.full((2, 2), 9.0, np.float32))
    np.testing.assert_array_equal(rows, [1, 0])
    assert s.n_items == 3
    # known items keep their original attributes
    np.testing.assert_array_equal(s.item_creator[:3], [7, 8, 9])
    np.testing.assert_array_equal(s.item_upload_ts[:3], [10, 30, 20])
    np.testing.assert_array_equal(s.item_dense[:3], [[0, 1], [2, 3], [4, 5]])
    # a mixed batch adds only the new id (once, even if repeated)
    rows = s.add_items(np.array([102, 103, 103]), np.array([1, 2, 2]), np.array([1, 40, 40]), np.array([0, 3, 3]),
                       np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(rows, [2, 3, 3])
    assert s.n_items == 4
    assert s.item_creator[3] == 2 and s.item_upload_ts[3] == 40 and s.item_category[3] == 3
    assert s.item_creator[2] == 9


def test_add_items_rejects_nan_features():
    s = FeatureStore(n_item_dense=1)
    with pytest.raises(ValueError, match="NaN"):
        s.add_items(np.array([1]), np.array([1]), np.array([0]), np.array([0]), np.array([[np.nan]], np.float32))


def test_record_counters():
    s = _store()
    users = np.array([1, 1, 2, 3])
    items = np.array([100, 101, 100, 100])
    labels = np.stack([LIKE | COMMENT, VIEW, FOLLOW, NONE])
    s.record(users, items, np.array([50, 51, 52, 53]), labels, decay=0.5)
    np.testing.assert_array_equal(s.item_expo[:3], [3, 1, 0])
    np.testing.assert_array_equal(s.item_inter[:3], [3.0, 0.0, 0.0])  # like + comment + follow; view is no interaction
    np.testing.assert_array_equal(s.item_recent[:3], [3.0, 0.0, 0.0])
    ur = s.users.rows(np.array([1, 2, 3]))
    np.testing.assert_array_equal(s.user_expo[ur], [2, 1, 1])
    np.testing.assert_array_equal(s.user_inter[ur], [2.0, 1.0, 0.0])
    # second batch: recent popularity decays before adding
    s.record(np.array([4]), np.array([101]), np.array([60]), LIKE[None], decay=0.5)
    np.testing.assert_array_equal(s.item_recent[:3], [1.5, 1.0, 0.0])
    np.testing.assert_array_equal(s.item_expo[:3], [3, 2, 0])
    # user dense features from the counters: log1p(requests), log1p(interactions), smoothed rate
    ud = s.user_dense(s.users.rows(np.array([1])))
    np.testing.assert_allclose(ud, [[0.0, np.log1p(2.0), 2.1 / 4.0]], rtol=1e-6)


def test_record_returns_items_that_gained_a_positive():
    s = _store()
    got = s.record(np.array([1, 2, 3]), np.array([101, 102, 101]), np.array([5, 6, 7]), np.stack([COMMENT, FOLLOW, LIKE]))
    np.testing.assert_array_equal(got, [1])  # follow does not extend the sequence


def test_seen_filter():
    s = _store()
    assert not s.is_seen(np.array([0]), np.array([0])).any()
    s.record(np.array([1, 2]), np.array([100, 102]), np.array([5, 6]), np.stack([NONE, NONE]))
    u1, u2 = s.users.rows(np.array([1, 2]))
    i0, i1, i2 = s.items.rows(np.array([100, 101, 102]))
    ur = np.array([u1, u1, u1, u2, u2, u2])
    ir = np.array([i0, i1, i2, i0, i1, i2])
    np.testing.assert_array_equal(s.is_seen(ur, ir), [True, False, False, False, False, True])
    # 2-d input keeps its shape
    assert s.is_seen(ur.reshape(2, 3), ir.reshape(2, 3)).shape == (2, 3)


def test_sequence_ring_buffer_keeps_last_users_in_time_order():
    s = _store(max_seq=3)
    a, b = s.items.rows(np.array([100, 101]))
    # batch 1: two likes on item 100
    s.record(np.array([10, 11]), np.array([100, 100]), np.array([100, 200]), np.stack([LIKE, LIKE]))
    seq, n = s.sequences(np.array([a, b]))
    np.testing.assert_array_equal(seq, [[10, 11, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(n, [2, 0])
    # batch 2, out of ts order: 13@400, a view (ignored), 101's like, 12@300 (comment), 14@500
    s.record(
        np.array([13, 99, 20, 12, 14]), np.array([100, 100, 101, 100, 100]), np.array([400, 350, 250, 300, 500]),
        np.stack([LIKE, VIEW, LIKE, COMMENT, LIKE]),
    )
    seq, n = s.sequences(np.array([a, b]))
    np.testing.assert_array_equal(seq, [[12, 13, 14], [20, -1, -1]])
    np.testing.assert_array_equal(n, [3, 1])
    assert s.item_seq_count[a] == 5
    # the timestamps stay aligned with the users in the buffer
    order = np.argsort(s.item_seq_ts[a])
    np.testing.assert_array_equal(s.item_seq[a][order], [12, 13, 14])
    np.testing.assert_array_equal(np.sort(s.item_seq_ts[a]), [300, 400, 500])
    # one more like wraps the ring again
    s.record(np.array([15]), np.array([100]), np.array([600]), LIKE[None])
    seq, n = s.sequences(np.array([a]))
    np.testing.assert_array_equal(seq, [[13, 14, 15]])


def test_sequence_batch_longer_than_buffer_keeps_the_latest():
    s = _store(max_seq=3)
    a = s.items.rows(np.array([100]))
    users = np.array([5, 1, 4, 2, 3])
    s.record(users, np.full(5, 100), users * 10, np.stack([LIKE] * 5))
    seq, n = s.sequences(a)
    np.testing.assert_array_equal(seq, [[3, 4, 5]])
    np.testing.assert_array_equal(n, [3])


def test_sequences_padding_shape():
    s = _store(max_seq=4)
    seq, n = s.sequences(np.array([0, 1, 2]))
    assert seq.shape == (3, 4) and (seq == -1).all()
    np.testing.assert_array_equal(n, [0, 0, 0])
    s.record(np.array([7]), np.array([101]), np.array([1]), LIKE[None])
    seq, n = s.sequences(np.array([1, 0]))
    np.testing.assert_array_equal(seq, [[7, -1, -1, -1], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(n, [1, 0])


def test_upload_order_cache_invalidated_on_new_items():
    s = _store(upload_ts=(300, 100, 200))
    np.testing.assert_array_equal(s.rows_by_upload(), [1, 2, 0])
    assert s.rows_by_upload() is s.rows_by_upload()  # cached
    # re-uploading a known id changes nothing
    s.add_items(np.array([100]), np.array([0]), np.array([0]), np.array([0]), np.zeros((1, 2), np.float32))
    np.testing.assert_array_equal(s.rows_by_upload(), [1, 2, 0])
    s.add_items(np.array([103]), np.array([0]), np.array([150]), np.array([0]), np.zeros((1, 2), np.float32))
    np.testing.assert_array_equal(s.rows_by_upload(), [1, 3, 2, 0])


def test_state_round_trip():
    s = _store(max_seq=3)
    s.record(np.array([1, 2]), np.array([100, 101]), np.array([5, 6]), np.stack([LIKE, VIEW]))
    t = FeatureStore(n_item_dense=2, max_seq=3)
    t.load_state(s.state())
    assert t.n_items == 3 and len(t.users) == 2
    np.testing.assert_array_equal(t.sequences(np.arange(3))[0], s.sequences(np.arange(3))[0])
    np.testing.assert_array_equal(t.item_expo, s.item_expo)
    np.testing.assert_array_equal(t.seen.keys(), s.seen.keys())


def test_user_sequences_keep_each_users_last_positive_items_in_time_order():
    s = FeatureStore(n_item_dense=2, max_user_seq=2)
    s.add_items(np.array([100, 101, 102]), np.zeros(3), np.zeros(3), np.zeros(3), np.zeros((3, 2), np.float32))
    # user 5 likes 102 then 100 (out of order within the batch), views 101; user 6 comments on 101
    s.record(np.array([5, 5, 5, 6]), np.array([100, 101, 102, 101]), np.array([30, 20, 10, 5]),
             np.stack([LIKE, VIEW, LIKE, COMMENT]))
    rows = s.users.rows(np.array([5, 6]))
    seq, n = s.user_sequences(rows)
    np.testing.assert_array_equal(seq, [[2, 0], [1, -1]])  # item rows, oldest first, -1 padded
    np.testing.assert_array_equal(n, [2, 1])
    s.record(np.array([5]), np.array([101]), np.array([40]), LIKE[None])  # the ring drops the oldest
    np.testing.assert_array_equal(s.user_sequences(rows[:1])[0], [[0, 1]])
    s.ensure_users(np.array([7]))
    seq, n = s.user_sequences(s.users.rows(np.array([7])))
    assert (seq == -1).all() and n.tolist() == [0]
    t = FeatureStore(n_item_dense=2, max_user_seq=2)
    t.load_state(s.state())
    np.testing.assert_array_equal(t.user_sequences(rows)[0], s.user_sequences(rows)[0])


def test_follow_labels_record_who_follows_whom():
    s = _store()  # items 100, 101, 102 of creators 7, 8, 9
    s.record(np.array([1, 2, 1, 1, 3]), np.array([100, 100, 102, 100, 101]), np.arange(5),
             np.stack([FOLLOW, FOLLOW, FOLLOW, FOLLOW, LIKE]))  # user 1 follows 7 twice: once counts
    np.testing.assert_array_equal(s.n_followers(np.array([7, 8, 9, 99])), [2, 0, 1, 0])
    u1, u2, u3 = s.users.rows(np.array([1, 2, 3]))
    pos, creators = s.followed(np.array([u3, u1, u2]))
    got = sorted(zip(pos.tolist(), s.creators.ids[creators].tolist()))
    assert got == [(1, 7), (1, 9), (2, 7)]  # user 3 (position 0) follows nobody
    t = FeatureStore(n_item_dense=2)
    t.load_state(s.state())
    np.testing.assert_array_equal(t.follows, s.follows)
    np.testing.assert_array_equal(t.n_followers(np.array([7, 9])), [2, 1])


def test_sequence_tail_keeps_the_last_entries_left_aligned():
    seq = np.array([[1, 2, 3, 4], [5, 6, -1, -1], [-1, -1, -1, -1]])
    length = np.array([4, 2, 0])
    tail, n = sequence_tail(seq, length, 3)
    np.testing.assert_array_equal(tail, [[2, 3, 4], [5, 6, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(n, [3, 2, 0])
    wide, n = sequence_tail(seq, length, 6)  # longer than the rows: padded
    np.testing.assert_array_equal(wide[0], [1, 2, 3, 4, -1, -1])
    np.testing.assert_array_equal(n, [4, 2, 0])
    empty, n = sequence_tail(np.zeros((2, 0), np.int64), np.zeros(2, np.int64), 2)
    assert (empty == -1).all() and empty.shape == (2, 2) and n.tolist() == [0, 0]


def _assert_same_set(runs: SortedRuns, truth: set, queries: np.ndarray) -> None:
    np.testing.assert_array_equal(runs.contains(queries), [q in truth for q in queries.ravel()])
    np.testing.assert_array_equal(runs.keys(), sorted(truth))
    assert len(runs) == len(truth)
    # runs are disjoint, each sorted without duplicates, and shrink geometrically
    for run in runs.runs:
        assert (np.diff(run) > 0).all()
    assert all(len(a) > runs.merge_factor * len(b) for a, b in zip(runs.runs, runs.runs[1:]))


@pytest.mark.parametrize("seed, merge_factor", [(0, 2.0), (1, 2.0), (2, 16.0), (3, 16.0)])
def test_sorted_runs_answer_like_a_set(seed, merge_factor):
    rng = np.random.default_rng(seed)
    runs, truth = SortedRuns(merge_factor=merge_factor), set()
    assert not runs.contains(np.array([0, 5])).any() and len(runs.keys()) == 0
    for round_ in range(60):
        n = 0 if round_ % 7 == 3 else int(rng.integers(1, 200))  # some empty rounds
        keys = rng.integers(0, 2_000, n) << 32 | rng.integers(0, 50, n)  # duplicates within and across rounds
        runs.add(keys)
        truth.update(keys.tolist())
        queries = np.concatenate([keys, rng.integers(0, 2_000, 300) << 32 | rng.integers(0, 50, 300)])
        _assert_same_set(runs, truth, queries)
    assert len(runs.runs) <= 1 + np.log(len(truth)) / np.log(merge_factor)
    assert len(runs.runs) > 1 or merge_factor > 2  # factor 2 keeps several runs of this stream
    # the shape of the query is kept
    assert runs.contains(np.zeros((3, 4), np.int64)).shape == (3, 4)


def test_seen_set_state_round_trip_gives_the_same_answers():
    rng = np.random.default_rng(3)
    s = FeatureStore(n_item_dense=1)
    s.seen = SortedRuns(merge_factor=2.0)  # several runs; the restored store merges with its default factor
    item_ids = np.arange(40) + 1000
    s.add_items(item_ids, np.zeros(40), np.zeros(40), np.zeros(40), np.zeros((40, 1), np.float32))

    def one_round(store, round_rng):
        n = int(round_rng.integers(0, 100))
        users, items = round_rng.integers(0, 300, n), round_rng.choice(item_ids, n)
        store.record(users, items, np.zeros(n, np.int64), np.zeros((n, 5), bool))

    for _ in range(20):
        one_round(s, rng)
    assert len(s.seen.runs) > 1
    state = s.state()
    assert (np.diff(state.seen) > 0).all() and len(state.seen) == len(s.seen)  # one canonical sorted array
    t = FeatureStore(n_item_dense=1)
    t.load_state(state)
    user_rows, item_rows = np.meshgrid(np.arange(len(s.users)), np.arange(40))
    for _ in range(10):  # the same rounds after the restore: the same answers
        seed = int(rng.integers(1 << 30))
        one_round(s, np.random.default_rng(seed))
        one_round(t, np.random.default_rng(seed))
        np.testing.assert_array_equal(t.is_seen(user_rows, item_rows), s.is_seen(user_rows, item_rows))
    np.testing.assert_array_equal(t.seen.keys(), s.seen.keys())
