"""The offline Next-User protocol: samples built from the log, Recall@K, the Table-1 layout."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

from simulator.run.offline_next_user import build_samples, recall_at_k
from simulator.run.report import format_next_user_table
from simulator.core.schema import Log, validate_log


def _log():
    # item 10: likes by users 1 (t=100), 2 (t=200), 3 (t=300); user 4 exposed at 250 without a like
    ev = [(50, 1, 10, "expose"), (100, 1, 10, "like"), (150, 2, 10, "expose"), (200, 2, 10, "like"),
          (250, 4, 10, "expose"), (300, 3, 10, "expose"), (300, 3, 10, "comment"), (120, 5, 11, "like")]
    events = pa.table({"ts": [e[0] for e in ev], "user_id": [e[1] for e in ev], "item_id": [e[2] for e in ev],
                       "event": [e[3] for e in ev]})
    items = pa.table({"item_id": [10, 11], "creator_id": [7, 8], "upload_ts": [0, 0], "category": [1, 2]})
    return validate_log(Log(name="t", events=events, items=items))


def test_samples_carry_the_items_earlier_positive_users():
    s = build_samples(_log(), seq_len=2)
    rows = {(int(u), int(s.item_row[i]), bool(s.positive[i])): (s.seq[i].tolist(), int(s.seq_len[i]))
            for i, u in enumerate(s.user_id)}
    assert rows[(1, 0, True)] == ([-1, -1], 0)  # first like: nobody before
    assert rows[(2, 0, True)] == ([1, -1], 1)
    assert rows[(3, 0, True)] == ([1, 2], 2)  # comment at 300 after likes by 1 and 2
    assert rows[(4, 0, False)] == ([1, 2], 2)  # exposure without interaction at 250: a negative
    assert rows[(5, 1, True)] == ([-1, -1], 0)
    assert len(s.ts) == 5 and np.all(np.diff(s.ts) >= 0)


def test_sequences_keep_the_most_recent_users():
    s = build_samples(_log(), seq_len=1)
    i = int(np.flatnonzero((s.user_id == 3) & s.positive)[0])
    assert s.seq[i].tolist() == [2] and s.seq_len[i] == 1


class _FixedTask:
    """u_next = e_{item's category}; users 0..3 have user vectors e_0..e_3 (user-tower stand-in)."""

    class _Model(torch.nn.Module):
        def forward(self, b):
            out = torch.nn.functional.one_hot(b["category"], 4).float()
            return type("O", (), {"u_next": out})

    class _Tower(torch.nn.Module):
        def forward(self, ids, dense):
            return torch.nn.functional.one_hot(ids, 4).float() + 0.01 * ids[:, None].float()

    def __init__(self):
        self.model, self.user_tower = self._Model(), self._Tower()


def test_recall_at_k_by_hand():
    # two test events on an item of category 2: the real next users are 2 (rank 0) and 3 (rank >= 1)
    from simulator.run.offline_next_user import NextUserSamples

    items = pa.table({"item_id": [0], "creator_id": [0], "upload_ts": [0], "category": [2]})
    log = Log(name="t", events=pa.table({"ts": [1], "user_id": [0], "item_id": [0], "event": ["expose"]}), items=items)
    s = NextUserSamples(ts=np.array([5, 6]), user_id=np.array([2, 3]), item_row=np.array([0, 0]),
                        positive=np.array([True, True]), seq=np.array([[-1], [2]]), seq_len=np.array([0, 1]))
    users = np.arange(4)
    udense = np.zeros((4, 3), np.float32)
    r = recall_at_k(_FixedTask(), s, np.array([0, 1]), log, np.zeros((1, 1), np.float32), users, udense, [1, 2])
    # event 0: user 2 scores 1.02, the best -> hit at K=1. event 1: user 2 is in the sequence and excluded;
    # user 3 scores 0.03 but user 1 (0.01) and 0 (0.0) score lower -> rank 0 -> hit at K=1 too.
    assert r == {"recall_1": 1.0, "recall_2": 1.0}


def test_floors_hand_computed():
    """most_active ranks by training positives; user_knn by co-like cosine to the visible users, ties by activity."""
    from simulator.run.offline_next_user import NextUserSamples, floor_recalls

    # training (ts < 10): u0 likes items 0,1,2; u1 likes 0; u2 likes 0,1; u3 nothing -> activity 3,1,2,0
    tr_user, tr_item = [0, 0, 0, 1, 2, 2], [0, 1, 2, 0, 0, 1]
    s = NextUserSamples(ts=np.array([1, 2, 3, 4, 5, 6, 11, 12]), user_id=np.array(tr_user + [2, 2]),
                        item_row=np.array(tr_item + [3, 3]), positive=np.ones(8, bool),
                        seq=np.array([[-1]] * 7 + [[1]]), seq_len=np.array([0] * 7 + [1]))
    items = pa.table({"item_id": [0, 1, 2, 3], "creator_id": [0] * 4, "upload_ts": [0] * 4, "category": [0] * 4})
    log = Log(name="t", events=pa.table({"ts": [1], "user_id": [0], "item_id": [0], "event": ["expose"]}), items=items)
    f = floor_recalls(s, np.array([6, 7]), log, np.arange(4), split_ts=10, ks=[1, 2])
    # event 6 (no visible users, real next user u2): u0 (3) beats u2 (2) under both floors -> rank 1.
    # event 7 (u1 visible, real next user u2): most_active ranks u0 first again (rank 1); user_knn scores u0
    # 1/sqrt(3) = 0.58 and u2 1/sqrt(2) = 0.71 against u1's single like -> u2 first (rank 0).
    assert f == {"most_active": {"recall_1": 0.0, "recall_2": 1.0}, "user_knn": {"recall_1": 0.5, "recall_2": 1.0}}


def test_table_layout_absolute_for_control_relative_for_variants():
    t = pl.DataFrame({"variant": ["full", "abl"], "recall_20": [0.4, 0.3], "recall_50": [0.5, 0.55],
                      "recall_20_rel": [0.0, -0.25], "recall_50_rel": [0.0, 0.1]})
    md = format_next_user_table(t, "full", [20, 50])
    assert "| 0 | full | 0.4000 | 0.5000 |" in md and "| 1 | abl | -25.00% | +10.00% |" in md


@pytest.mark.parametrize("variant", ["next_user", "lookalike"])
def test_tiny_offline_run_end_to_end(variant):
    from scenarios import get_scenario
    from simulator.core.config import OfflineConfig, SyntheticConfig
    from simulator.run.offline_next_user import run_next_user_offline
    from simulator.sources.synthetic import generate_synthetic

    sc = get_scenario("next_user_ablation")
    sc = sc.model_copy(update={"arms": [a for a in sc.arms if a.name in ("next_user", variant)],
                               "offline": OfflineConfig(epochs=1, samples_per_step=2048, max_eval=200)})
    log = generate_synthetic(SyntheticConfig(n_users=300, n_creators=30, days=3), seed=1)
    table, meta = run_next_user_offline(sc, log)
    assert set(table["variant"]) == {"next_user", variant} and meta["test_events"] > 20
    assert (table["recall_50"] >= table["recall_20"]).all() and (table["recall_50"] > 0).all()
    assert set(meta["floors"]) == {"most_active", "user_knn", "truth"}  # the synthetic log carries its truth
    assert meta["floors"]["truth"]["recall_50"] >= meta["floors"]["truth"]["recall_20"] > 0
    for row in table.iter_rows(named=True):  # every cell with its interval; the control differs from nothing
        for k in (20, 50):
            assert row[f"recall_{k}_lo"] <= row[f"recall_{k}"] <= row[f"recall_{k}_hi"]
            assert row[f"recall_{k}_rel_lo"] <= row[f"recall_{k}_rel"] <= row[f"recall_{k}_rel_hi"]
    assert not table.filter(pl.col("variant") == "next_user")["recall_20_sig"][0]
    for floor in meta["floors"].values():
        assert floor["recall_20_lo"] <= floor["recall_20"] <= floor["recall_20_hi"]
    md = format_next_user_table(table, "next_user", [20, 50])
    assert "95% intervals from a paired bootstrap over the held-out events" in md and " [" in md


def test_the_seed_draws_the_order_of_samples_with_the_same_timestamp():
    from simulator.core.config import OfflineConfig
    from simulator.run.offline_next_user import NextUserSamples, split_rows
    from scenarios import get_scenario

    ts = np.array([1, 1, 1, 1, 2, 2, 2, 2, 9])
    s = NextUserSamples(ts=ts, user_id=np.arange(9), item_row=np.zeros(9, np.int64), positive=np.ones(9, bool),
                        seq=np.full((9, 2), -1), seq_len=np.zeros(9, np.int64))
    sc = get_scenario("next_user_ablation").model_copy(update={"offline": OfflineConfig(max_eval=10)})
    orders = [split_rows(sc.model_copy(update={"seed": seed}), s, np.arange(9), split_ts=5, end_ts=10)[0]
              for seed in range(6)]
    for rows in orders:
        assert sorted(rows.tolist()) == list(range(8)) and (np.diff(ts[rows]) >= 0).all()  # time order kept
    assert len({tuple(rows) for rows in orders}) > 1  # seeds order the ties differently
    again = split_rows(sc.model_copy(update={"seed": 3}), s, np.arange(9), split_ts=5, end_ts=10)[0]
    assert again.tolist() == orders[3].tolist()


def test_variants_train_reproducibly():
    """The same seed gives the same table bit for bit: twice in this process (workers=1), and with every variant in
    a fresh process (workers=2). It did not while the samples' order followed polars' hash operations
    (docs/models/next_user.md, 'Reproducibility and speed')."""
    from scenarios import get_scenario
    from simulator.core.config import OfflineConfig, SyntheticConfig
    from simulator.run.offline_next_user import run_next_user_offline
    from simulator.sources.synthetic import generate_synthetic

    sc = get_scenario("next_user_ablation")
    log = generate_synthetic(SyntheticConfig(n_users=300, n_creators=30, days=3), seed=1)

    def table(workers: int) -> pl.DataFrame:
        offline = OfflineConfig(epochs=1, samples_per_step=2048, max_eval=200, workers=workers)
        t, _ = run_next_user_offline(sc.model_copy(update={
            "arms": [a for a in sc.arms if a.name in ("next_user", "no_cls")], "offline": offline}), log)
        return t.select([c for c in t.columns if not c.startswith("train_")])  # timings differ

    first = table(1)
    assert first.equals(table(1)) and first.equals(table(2))


def test_replicates_pool_the_seeds_figures(monkeypatch):
    """replicates=2 is seeds s and s + 1, each with its own held-out sample and models: every figure is the mean
    of the two seeds' and the intervals come from both. Training is replaced by a fake whose Recall depends on the
    seed (fast, and a hit pattern chosen by hand), so the variants run in this process (workers=1)."""
    import simulator.run.offline_next_user as protocol
    from scenarios import get_scenario
    from simulator.core.config import OfflineConfig, SyntheticConfig
    from simulator.sources.synthetic import generate_synthetic

    def fake(arm, ctx, sc, s, train_rows, test_rows, log, item_dense, users, udense, ranks):
        rank = np.where(np.arange(len(test_rows)) % (2 + sc.seed % 2) == 0, 0, 100)  # a hit every 2nd or 3rd event
        ranks.append(rank)
        return {"recall_20": float((rank < 20).mean()), "recall_50": float((rank < 50).mean()), "train_s": 1.0,
                "train_samples_per_s": 1.0, "seed": float(sc.seed)}

    monkeypatch.setattr(protocol, "_train_and_score", fake)
    sc = get_scenario("next_user_ablation")
    sc = sc.model_copy(update={"arms": [a for a in sc.arms if a.name in ("next_user", "lookalike")],  # in this process:
                               "offline": OfflineConfig(epochs=1, samples_per_step=2048, max_eval=200, workers=1)})
    log = generate_synthetic(SyntheticConfig(n_users=300, n_creators=30, days=3), seed=1)
    one = [protocol.run_next_user_offline(sc.model_copy(update={"seed": seed}), log) for seed in (sc.seed, sc.seed + 1)]
    both, meta = protocol.run_next_user_offline(sc, log, replicates=2)
    assert meta["seeds"] == [sc.seed, sc.seed + 1] and both["seed"].to_list() == [sc.seed + 0.5] * 2
    row = both.row(0, named=True)
    assert row["recall_20"] == pytest.approx((one[0][0]["recall_20"][0] + one[1][0]["recall_20"][0]) / 2)
    assert row["recall_20"] != one[0][0]["recall_20"][0]  # the seeds differ: the pooling is seen
    assert row["recall_20_lo"] < row["recall_20"] < row["recall_20_hi"]
    for name, floor in meta["floors"].items():  # the floors are pooled the same way
        expected = (one[0][1]["floors"][name]["recall_20"] + one[1][1]["floors"][name]["recall_20"]) / 2
        assert floor["recall_20"] == pytest.approx(expected), name
