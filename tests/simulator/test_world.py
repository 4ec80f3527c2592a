"""The world: observed outcomes where logged else the oracle, catalogue growth, creator reference, oracle calibration."""

import numpy as np
import pyarrow as pa
import pytest

from simulator.config import SyntheticConfig, WorldConfig
from simulator.oracle import fit_oracle, pair_labels
from simulator.schema import RESPONSE_TYPES, SECONDS_PER_DAY, Log, validate_log
from simulator.sources.synthetic import generate_synthetic
from simulator.world import World, creator_reference

T0 = 1_767_225_600  # a midnight (UTC)
D = SECONDS_PER_DAY


def hand_log() -> Log:
    items = pa.table({
        "item_id": [1, 2, 3, 4],
        "creator_id": [5, 5, 7, 9],
        "upload_ts": [T0 - 100, T0 + 10, T0 + D + 5, T0 - 1000],
        "category": [0, 0, 1, 2],
        "f_len": [1.0, 2.0, 3.0, 4.0],
    })
    rows = [
        (T0 + 20, 1, 1, "expose"), (T0 + 20, 1, 1, "like"), (T0 + 20, 1, 1, "view"),
        (T0 + 25, 1, 2, "expose"),
        (T0 + 30, 2, 2, "expose"), (T0 + 30, 2, 2, "comment"), (T0 + 30, 2, 2, "follow"),
        (T0 + D + 10, 1, 3, "expose"), (T0 + D + 10, 1, 3, "like"), (T0 + D + 10, 1, 3, "share"),
        (T0 + D + 20, 2, 1, "like"),
        (T0 + 2 * D + 5, 3, 1, "like"),
    ]
    events = pa.table({k: [r[i] for r in rows] for i, k in enumerate(["ts", "user_id", "item_id", "event"])})
    return validate_log(Log(name="hand", events=events, items=items))


class ConstantResponse:
    """A stub oracle: every response True, so any False in World.respond comes from the log."""

    def __init__(self):
        self.registered: list[np.ndarray] = []

    def sample(self, user_ids, item_ids, rng):
        return np.ones((len(user_ids), len(RESPONSE_TYPES)), bool)

    def register_items(self, item_ids, creator_ids, rng):
        self.registered.append(np.asarray(item_ids))


def _resp(*names):
    return [e in names for e in RESPONSE_TYPES]


def test_pair_labels_of_hand_log():
    pl_ = pair_labels(hand_log())
    got = {(r["user_id"], r["item_id"]): [bool(r[e]) for e in RESPONSE_TYPES] for r in pl_.iter_rows(named=True)}
    assert got == {
        (1, 1): _resp("like", "view"), (1, 2): _resp(), (2, 2): _resp("comment", "follow"),
        (1, 3): _resp("like", "share"), (2, 1): _resp("like"), (3, 1): _resp("like"),
    }


def test_respond_uses_observed_outcomes_and_the_oracle_elsewhere():
    w = World(hand_log(), WorldConfig(), seed=0, response=ConstantResponse())
    users = np.array([1, 1, 2, 1, 2, 3, 1, 99, 2])
    items = np.array([1, 2, 2, 3, 3, 4, 4, 1, 1])
    out = w.respond(users, items, np.random.default_rng(0))
    assert out.dtype == bool and out.shape == (9, 5)
    expected = [
        _resp("like", "view"),  # logged
        _resp(),  # logged exposure without response: all False, exactly
        _resp("comment", "follow"),  # logged
        _resp("like", "share"),  # logged
        [True] * 5,  # user 2 never saw item 3: oracle
        [True] * 5,  # user 3 known, item 4 never in an event: oracle
        [True] * 5,
        [True] * 5,  # user 99 unknown to the log: oracle
        _resp("like"),  # logged (like without exposure event)
    ]
    np.testing.assert_array_equal(out, expected)
    # empty batches
    assert w.respond(np.array([], np.int64), np.array([], np.int64), np.random.default_rng(0)).shape == (0, 5)


def test_respond_without_observed_outcomes_is_pure_oracle():
    w = World(hand_log(), WorldConfig(use_observed_outcomes=False), seed=0, response=ConstantResponse())
    out = w.respond(np.array([1, 1]), np.array([1, 2]), np.random.default_rng(0))
    assert out.all()


def test_dynamic_items_get_oracle_responses_and_catalogue_rows():
    resp = ConstantResponse()
    w = World(hand_log(), WorldConfig(), seed=0, response=resp)
    assert w.next_item_id == 5
    ids = w.create_items(np.array([5, 7, 42]), day=1, t0=T0, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(ids, [5, 6, 7])
    np.testing.assert_array_equal(resp.registered[0], ids)
    tab = w.item_table(ids)
    np.testing.assert_array_equal(tab["creator_id"], [5, 7, 42])
    np.testing.assert_array_equal(tab["category"], [0, 1, 0])  # creator's main category; unknown creator -> 0
    assert ((tab["upload_ts"] >= T0 + D) & (tab["upload_ts"] < T0 + 2 * D)).all()
    assert tab["dense"].shape == (3, 1) and np.isfinite(tab["dense"]).all()
    out = w.respond(np.array([1, 1]), np.array([1, 5]), np.random.default_rng(0))
    np.testing.assert_array_equal(out, [_resp("like", "view"), [True] * 5])


def test_world_does_not_mutate_the_logs_truth():
    log = generate_synthetic(SyntheticConfig(n_users=50, n_creators=5, days=1), seed=0)
    n = len(log.truth.items)
    w = World(log, WorldConfig(), seed=0)
    w.create_items(np.array([0, 1]), day=0, t0=log.t0, rng=np.random.default_rng(0))
    assert len(w.response.items) == n + 2
    assert len(log.truth.items) == n


def test_creator_reference_counts():
    log = hand_log()
    assert log.t0 == T0
    creators, ref, rate = creator_reference(log, T0, days=2)
    np.testing.assert_array_equal(creators, [5, 7, 9])
    # like/comment/follow received per creator and day; share/view/expose and day 2 do not count
    np.testing.assert_array_equal(ref, [[3, 1], [0, 1], [0, 0]])
    # uploads inside the 2 replayed days / 2; silent creators floored at 10% of the mean rate
    np.testing.assert_allclose(rate, [0.5, 0.5, 0.1 * (1.0 / 3.0)])


def test_fit_oracle_is_calibrated_on_logged_pairs():
    cfg = SyntheticConfig(n_users=400, n_creators=40, days=3, n_topics=4, latent_dim=8)
    log = generate_synthetic(cfg, seed=1)
    oracle = fit_oracle(log, WorldConfig(oracle_dim=8, oracle_epochs=2), seed=0)
    pairs = pair_labels(log)
    p = oracle.probs(pairs["user_id"].to_numpy(), pairs["item_id"].to_numpy())
    assert p.shape == (pairs.height, 5) and ((p > 0) & (p < 1)).all()
    for e in RESPONSE_TYPES:
        j = RESPONSE_TYPES.index(e)
        observed = pairs[e].mean()
        assert observed > 0
        assert p[:, j].mean() == pytest.approx(observed, rel=0.10), e
    # the oracle generalises to unlogged pairs and registers new items near their creator's
    oracle.register_items(np.array([10**6]), np.array([log.items["creator_id"][0].as_py()]), np.random.default_rng(0))
    user = pairs["user_id"][0]
    assert oracle.probs(np.array([user]), np.array([10**6])).shape == (1, 5)
