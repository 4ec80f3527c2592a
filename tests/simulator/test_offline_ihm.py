"""The IHM offline decay protocol: time split and windows, histories, metrics by hand, a tiny run, the CLI."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from mlflow import MlflowClient

from simulator.core.config import IHMOfflineConfig
from simulator.run.offline_ihm import SUBSETS, decay_slopes, summarize, table1
from simulator.run.offline_ihm_steps import Variant, hit_ndcg, score
from simulator.run.offline_ihm_data import Batches, ItemTable, Positives, Split, Timeline
from simulator.run.report import format_ihm_table
from simulator.core.schema import Log, validate_log

H = 3600


def _log():
    # 3 items; likes at hours 1..10; item 12 first seen (uploaded) at hour 8. A like repeated by user 1 on item 10
    # (hour 6) keeps its first time. Exposures without likes are ignored.
    likes = [(1, 1, 10), (2, 2, 10), (3, 1, 11), (4, 3, 10), (5, 2, 11), (6, 1, 10), (7, 3, 11), (8, 4, 12),
             (9, 1, 12), (10, 4, 10)]
    ev = [(h * H, u, i, "like") for h, u, i in likes] + [(5 * H, 5, 10, "expose")]
    events = pa.table({"ts": [e[0] for e in ev], "user_id": [e[1] for e in ev], "item_id": [e[2] for e in ev],
                       "event": [e[3] for e in ev]})
    items = pa.table({"item_id": [10, 11, 12], "creator_id": [0, 0, 1], "upload_ts": [0, 0, 8 * H],
                      "category": [0, 1, 1], "f_x": [0.1, 0.2, 0.3]})
    return validate_log(Log(name="t", events=events, items=items))


def test_positives_split_and_windows():
    log = _log()
    items = ItemTable.of(log)
    p = Positives.of(log, items)
    assert len(p) == 9 and np.all(np.diff(p.ts) >= 0)  # (1, 10) counted once
    s = Split.of(p, len(items), IHMOfflineConfig(windows=2, tail_max=2), seed=0)
    assert s.split_ts == 5 * H  # median of hours 1,2,3,4,5,7,8,9,10
    assert p.ts[s.train].max() < s.split_ts and p.ts[s.test].min() >= s.split_ts
    assert len(s.train) == 4 and len(s.test) == 5
    assert s.train_count.tolist() == [3, 1, 0]  # before 5h: item 10 liked by users 1, 2, 3; item 11 by user 1
    # windows: [5h, 7.5h) and [7.5h, 10h]: hours 5, 7 | 8, 9, 10
    assert s.window.tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize(("windows_by", "counts", "edges_h"), [
    ("time", [2, 3], [5, 7.5, 10]),  # test positives at h5, h7, h8, h9, h10 (the end is the last one + 1 s)
    ("count", [2, 3], [5, 8, 10]),  # the median test time (h8) is the inner edge
    ("horizon", [1, 1], [5, 6.5, 8]),  # only the first 3 hours after the split: h5 | h7; h8 and later not scored
])
def test_windows_by_time_count_or_horizon(windows_by, counts, edges_h):
    log = _log()
    items = ItemTable.of(log)
    p = Positives.of(log, items)
    oc = IHMOfflineConfig(windows=2, tail_max=2, windows_by=windows_by, horizon_days=3 / 24)
    s = Split.of(p, len(items), oc, seed=0)
    assert np.bincount(s.window, minlength=2).tolist() == counts
    assert s.edges.tolist() == pytest.approx([e * H for e in edges_h], abs=1.0)


def test_histories_and_sequences_are_strictly_before_the_time():
    log = _log()
    items = ItemTable.of(log)
    p = Positives.of(log, items)
    b = Batches(p, items, seq_len=2, max_history=3)
    h, n = b.item_users.last(np.array([0, 0, 2]), np.array([4 * H, 11 * H, 9 * H]), 3)
    # item 10: users 1 (h1), 2 (h2), 3 (h4), 4 (h10); before 4h: 1, 2 (h4 itself excluded); before 11h: the last 3
    assert h.tolist() == [[1, 2, -1], [2, 3, 4], [4, -1, -1]] and n.tolist() == [2, 3, 1]
    u1 = np.searchsorted(np.unique(p.user), 1)
    seq, n = b.user_items.last(np.array([u1]), np.array([9 * H]), 2)
    assert seq.tolist() == [[0, 1]] and n.tolist() == [2]  # user 1 liked 10 (h1), 11 (h3); 12 is at h9 itself
    rows, vals = b.user_items.pairs(np.array([u1, u1]), np.array([2 * H, 10 * H]))
    assert rows.tolist() == [0, 1, 1, 1] and vals.tolist() == [0, 0, 1, 2]


def test_timeline_last_keeps_the_most_recent():
    tl = Timeline(np.array([0, 0, 0, 1]), np.array([5, 1, 3, 2]), np.array([50, 10, 30, 20]))
    v, n = tl.last(np.array([0, 1, 0]), np.array([6, 9, 3]), 2)
    assert v.tolist() == [[30, 50], [20, -1], [10, -1]] and n.tolist() == [2, 1, 1]


def test_hit_rate_and_ndcg_by_hand():
    hit, ndcg = hit_ndcg(np.array([0, 1, 9, 10, 50]), k=10)
    assert hit.tolist() == [1, 1, 1, 0, 0]
    assert ndcg.tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0, 0.0])
    long = summarize("m", np.array([0, 1, 9, 10, 50]), window=np.array([0, 0, 1, 1, 1]),
                     tail=np.array([True, False, True, False, False]), k=10, windows=2)
    w1 = {r["subset"]: r for r in long.filter(pl.col("window") == 1).iter_rows(named=True)}
    assert w1["overall"]["hr"] == 1.0 and w1["tail"]["events"] == 1 and w1["head"]["ndcg"] == pytest.approx(1 / math.log2(3))
    w2 = {r["subset"]: r for r in long.filter(pl.col("window") == 2).iter_rows(named=True)}
    assert w2["overall"]["hr"] == pytest.approx(1 / 3) and w2["head"]["hr"] == 0.0
    t = table1(long, 10)
    assert t["tail_hr10"][0] == 1.0 and "| m | 1.0000 | " in format_ihm_table(t, 10, SUBSETS)


def test_decay_slope_is_the_least_squares_slope():
    long = pl.DataFrame({"variant": ["a"] * 3, "window": [1, 2, 3], "subset": ["tail"] * 3, "events": [5] * 3,
                         "hr": [0.3, 0.2, 0.1], "ndcg": [0.1] * 3})
    d = decay_slopes(long).row(0, named=True)
    assert d["slope"] == pytest.approx(-0.1) and d["rel_slope"] == pytest.approx(-0.5)


class _FixedTask:
    """Item vectors: e_{category} plus 0.5 e_2 per history user; user vectors e_0 (users 1 and 2) or e_1 (others)."""

    def items(self, b):
        v = torch.nn.functional.one_hot(b["category"], 3).float()
        v[:, 2] += 0.5 * b["hist_len"].float()
        return v

    def users(self, seq):
        # a user whose last item is item row 0 prefers category 0, otherwise category 1
        last = seq["item_id"][torch.arange(len(seq["seq_len"])), (seq["seq_len"] - 1).clamp(min=0)]
        return torch.nn.functional.one_hot((last != 10).long(), 3).float() + torch.tensor([0, 0, 0.1])


def test_score_ranks_with_exclusions_availability_and_live_histories():
    log = _log()
    items = ItemTable.of(log)
    p = Positives.of(log, items)
    oc = IHMOfflineConfig(windows=2, tail_max=2, refresh_hours=1.0)
    s = Split.of(p, len(items), oc, seed=0)
    b = Batches(p, items, 5, 5)
    none = score(_FixedTask(), Variant("x", "none"), b, s, oc, seed=0)
    live = score(_FixedTask(), Variant("x", "live"), b, s, oc, seed=0)
    # test events: h5 (u2, 11), h7 (u3, 11), h8 (u4, 12), h9 (u1, 12), h10 (u4, 10)
    # no history: items 10 -> e0, 11 -> e1, 12 -> e1 (category 1); item 12 not uploaded before h8
    # h5 u2 (last item 10): u = e0 + .1e2; 10 is seen -> 11 alone among available: rank 0
    # h7 u3 (last 10): 10 seen; 11 target alone: rank 0. h8 u4 (no items: BOS -> last = item_id[0] = 10 ->
    # prefers e0) items 10 (1.0) > 12 (0.0) ties with 11 (0.0): rank 1.
    # h9 u1 (last 11): 10, 11 seen, rank 0. h10 u4 (last 12): prefers e1: 11 = 12 (seen) -> 11 scores 1 > 10: rank 1
    assert none.tolist() == [0, 0, 1, 0, 1]
    # live: 0.5 * history size on e2 (users' 0.1 weight): at h8 item 10 has 3 users (.15), 11 has 3 (.15), 12 none
    # -> for u4 at h8: 10 scores 1.15 > 12 (0) and 11 (.15) > 12 -> rank 2
    assert live.tolist()[2] == 2


def test_eval_negatives_rank_among_sampled_candidates():
    log = _log()
    items = ItemTable.of(log)
    p = Positives.of(log, items)
    oc = IHMOfflineConfig(windows=2, tail_max=2, eval_negatives=50)
    s = Split.of(p, len(items), oc, seed=0)
    r = score(_FixedTask(), Variant("x", "none"), Batches(p, items, 5, 5), s, oc, seed=0)
    assert r[0] == 0 and r[2] > 0 and r[2] <= 50  # item 10 is drawn among the 50 for the h8 event almost surely


@pytest.mark.parametrize("eval_negatives", [0, 50])
def test_baselines_rank_on_the_models_candidates_and_exclusions(eval_negatives):
    """rank_by with a model's own scores gives score()'s ranks (the same candidates, exclusions and sampled
    negatives); most_popular and item_kNN by hand on the tiny log."""
    from simulator.run.offline_ihm_steps import item_vectors, user_vectors
    from simulator.run.offline_ihm_baselines import baseline_ranks, rank_by

    log = _log()
    items = ItemTable.of(log)
    p = Positives.of(log, items)
    oc = IHMOfflineConfig(windows=2, tail_max=2, eval_negatives=eval_negatives)
    s = Split.of(p, len(items), oc, seed=0)
    b = Batches(p, items, 5, 5)
    task = _FixedTask()
    users, vecs = user_vectors(task, b, s), item_vectors(task, b, None)
    same = rank_by(lambda part, events, hist_ts: (users[part] @ vecs.T).numpy(), b, s, oc, seed=0, live=False)
    assert same.tolist() == score(task, Variant("x", "none"), b, s, oc, seed=0).tolist()
    if eval_negatives == 0:
        # training positives (before h5): item 10 by u1, u2, u3; item 11 by u1; test events h5 (u2, 11), h7 (u3, 11),
        # h8 (u4, 12: all three available, none seen), h9 (u1, 12: 10 and 11 seen), h10 (u4, 10: 12 seen)
        assert baseline_ranks("most_popular", b, s, oc, seed=0).tolist() == [0, 0, 2, 0, 0]
        # item-kNN: u4 has no history at h8 (ties broken by popularity: 10, 11, 12); at h10 its item 12 has no co-likes
        assert baseline_ranks("item_knn", b, s, oc, seed=0).tolist() == [0, 0, 2, 0, 0]
        assert baseline_ranks("recent_popular", b, s, oc, seed=0).tolist() == [0, 0, 2, 0, 0]
    with pytest.raises(ValueError, match="unknown IHM baseline"):
        baseline_ranks("nope", b, s, oc, seed=0)


def test_recent_popularity_counts_the_days_before_the_refresh():
    from simulator.run.offline_ihm_baselines import recent_counts

    log = _log()
    items = ItemTable.of(log)
    b = Batches(Positives.of(log, items), items, 5, 5)
    # first likes at h1 (10), h2 (10), h3 (11), h4 (10), h5 (11), h7 (11), h8 (12), h9 (12), h10 (10)
    assert recent_counts(b, 8 * H, 10 * H).tolist() == [0, 0, 2]
    assert recent_counts(b, 0, 8 * H).tolist() == [3, 3, 0]
    assert recent_counts(b, 0, 11 * H).tolist() == [4, 3, 2]


def _tiny_scenario(arms=("ihm", "transductive", "sasrec")):
    from scenarios import get_scenario

    sc = get_scenario("ihm_decay")
    return sc.model_copy(update={"arms": [a for a in sc.arms if a.name in arms],
                                 "ihm_offline": IHMOfflineConfig(epochs=2, batch_size=16)})


def test_tiny_synthetic_run_end_to_end():
    from simulator.core.config import SyntheticConfig
    from simulator.run.offline_ihm import run_ihm_offline
    from simulator.sources.synthetic import generate_synthetic

    log = generate_synthetic(SyntheticConfig(n_users=300, n_creators=30, days=3), seed=1)
    table, meta = run_ihm_offline(_tiny_scenario(("ihm", "ihm_frozen", "transductive")), log)
    assert table["variant"].to_list() == ["ihm", "ihm_frozen", "transductive", "most_popular", "recent_popular",
                                          "item_knn"]  # the baselines on the same events
    assert set(meta["figures"]) == {"ihm", "ihm_frozen", "transductive"}  # child runs: the arms only
    assert meta["test_events"] > 50 and sum(meta["window_events"]) == meta["test_events"]
    long = meta["long"]
    assert set(long["window"].unique()) == set(range(6)) and long.filter(pl.col("events") > 0)["hr"].is_between(0, 1).all()
    assert set(meta["figures"]["ihm"]) >= {"tail.w1.hr", "head.w1.ndcg", "tail.decay_slope", "train_s"}
    assert meta["figures"]["ihm"]["train_s"] == meta["figures"]["ihm_frozen"]["train_s"]  # one trained model
    cells = long.filter(pl.col("events") > 0)
    assert (cells["hr_lo"] <= cells["hr"]).all() and (cells["hr"] <= cells["hr_hi"]).all()
    assert (cells["ndcg_lo"] <= cells["ndcg"]).all() and (cells["ndcg"] <= cells["ndcg_hi"]).all()
    control = cells.filter(pl.col("variant") == "transductive")  # the scenario's control, against itself
    assert not control["hr_sig"].any() and (control.filter(pl.col("hr") > 0)["hr_rel"] == 0).all()
    assert {"overall_hr10_lo", "tail_ndcg10_hi", "head_hr10_sig"} <= set(table.columns)
    assert "95% intervals from a paired bootstrap" in format_ihm_table(table, 10, SUBSETS)
    decay = meta["decay"]
    assert (decay.filter(pl.col("slope").is_not_nan())["slope_lo"] <= decay.filter(pl.col("slope").is_not_nan())["slope_hi"]).all()


def test_unknown_variant_kind_is_a_clear_error():
    from simulator.core.config import ArmSpec
    from simulator.run.offline_ihm import run_ihm_offline

    sc = _tiny_scenario().model_copy(update={"arms": [ArmSpec(name="x", kind="nope", share=1.0)], "control": "x"})
    with pytest.raises(ValueError, match="nope"):
        run_ihm_offline(sc, _log())


def test_cli_runs_the_protocol_and_records_mlflow(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import scenarios
    from simulator.run.cli import app

    monkeypatch.setitem(scenarios.SCENARIOS, "ihm_decay", _tiny_scenario())
    uri = f"sqlite:///{tmp_path}/m.db"
    res = CliRunner().invoke(app, ["--scenario", "ihm_decay", "--scale", "tiny", "--days", "3", "--no-progress",
                                   "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert "Tail HR@10" in res.output and "slope tail" in res.output and "test positives" in res.output
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("coldsim").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["ihm", "ihm_decay", "sasrec", "transductive"]
    parent = next(r for r in runs if r.info.run_name == "ihm_decay")
    arts = {a.path for a in c.list_artifacts(parent.info.run_id)} | {a.path for a in c.list_artifacts(parent.info.run_id, "plots")}
    assert {"table1.md", "decay.md", "windows.csv", "plots/decay.png"} <= arts
    child = next(r for r in runs if r.info.run_name == "ihm")
    assert "tail.w1.hr" in child.data.metrics


def test_chunks_make_every_training_positive_a_target_once_with_context():
    from simulator.run.offline_ihm_data import Chunks

    # one user with 7 positives (item rows 0..6 at t = 0..6), another with 2
    p = Positives(ts=np.array([0, 1, 2, 3, 4, 5, 6, 2, 3]), user=np.array([1] * 7 + [2] * 2),
                  user_idx=np.array([0] * 7 + [1] * 2), item=np.array([0, 1, 2, 3, 4, 5, 6, 3, 4]))
    c = Chunks.of(p, np.arange(9), max_len=4)  # stride 2
    assert sorted(c.t_row.tolist()) == list(range(9))
    got = [(c.seq[i, : c.seq_len[i]].tolist(), c.t_row[c.t_start[i]:c.t_start[i + 1]].tolist(),
            c.t_pos[c.t_start[i]:c.t_start[i + 1]].tolist()) for i in range(len(c))]
    # user 1: window [3,4,5,6] targets 5, 6 (positions 2, 3: read 3,4 | 3,4,5); window [1..4] targets 3, 4;
    # window [0, 1, 2] (a = 0) targets 0, 1, 2 at positions 0, 1, 2 (position 0 = BOS, an empty history)
    assert got[:3] == [([3, 4, 5, 6], [5, 6], [2, 3]), ([1, 2, 3, 4], [3, 4], [2, 3]), ([0, 1, 2], [0, 1, 2], [0, 1, 2])]
    assert got[3] == ([3, 4], [7, 8], [0, 1])


def test_test_time_histories_keep_only_known_users():
    log = _log()
    items = ItemTable.of(log)
    p = Positives.of(log, items)
    known = np.zeros(4, bool)
    known[np.searchsorted(np.unique(p.user), [1, 2, 3])] = True  # user 4 has no training positive
    b = Batches(p, items, 5, 5, known)
    test = b.item_batch(np.array([0]), np.array([11 * H]), test=True)
    train = b.item_batch(np.array([0]), np.array([11 * H]))
    assert test["hist_users"][0, : test["hist_len"][0]].tolist() == [1, 2, 3]
    assert train["hist_users"][0, : train["hist_len"][0]].tolist() == [1, 2, 3, 4]


def test_replicates_pool_the_seeds_windows():
    """replicates=2: every window's HitRate is the mean of the two one-seed runs', with its interval."""
    from simulator.core.config import SyntheticConfig
    from simulator.run.offline_ihm import run_ihm_offline
    from simulator.sources.synthetic import generate_synthetic

    log = generate_synthetic(SyntheticConfig(n_users=300, n_creators=30, days=3), seed=1)
    sc = _tiny_scenario(("ihm", "transductive"))
    one = [run_ihm_offline(sc.model_copy(update={"seed": seed}), log)[1]["long"] for seed in (sc.seed, sc.seed + 1)]
    _, meta = run_ihm_offline(sc, log, replicates=2)
    assert meta["seeds"] == [sc.seed, sc.seed + 1]
    cell = (pl.col("variant") == "ihm") & (pl.col("window") == 0) & (pl.col("subset") == "overall")
    expected = (one[0].filter(cell)["hr"][0] + one[1].filter(cell)["hr"][0]) / 2
    pooled = meta["long"].filter(cell).row(0, named=True)
    assert pooled["hr"] == pytest.approx(expected) and pooled["hr_lo"] <= pooled["hr"] <= pooled["hr_hi"]
