"""Offline decay protocol of the Item History Model (papers/item_history_model_ihm.txt, section 5.1): train
once on the positives before the median timestamp, then score the later half in equal time windows
without retraining; HitRate@K and NDCG@K overall, on tail items and on head items, per window.

Positives are the log's likes and comments, one per (user, item) (its first time), in time order.

* **Split.** Positives with ``ts`` < the median positive timestamp train; the rest are the test
  period, cut into ``windows`` equal-duration windows.
* **Training.** Every training positive (u, i, t) is one target: the user tower's output after u's
  earlier positives (SASRec's all-position training over each user's time-ordered sequence, see
  :class:`Chunks`), the item tower on i's features and (IHM) the last ``max_history`` users who liked i
  before t. Every model sees the same chunks, shuffled; each model trains for its own number of epochs, chosen on a
  validation window just before the split (:mod:`simulator.run.offline_ihm_select`; ``epoch_selection = "fixed"``:
  ``epochs`` passes for every model).
* **Scoring.** For each test positive (u, i, t): the user vector from u's positives before t (the
  sequence grows with test interactions, for every model); the item vectors of every item
  uploaded by t. Inductive variants re-infer every item embedding from its history every
  ``refresh_hours`` (the history grows with test-window interactions as they arrive); nothing is
  retrained. The target's rank is the number of candidates scoring strictly higher; candidates are
  all items uploaded by t (``eval_negatives = 0``) or ``eval_negatives`` deterministic uniform draws
  from them, u's earlier positives excluded either way.
* **Subsets.** Tail items have fewer than ``tail_max`` training positives (items first seen in the
  test period included), head items the rest.

Variants (the scenario's arms, by ``kind``; :data:`VARIANTS`): ``ihm`` (live histories), ``ihm_frozen``
(histories frozen at the split: no real-time inference), ``ihm_static`` (the trained IHM with e_i = E_S:
no inductive structure), ``transductive`` (the same two-tower trained without history), ``sasrec``
(id-only SASRec next-item). The three IHM variants share one trained model. Beside them the tables carry the
baselines of :mod:`simulator.run.offline_ihm_baselines` (most popular, recently popular, item-kNN) on the same
events, candidates and exclusions (``ihm_offline.baselines``). The training and scoring steps on one model are
:mod:`simulator.run.offline_ihm_steps`.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import torch

from simulator.core.config import Scenario
from simulator.core.schema import SECONDS_PER_DAY, Log
from simulator.metrics.offline_ci import event_bootstrap, slope_intervals
from simulator.run.offline_ihm_baselines import BASELINES, baseline_ranks
from simulator.run.offline_ihm_data import Batches, Chunks, ItemTable, Positives, Split
from simulator.run.offline_ihm_select import log_q_of, select_epochs
from simulator.run.offline_ihm_steps import Variant, hit_ndcg, score, train, user_vectors
from trainers.tasks.ihm_offline import RETRIEVAL_MODELS, RetrievalSizes, RetrievalTask
from trainers.models.ihm import IHMConfig
from trainers.models.sasrec import SASRecConfig

SUBSETS = ("overall", "tail", "head")


VARIANTS: dict[str, Variant] = {
    "ihm": Variant("ihm", "live"),
    "ihm_frozen": Variant("ihm", "frozen"),
    "ihm_static": Variant("ihm", "none"),
    "transductive": Variant("transductive", "none"),
    "sasrec": Variant("sasrec", "none"),
}
"""Arm kind -> variant of the protocol (the only place these kinds map to code)."""


# ----------------------------------------------------------------------------------- metrics


def summarize(variant: str, rank: np.ndarray, window: np.ndarray, tail: np.ndarray, k: int, windows: int) -> pl.DataFrame:
    """Long table: one row per (window, subset) with events, hr, ndcg; window 0 = all windows together."""
    hit, ndcg = hit_ndcg(rank, k)
    rows = []
    for window_index in range(windows + 1):
        in_window = np.ones_like(tail) if window_index == 0 else window == window_index - 1
        for subset, mask in (("overall", in_window), ("tail", in_window & tail), ("head", in_window & ~tail)):
            n_events = int(mask.sum())
            rows.append({"variant": variant, "window": window_index, "subset": subset, "events": n_events,
                         "hr": float(hit[mask].mean()) if n_events else float("nan"),
                         "ndcg": float(ndcg[mask].mean()) if n_events else float("nan")})
    return pl.DataFrame(rows)


def intervals(per_seed: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]], control: str, k: int, windows: int,
              seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per variant, window and subset (as :func:`summarize`): the 95% intervals of HR@k and NDCG@k, their relative
    differences from ``control`` and whether those are significant (paired bootstrap over the cell's test events,
    and over the seeds when there are several: :func:`simulator.metrics.offline_ci.event_bootstrap`).
    ``per_seed``: for each seed, (variant -> the test events' ranks, each event's window, whether it is tail).
    Also returns, per variant and subset, the intervals of the decay slope of HR@k over windows 1..W
    (:func:`simulator.metrics.offline_ci.slope_intervals`)."""
    names = list(per_seed[0][0])
    per_event = [({name: hit_ndcg(rank, k) for name, rank in ranks.items()}, window, tail)
                 for ranks, window, tail in per_seed]
    rows = []
    hr_replicates: dict[str, list] = {subset: [] for subset in ("overall", "tail", "head")}  # windows 1..W
    for window_index in range(windows + 1):
        for subset in ("overall", "tail", "head"):
            masks = []
            for _, window, tail in per_event:
                in_window = np.ones_like(tail) if window_index == 0 else window == window_index - 1
                masks.append({"overall": in_window, "tail": in_window & tail, "head": in_window & ~tail}[subset])
            row = {name: {"variant": name, "window": window_index, "subset": subset} for name in names}
            for m, metric in enumerate(("hr", "ndcg")):
                kept = hr_replicates[subset] if metric == "hr" and window_index > 0 else None
                cells = event_bootstrap({name: [values[name][m][mask] for (values, _, _), mask in zip(per_event, masks)]
                                         for name in names}, control, seed=seed, replicates=kept)
                for name, cell in cells.items():
                    row[name].update({f"{metric}_lo": cell["lo"], f"{metric}_hi": cell["hi"], f"{metric}_rel": cell["rel"],
                                      f"{metric}_rel_lo": cell["rel_lo"], f"{metric}_rel_hi": cell["rel_hi"],
                                      f"{metric}_sig": cell["significant"]})
            rows.extend(row.values())
    slopes = []
    for subset, per_window in hr_replicates.items():
        present = [(w, r) for w, r in enumerate(per_window, 1) if r is not None]
        cells = slope_intervals(np.array([w for w, _ in present]), [r for _, r in present], names)
        slopes.extend({"variant": name, "subset": subset, **cell} for name, cell in cells.items())
    return pl.DataFrame(rows), pl.DataFrame(slopes)


