"""The world: observed outcomes where logged else the oracle, catalogue growth, creator reference, oracle calibration."""

import numpy as np
import pyarrow as pa
import pytest

from simulator.core.config import SyntheticConfig, WorldConfig
from simulator.world.oracle import fit_oracle, pair_labels
from simulator.world.response import item_specific_share
from simulator.core.schema import RESPONSE_TYPES, SECONDS_PER_DAY, Log, validate_log
from simulator.sources.synthetic import BASE_RATES, generate_synthetic
from simulator.world.platform import World, creator_reference

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

    def item_content(self, item_ids):
        return {}  # no content: the world falls back to the creator's latest item's features


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
    # no events before t0: the fallback reference is the run's first min(baseline_days, days) days
    ref = creator_reference(log, T0, days=2, baseline_days=7)
    assert not ref.pre_period
    np.testing.assert_array_equal(ref.creator_ids, [5, 7, 9])
    # like/comment/follow received per creator and day; share/view do not count, nor does day 2
    np.testing.assert_array_equal(ref.interactions, [[3, 1], [0, 1], [0, 0]])
    np.testing.assert_array_equal(ref.exposures, [[3, 0], [0, 1], [0, 0]])
    # uploads inside the 2 replayed days / 2; silent creators floored at 10% of the mean rate
    np.testing.assert_allclose(ref.upload_rate, [0.5, 0.5, 0.1 * (1.0 / 3.0)])
    np.testing.assert_array_equal(creator_reference(log, T0, days=2, baseline_days=1).interactions, [[3], [0], [0]])
    # a log with events before t0 (here: day 0 is the pre-period of a run starting on day 1): those days, always
    ref = creator_reference(log, T0 + D, days=2, baseline_days=7)
    assert ref.pre_period
    np.testing.assert_array_equal(ref.exposures, [[3], [0], [0]])
    np.testing.assert_array_equal(ref.interactions, [[3], [0], [0]])
    np.testing.assert_allclose(ref.upload_rate, [0.1 / 6, 0.5, 0.1 / 6])  # item 3 (creator 7) is the only upload
    np.testing.assert_array_equal(ref.select(np.array([False, True, True])).creator_ids, [7, 9])


def test_fit_oracle_is_calibrated_on_logged_pairs():
    cfg = SyntheticConfig(n_users=400, n_creators=40, days=3, n_topics=4, latent_dim=8, uploads_per_creator_day=1.0)
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
    assert oracle.item_content(np.array([10**6])) == {}  # no content: the world keeps the log's item features
    # items registered later sit around their creator's mean direction as the fitted items do, with their norms
    creators = log.items["creator_id"].to_numpy()
    n_fit = len(creators)
    fitted = oracle.item_vecs[:n_fit]
    new_creators = np.repeat(np.unique(creators), 40)
    oracle.register_items(2 * 10**6 + np.arange(len(new_creators)), new_creators, np.random.default_rng(1))
    new = oracle.item_vecs[-len(new_creators):]
    share_fit = item_specific_share(fitted, creators)
    assert oracle.item_prior.share == pytest.approx(share_fit)
    assert item_specific_share(new, new_creators) == pytest.approx(share_fit, abs=0.03)
    norm_fit, norm_new = np.linalg.norm(fitted, axis=1), np.linalg.norm(new, axis=1)
    assert np.median(norm_new) == pytest.approx(np.median(norm_fit), rel=0.1)
    assert np.log(norm_new).std() == pytest.approx(np.log(norm_fit).std(), rel=0.25)
    bias_fit, bias_new = oracle.item_bias[:n_fit], oracle.item_bias[-len(new_creators):]
    np.testing.assert_allclose(bias_new.std(0), bias_fit.std(0), rtol=0.3)


# ---------------------------------------------------------------- the synthetic truth: items, content, users

@pytest.fixture(scope="module")
def synthetic_log() -> Log:
    """~3,000 items of 400 creators (one upload per creator-day): enough for shares and R^2 to within ~0.01."""
    return generate_synthetic(SyntheticConfig(n_users=2_000, n_creators=400, days=7, uploads_per_creator_day=1.0), seed=0)


def _dynamic_world(log: Log) -> tuple[World, np.ndarray, np.ndarray]:
    """A world with one dynamic item per logged item, of the same creator: (world, logged rows, dynamic ids)."""
    w = World(log, WorldConfig(), seed=0)
    creators = log.items["creator_id"].to_numpy()
    ids = w.create_items(creators, day=0, t0=log.t0, rng=np.random.default_rng(7))
    return w, creators, ids


def test_items_have_the_same_item_specific_share_and_norm_logged_or_dynamic(synthetic_log):
    log = synthetic_log
    w, creators, ids = _dynamic_world(log)
    truth = w.response
    logged = truth.item_vecs[truth.items.rows(log.items["item_id"].to_numpy())]
    dynamic = truth.item_vecs[truth.items.rows(ids)]
    np.testing.assert_allclose(np.linalg.norm(logged, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(dynamic, axis=1), 1.0, atol=1e-5)
    s = SyntheticConfig().item_specific_share
    share_logged, share_dynamic = item_specific_share(logged, creators), item_specific_share(dynamic, creators)
    assert share_logged == pytest.approx(share_dynamic, abs=0.02)
    for share in (share_logged, share_dynamic):  # s up to O(s / d) after normalisation (docs/world.md)
        assert share == pytest.approx(s, abs=0.025)
    # quality: one distribution (standardised, heavy right tail) for both origins
    q_logged, q_dynamic = truth.item_quality[: len(creators)], truth.item_quality[truth.items.rows(ids)]
    for q in (q_logged, q_dynamic):
        assert abs(q.mean()) < 0.06 and q.std() == pytest.approx(1.0, abs=0.08)
        assert np.mean(q - np.median(q)) > 0.05  # right-skewed: mean above median


def test_item_specific_share_is_the_parameter():
    log = generate_synthetic(SyntheticConfig(n_users=200, n_creators=300, days=7, item_specific_share=0.7), seed=2)
    assert item_specific_share(log.truth.item_vecs, log.truth.item_creators) == pytest.approx(0.7, abs=0.03)


def _ridge_r2(content: np.ndarray, latent: np.ndarray) -> float:
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0).fit(content, latent).score(content, latent)


