"""Per-model epochs chosen on a validation window before the split (simulator.run.offline_ihm_select)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.core.config import IHMOfflineConfig, SyntheticConfig
from simulator.run.offline_ihm_data import ItemTable, Positives, Split
from simulator.run.offline_ihm_select import select_epochs, validation_split


@pytest.fixture(scope="module")
def world():
    from simulator.core.schema import SECONDS_PER_DAY
    from simulator.sources.synthetic import generate_synthetic

    log = generate_synthetic(SyntheticConfig(n_users=300, n_creators=30, days=3), seed=1)
    items = ItemTable.of(log)
    return log, items, Positives.of(log, items), SECONDS_PER_DAY


def test_validation_window_is_the_latest_share_of_the_training_positives(world):
    _, items, positives, _ = world
    config = IHMOfflineConfig(validation_share=0.2, max_eval_per_window=10_000)
    split = Split.of(positives, len(items), config, seed=0)
    val = validation_split(positives, split, len(items), config, seed=0)
    assert val.split_ts < split.split_ts and val.end_ts == split.split_ts
    assert (positives.ts[val.train] < val.split_ts).all()  # fit: strictly before the validation window
    held = positives.ts[val.test]
    assert ((held >= val.split_ts) & (held < split.split_ts)).all()  # validation: inside the training period
    assert not set(val.test) & set(split.test) and set(val.train) | set(val.test) == set(split.train)
    assert abs(len(val.test) / len(split.train) - 0.2) < 0.05
    assert (val.train_count == np.bincount(positives.item[val.train], minlength=len(items))).all()
    small = validation_split(positives, split, len(items), config.model_copy(update={"max_eval_per_window": 10}), 0)
    assert len(small.test) == 10 and set(small.test) <= set(val.test)  # a deterministic sample, as test windows


def _build(sizes):
    from trainers.tasks.ihm_offline import RETRIEVAL_MODELS

    return lambda log_q: RETRIEVAL_MODELS["ihm"](sizes, log_q)


def _sizes(items):
    from scenarios import get_scenario
    from simulator.run.offline_ihm import sizes_of

    return sizes_of(get_scenario("ihm_decay"), items.features_by_row["item_dense"].shape[1])


def test_selection_takes_the_first_best_epoch_and_never_reads_the_test_period(world):
    log, items, positives, day = world
    config = IHMOfflineConfig(epochs=3, batch_size=16)
    split = Split.of(positives, len(items), config, seed=0)
    chosen = select_epochs(_build(_sizes(items)), "live", positives, items, split, config, seed=0)
    assert len(chosen.curve) == 3 and all(0 <= hr <= 1 for hr in chosen.curve)
    assert chosen.epochs == int(np.argmax(chosen.curve)) + 1 and chosen.best == max(chosen.curve)
    # the same log cut at the split (no test period at all) gives the same curve: nothing after the split is read
    before = Positives.of(log, items, until_ts=split.split_ts)
    split_before = Split(split_ts=split.split_ts, end_ts=split.end_ts, edges=split.edges, train=split.train,
                         test=np.zeros(0, np.int64), window=np.zeros(0, np.int64), train_count=split.train_count)
    assert (before.ts[: len(split.train)] == positives.ts[split.train]).all()
    again = select_epochs(_build(_sizes(items)), "live", before, items, split_before, config, seed=0)
    assert again.curve == chosen.curve


def test_the_protocol_trains_each_model_for_its_chosen_epochs(world):
    from scenarios import get_scenario
    from simulator.run.offline_ihm import run_ihm_offline

    log = world[0]
    sc = get_scenario("ihm_decay")
    sc = sc.model_copy(update={"arms": [a for a in sc.arms if a.name in ("ihm", "transductive")],
                               "ihm_offline": IHMOfflineConfig(epochs=3, batch_size=16, baselines=False)})
    _, meta = run_ihm_offline(sc, log)
    for model in ("ihm", "transductive"):
        (chosen,) = meta["epoch_selection"][model]
        assert chosen["epochs"] == int(np.argmax(chosen["curve"])) + 1
        assert meta["figures"][model]["epochs"] == chosen["epochs"] == meta["figures"][model]["selected_epochs"]
    fixed = sc.model_copy(update={"ihm_offline": sc.ihm_offline.model_copy(update={"epoch_selection": "fixed"})})
    _, meta = run_ihm_offline(fixed, log)
    assert meta["epoch_selection"] == {} and meta["figures"]["ihm"]["epochs"] == 3