def decay_slopes(long: pl.DataFrame) -> pl.DataFrame:
    """Per variant and subset: least-squares slope of HitRate@K over windows 1..W, absolute and
    relative to the mean (share lost per window; negative = decay)."""
    rows = []
    for (variant, subset), group in long.filter(pl.col("window") > 0).group_by(["variant", "subset"], maintain_order=True):
        group = group.filter(pl.col("hr").is_not_nan()).sort("window")
        windows, hit_rate = group["window"].to_numpy().astype(float), group["hr"].to_numpy()
        slope = float(np.polyfit(windows, hit_rate, 1)[0]) if len(windows) >= 2 else float("nan")
        mean = float(hit_rate.mean()) if len(hit_rate) else float("nan")
        rows.append({"variant": variant, "subset": subset, "slope": slope,
                     "rel_slope": slope / mean if mean and mean == mean else float("nan")})
    return pl.DataFrame(rows)


# ----------------------------------------------------------------------------------- train / score


def sizes_of(scenario: Scenario, n_item_dense: int) -> RetrievalSizes:
    config, model = scenario.ihm_offline, scenario.ihm_offline.model
    return RetrievalSizes(
        ihm=IHMConfig(dim=scenario.model.dim, heads=model.heads, max_history=model.max_history,
                      id_buckets=scenario.model.id_buckets, n_item_dense=n_item_dense,
                      history_dropout=model.history_dropout),
        sasrec=SASRecConfig(dim=scenario.model.dim, layers=model.layers, heads=model.attn_heads,
                            ff=2 * scenario.model.dim, dropout=model.dropout, seq_len=model.seq_len),
        tau=model.tau, lr=config.lr, seed=scenario.seed)