def test_content_predicts_the_latent_vector_with_the_set_r2(synthetic_log):
    log = synthetic_log
    cfg = SyntheticConfig()
    w, creators, ids = _dynamic_world(log)
    names = [f"f_content_{j}" for j in range(cfg.latent_dim)]
    assert [c for c in w.feature_cols if c.startswith("f_content_")] == names
    cols = [w.feature_cols.index(c) for c in names]
    truth = w.response
    logged_rows = truth.items.rows(log.items["item_id"].to_numpy())
    content_logged = np.stack([log.items[c].to_numpy() for c in names], 1)
    content_dynamic = w.item_table(ids)["dense"][:, cols]
    # the world's catalogue carries the truth's content for dynamic items (not a copy of the creator's latest item)
    np.testing.assert_array_equal(content_dynamic, np.stack([truth.item_content(ids)[c] for c in names], 1))
    assert _ridge_r2(content_logged, truth.item_vecs[logged_rows]) == pytest.approx(cfg.content_r2, abs=0.03)
    assert _ridge_r2(content_dynamic, truth.item_vecs[truth.items.rows(ids)]) == pytest.approx(cfg.content_r2, abs=0.03)
    # duration says nothing about the latent vector
    duration = w.item_dense[: len(creators), [w.feature_cols.index("f_duration")]]
    assert _ridge_r2(duration, truth.item_vecs[logged_rows]) < 0.01


def test_content_r2_is_the_parameter():
    cfg = SyntheticConfig(n_users=200, n_creators=300, days=7, content_r2=0.8, content_dim=24)
    log = generate_synthetic(cfg, seed=3)
    content = np.stack([log.items[f"f_content_{j}"].to_numpy() for j in range(24)], 1)
    assert _ridge_r2(content, log.truth.item_vecs) == pytest.approx(0.8, abs=0.03)


def test_user_propensity_keeps_the_base_rates_and_separates_users(synthetic_log):
    truth = synthetic_log.truth
    flat_cfg = SyntheticConfig(n_users=2_000, n_creators=400, days=7, user_propensity_sigma=0.0)
    flat = generate_synthetic(flat_cfg, seed=0).truth
    rng = np.random.default_rng(11)
    like = RESPONSE_TYPES.index("like")
    users, items = rng.choice(truth.users.ids, 300_000), rng.choice(truth.items.ids, 300_000)
    p = truth.probs(users, items)
    rate_flat = flat.probs(rng.choice(flat.users.ids, 300_000), rng.choice(flat.items.ids, 300_000))[:, like].mean()
    # the platform's like rate over random pairs stays at its base rate, with or without propensity
    assert p[:, like].mean() == pytest.approx(BASE_RATES["like"], rel=0.03)
    assert p[:, like].mean() == pytest.approx(rate_flat, rel=0.03)
    assert p[:, RESPONSE_TYPES.index("view")].mean() == pytest.approx(BASE_RATES["view"], rel=0.03)
    # propensity: interactions only, heavy-tailed (lognormal rate multiplier)
    prop = truth.user_bias[:, like]
    assert (truth.user_bias[:, RESPONSE_TYPES.index("view")] == 0).all()
    np.testing.assert_array_equal(truth.user_bias[:, RESPONSE_TYPES.index("follow")], prop)
    assert prop.std() == pytest.approx(SyntheticConfig().user_propensity_sigma, rel=0.1)
    # at equal affinity, users of the top propensity decile like more often than those of the bottom decile
    lo, hi = np.quantile(prop, [0.1, 0.9])
    u_prop = prop[truth.users.rows(users)]
    aff = np.einsum("nd,nd->n", truth.user_vecs[truth.users.rows(users)], truth.item_vecs[truth.items.rows(items)])
    liked = truth.sample(users, items, rng)[:, like]
    bins = np.digitize(aff, np.quantile(aff, np.linspace(0, 1, 11)[1:-1]))
    for b in range(10):
        top, bottom = (bins == b) & (u_prop >= hi), (bins == b) & (u_prop <= lo)
        assert p[top, like].mean() > 2 * p[bottom, like].mean(), b
    assert liked[u_prop >= hi].mean() > 2 * liked[u_prop <= lo].mean()



def test_slots_per_upload_is_the_supply_demand_ratio_and_the_default_is_the_papers_order():
    cfg = SyntheticConfig(n_users=1_000, n_creators=100, mean_daily_visit_prob=0.5, requests_per_visit=2.0,
                          slate_size=10, uploads_per_creator_day=0.5)
    assert cfg.slots_per_upload == pytest.approx(1_000 * 0.5 * 2 * 10 / (100 * 0.5))  # 200
    # DualRec section 5: >100M users, 4M uploads a day -> at least ~500 exposures per upload and day; the default
    # world is calibrated to that order (docs/world.md, "Scarce early exposure"), the tiny test scales are not
    assert 400 <= SyntheticConfig().slots_per_upload <= 2_500