def run_ihm_offline(scenario: Scenario, log: Log, days: int | None = None, progress=None,
                    replicates: int = 1) -> tuple[pl.DataFrame, dict]:
    """Train each variant's model once, score every window; returns (window-1 Table-1 layout, meta).

    meta: ``figures`` (per-variant scalars for the child runs), ``long`` (every window x subset),
    ``decay`` (slopes), counts. ``days``: use only the log's first days. ``replicates``: seeds ``seed``,
    ``seed + 1``, ...; each draws the split's sample and initialises and trains the models; the figures are the
    means over the seeds and the intervals cover seeds and events (two-level bootstrap).
    """
    torch.set_num_threads(1)
    config = scenario.ihm_offline
    unknown = sorted({arm.kind for arm in scenario.arms} - set(VARIANTS))
    if unknown:
        raise ValueError(f"ihm_offline: arm kinds {unknown} are not variants of the protocol; known: {sorted(VARIANTS)}")
    clash = sorted({arm.name for arm in scenario.arms} & set(BASELINES)) if config.baselines else []
    if clash:
        raise ValueError(f"ihm_offline: arms {clash} are named like the protocol's baselines; rename them")
    items = ItemTable.of(log)
    positives = Positives.of(log, items, until_ts=log.t0 + days * SECONDS_PER_DAY if days else None)
    control = scenario.control if scenario.control in {arm.name for arm in scenario.arms} else scenario.arms[0].name
    seeds = [scenario.seed + r for r in range(replicates)]
    longs, seed_figures, per_seed = [], [], []
    selections: dict[str, list[dict]] = {}  # model -> per seed: the chosen epochs and the validation curve
    for seed in seeds:
        split = Split.of(positives, len(items), config, seed)
        batches = Batches.of(positives, items, config, split.train)
        sizes = sizes_of(scenario.model_copy(update={"seed": seed}), items.features_by_row["item_dense"].shape[1])
        log_q = log_q_of(split)
        tail = split.train_count[positives.item[split.test]] < config.tail_max
        chunks = Chunks.of(positives, split.train, config.model.seq_len)
        trained: dict[str, tuple[RetrievalTask, dict, torch.Tensor]] = {}
        figures, ranks = {}, {}
        for arm in scenario.arms:
            variant = VARIANTS[arm.kind]
            if variant.model not in trained:
                build = RETRIEVAL_MODELS[variant.model]
                epochs, chosen = config.epochs, {}
                if config.epoch_selection == "validation":
                    started = time.perf_counter()
                    selection = select_epochs(lambda q, b=build: b(sizes, q), VARIANTS[variant.model].history,
                                              positives, items, split, config, seed)
                    if selection is not None:
                        epochs = selection.epochs
                        chosen = {"selected_epochs": float(epochs), "validation_hr": selection.best,
                                  "select_s": time.perf_counter() - started}
                        selections.setdefault(variant.model, []).append(
                            {"seed": seed, "epochs": epochs, "curve": selection.curve,
                             "validation_events": selection.validation_events})
                task = build(sizes, log_q)
                stats = {**train(task, batches, chunks, epochs, config.batch_size, seed), "epochs": float(epochs), **chosen}
                trained[variant.model] = (task, stats, user_vectors(task, batches, split))
            task, stats, users = trained[variant.model]
            started = time.perf_counter()
            rank = score(task, variant, batches, split, config, seed, users=users)
            ranks[arm.name] = rank
            long = summarize(arm.name, rank, split.window, tail, config.k, config.windows)
            longs.append(long)
            figures[arm.name] = {**stats, "score_s": time.perf_counter() - started,
                                 **{f"{row['subset']}.w{row['window']}.{metric}": row[metric]
                                    for row in long.iter_rows(named=True) for metric in ("hr", "ndcg")}}
            if progress is not None:
                progress(arm.name)
        if config.baselines:  # the same events, candidates and exclusions; rows of the tables, not child runs
            for name in BASELINES:
                ranks[name] = baseline_ranks(name, batches, split, config, seed)
                longs.append(summarize(name, ranks[name], split.window, tail, config.k, config.windows))
        seed_figures.append(figures)
        per_seed.append((ranks, split.window, tail))
    # every figure is the mean over the seeds (one seed: itself)
    long = (pl.concat(longs).group_by(["variant", "window", "subset"], maintain_order=True)
            .agg(pl.col("events").mean().round().cast(pl.Int64), pl.col("hr").mean(), pl.col("ndcg").mean()))
    figures = {arm.name: {key: float(np.mean([f[arm.name][key] for f in seed_figures])) for key in seed_figures[0][arm.name]}
               for arm in scenario.arms}
    cells, slope_cells = intervals(per_seed, control, config.k, config.windows, scenario.seed)
    long = long.join(cells, on=["variant", "window", "subset"], how="left", maintain_order="left")
    decay = decay_slopes(long).join(slope_cells, on=["variant", "subset"], how="left", maintain_order="left")
    for row in decay.filter(pl.col("variant").is_in(list(figures))).iter_rows(named=True):  # arms (child runs)
        figures[row["variant"]][f"{row['subset']}.decay_slope"] = row["slope"]
        figures[row["variant"]][f"{row['subset']}.decay_rel_slope"] = row["rel_slope"]
    meta = {"figures": figures, "long": long, "decay": decay, "seeds": seeds, "epoch_selection": selections, "train_positives": int(len(split.train)),
            "test_events": int(len(split.test)), "test_tail_events": int(tail.sum()), "items": int(len(items)),
            "tail_items": int((split.train_count < config.tail_max).sum()), "split_ts": split.split_ts,
            "window_days": float((split.end_ts - split.split_ts) / config.windows / SECONDS_PER_DAY),
            "window_edges_days": [float((e - split.split_ts) / SECONDS_PER_DAY) for e in split.edges],
            "window_events": [int((split.window == window).sum()) for window in range(config.windows)]}
    return table1(long, config.k), meta


def table1(long: pl.DataFrame, k: int, window: int = 1) -> pl.DataFrame:
    """The paper's Table 1 layout for one window: a row per variant, HR/NDCG overall, tail, head."""
    rows = long.filter(pl.col("window") == window)
    out = None
    for subset in SUBSETS:
        columns = [pl.col(metric + suffix).alias(f"{subset}_{metric}{k}{suffix}") for metric in ("hr", "ndcg")
                   for suffix in ("", "_lo", "_hi", "_rel", "_rel_lo", "_rel_hi", "_sig") if metric + suffix in rows.columns]
        part = rows.filter(pl.col("subset") == subset).select("variant", *columns)
        out = part if out is None else out.join(part, on="variant", how="left", maintain_order="left")
    return out
