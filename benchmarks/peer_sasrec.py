"""A peer SASRec on coldsim's own IHM split and metric: is coldsim's ``sasrec`` a faithful SASRec?

RecBole's SASRec (its model, its defaults, its full-softmax CE loss, its trainer and early stopping on Hit@10) is trained
on the protocol's training positives (simulator/run/offline_ihm.py) and then scored by the protocol's own ranking
(:func:`simulator.run.offline_ihm.score`: every item uploaded by then, the user's earlier positives excluded, HitRate@10
and NDCG@10), beside coldsim's ``sasrec`` and the most-popular baseline, on the same test events.

* **Training data.** RecBole's sequential benchmark files, written from the protocol's split: every training positive
  with at least one earlier positive is one row, its ``item_id_list`` the user's last ``seq_len`` earlier positives
  (RecBole's own augmentation of a sequence into all its prefixes). RecBole early-stops on the protocol's validation
  window (the latest ``validation_share`` of the training positives, :mod:`simulator.run.offline_ihm_select`) and keeps
  its best epoch; coldsim's ``sasrec`` picks its epochs on the same window.
* **Events compared.** SASRec cannot read an empty sequence, so both models are compared on the test positives whose
  user has at least one earlier positive (the share left out is printed); coldsim's ``sasrec`` reads the [BOS] token
  on the others.
* **Intervals.** 95% paired bootstrap over events (and seeds), :func:`simulator.metrics.offline_ci.event_bootstrap`,
  relative to coldsim's ``sasrec``.

RecBole is not a project dependency: 1.2.1 pins ``ray<=2.6.3`` for its hyper-parameter tuner, which this script does
not import, and its data loading needs ``pandas<3``. Install it in a second virtual environment beside the project
(this is what was run)::

    python3.11 -m venv .venv-peer
    .venv-peer/bin/pip install -e . "pandas<3"
    .venv-peer/bin/pip install --no-deps recbole==1.2.1
    .venv-peer/bin/pip install colorlog==4.7.2 colorama==0.4.4 texttable tabulate thop tensorboard tqdm scikit-learn plotly

Run: ``.venv-peer/bin/python benchmarks/peer_sasrec.py --log movielens:../shared/data/ml-100k`` (RecBole: ~42 s
per epoch on 2 cores alone, 250 s beside another job; it early-stopped after 22 epochs on ml-100k); docs/performance.md, "A peer
SASRec", quotes it. With ``--work DIR`` RecBole's files stay in DIR, and a stopped run continues with ``--resume``
from the best epoch it saved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIELDS = "user_id:token\titem_id:token\ttimestamp:float\titem_id_list:token_seq\n"


def write_atomic(path: Path, name: str, positives, items, batches, rows: np.ndarray, seq_len: int) -> int:
    """One RecBole benchmark file: rows of ``rows`` with a non-empty history; returns how many were written."""
    seq, length = batches.user_items.last(positives.user_idx[rows], positives.ts[rows], seq_len)
    keep = length > 0
    with open(path / f"coldsim.{name}.inter", "w") as out:
        out.write(FIELDS)
        for r, s, n in zip(rows[keep], seq[keep], length[keep]):
            history = " ".join(str(int(items.item_id[x])) for x in s[:n])
            out.write(f"{positives.user[r]}\t{items.item_id[positives.item[r]]}\t{positives.ts[r]}\t{history}\n")
    return int(keep.sum())


class PeerTask:
    """The protocol's scoring interface (``users(seq)``, ``items(batch)``) over a trained RecBole SASRec: raw item ids
    map to RecBole's internal ids, and a user vector is SASRec's output at the sequence's last item."""

    def __init__(self, model, dataset, items):
        self.model = model.eval()
        token_id = dataset.field2token_id["item_id"]
        self.internal = torch.tensor([token_id.get(str(int(i)), 0) for i in items.item_id])  # by item row
        self.item_id = items.item_id  # sorted: a raw id's row is its searchsorted position

    @torch.no_grad()
    def users(self, seq: dict) -> torch.Tensor:
        n = seq["seq_len"]
        rows = np.searchsorted(self.item_id, seq["item_id"].numpy())  # every id in a sequence is a catalogue item
        item_seq = self.internal[torch.from_numpy(rows.astype(np.int64))]
        item_seq = torch.where(torch.arange(item_seq.shape[1])[None, :] < n[:, None], item_seq, 0)
        return self.model.forward(item_seq, n.clamp(min=1))  # (B, d); empty sequences are left out of the comparison

    @torch.no_grad()
    def items(self, batch: dict) -> torch.Tensor:
        return self.model.item_embedding.weight[self.internal[batch["item_row"]]]


def recbole_sasrec(work: Path, seed: int, seq_len: int, max_epochs: int, k: int, batch_size: int | None = None,
                   resume: bool = False):
    """Train RecBole's SASRec with its defaults on ``work/coldsim``'s benchmark files; (model, dataset, epochs run).
    ``resume``: continue from the checkpoint RecBole saved in ``work/saved`` (its best epoch so far), if any."""
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):  # RecBole 1.2.1
        if old not in np.__dict__:  # re-aliases NumPy 1 names that NumPy 2 removed; give them back their NumPy 2 types
            setattr(np, old, new)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    config = Config(model="SASRec", dataset="coldsim", config_dict={
        "data_path": str(work), "benchmark_filename": ["train", "valid", "test"], "checkpoint_dir": str(work / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp", "item_id_list"], "item": ["item_id"]},
        "MAX_ITEM_LIST_LENGTH": seq_len, "epochs": max_epochs, "stopping_step": 10, "valid_metric": f"Hit@{k}",
        "metrics": ["Hit", "NDCG"], "topk": [k], "train_neg_sample_args": None, "device": "cpu", "use_gpu": False,
        "seed": seed, "reproducibility": True, "show_progress": False, "log_wandb": False,
        "eval_args": {"mode": "full", "order": "TO"}, **({"train_batch_size": batch_size} if batch_size else {})})
    init_seed(seed, True)
    here = os.getcwd()
    os.chdir(work)  # RecBole writes its tensorboard and log folders into the working directory
    try:
        init_logger(config)  # RecBole's per-epoch lines (training time and loss, validation Hit@k): a run takes hours
        return _fit(config, create_dataset, data_preparation, SASRec, Trainer, resume)
    finally:
        os.chdir(here)


def _fit(config, create_dataset, data_preparation, SASRec, Trainer, resume: bool):
    t0 = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    t1 = time.perf_counter()
    model = SASRec(config, train_data.dataset)
    trainer = Trainer(config, model)
    saved = sorted(Path(config["checkpoint_dir"]).glob("SASRec-*.pth"), key=lambda f: f.stat().st_mtime)
    if resume and saved:
        # RecBole saves its best epoch only: a resumed run continues from there with fresh patience (the epochs after
        # the best one are trained again, from a different random state)
        trainer.resume_checkpoint(saved[-1])
    trainer.fit(train_data, valid_data, verbose=True, saved=True)  # verbose: the per-epoch lines
    state = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    print(f"  recbole: data {t1 - t0:.0f} s, fit {time.perf_counter() - t1:.0f} s, best epoch {state['epoch'] + 1}",
          flush=True)
    return model, dataset, int(state["epoch"]) + 1


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", default="movielens:../shared/data/ml-100k")
    p.add_argument("--seeds", type=int, default=1, help="replicates: seeds 0..n-1 (split sample, initialisation)")
    p.add_argument("--max-epochs", type=int, default=200, help="RecBole's epoch cap (it early-stops after 10 without gain)")
    p.add_argument("--batch-size", type=int, default=None, help="RecBole's train_batch_size (default: RecBole's, 2048)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--work", type=Path, default=None, help="keep RecBole's files (benchmark files, checkpoints, logs) in "
                   "WORK/seed<n> instead of a temporary folder, so that a stopped run can --resume")
    p.add_argument("--resume", action="store_true", help="continue from the best epoch RecBole saved in --work")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.resume and a.work is None:
        p.error("--resume needs --work (where the stopped run kept its checkpoint)")
    torch.set_num_threads(a.threads)
    from scenarios import get_scenario
    from simulator.metrics.offline_ci import event_bootstrap
    from simulator.run.logs import load_log
    from simulator.run.offline_ihm import VARIANTS, sizes_of
    from simulator.run.offline_ihm_steps import hit_ndcg, score, train, user_vectors
    from simulator.run.offline_ihm_baselines import baseline_ranks
    from simulator.run.offline_ihm_data import Batches, Chunks, ItemTable, Positives, Split
    from simulator.run.offline_ihm_select import log_q_of, select_epochs, validation_split
    from trainers.tasks.ihm_offline import RETRIEVAL_MODELS

    scenario = get_scenario("ihm_decay")
    config = scenario.ihm_offline
    log = load_log(a.log, scenario)
    items = ItemTable.of(log)
    positives = Positives.of(log, items)
    names = ("coldsim_sasrec", "recbole_sasrec", "most_popular")
    per_seed, out = [], {"log": a.log, "seeds": []}
    for seed in range(a.seeds):
        started = time.perf_counter()
        split = Split.of(positives, len(items), config, seed)
        batches = Batches.of(positives, items, config, split.train)
        sizes = sizes_of(scenario.model_copy(update={"seed": seed}), items.features_by_row["item_dense"].shape[1])
        # coldsim's sasrec, exactly as the protocol trains it
        build = lambda q: RETRIEVAL_MODELS["sasrec"](sizes, q)  # noqa: E731
        chosen = select_epochs(build, "none", positives, items, split, config, seed)
        ours = build(log_q_of(split))
        train(ours, batches, Chunks.of(positives, split.train, config.model.seq_len), chosen.epochs, config.batch_size, seed)
        ranks = {"coldsim_sasrec": score(ours, VARIANTS["sasrec"], batches, split, config, seed,
                                         users=user_vectors(ours, batches, split))}
        ours_s = time.perf_counter() - started
        # RecBole's SASRec on the same training positives, early-stopped on the same validation window
        validation = validation_split(positives, split, len(items), config, seed)
        kept = None if a.work is None else (a.work / f"seed{seed}").resolve()
        with tempfile.TemporaryDirectory() if kept is None else contextlib.nullcontext(kept) as tmp:
            work = Path(tmp)
            (work / "coldsim").mkdir(parents=True, exist_ok=True)
            n_fit = write_atomic(work / "coldsim", "train", positives, items, batches, validation.train, config.model.seq_len)
            write_atomic(work / "coldsim", "valid", positives, items, batches, validation.test, config.model.seq_len)
            write_atomic(work / "coldsim", "test", positives, items, batches, validation.test[:10], config.model.seq_len)
            (work / "coldsim" / "coldsim.item").write_text("item_id:token\n" + "".join(f"{i}\n" for i in items.item_id))
            started = time.perf_counter()
            model, dataset, peer_epochs = recbole_sasrec(work, seed, config.model.seq_len, a.max_epochs, config.k,
                                                          a.batch_size, a.resume)
            peer_s = time.perf_counter() - started
        peer = PeerTask(model, dataset, items)
        ranks["recbole_sasrec"] = score(peer, VARIANTS["sasrec"], batches, split, config, seed,
                                        users=user_vectors(peer, batches, split))
        ranks["most_popular"] = baseline_ranks("most_popular", batches, split, config, seed)
        _, length = batches.user_items.last(positives.user_idx[split.test], positives.ts[split.test], 1)
        compared = length > 0
        per_seed.append(({n: hit_ndcg(r[compared], config.k) for n, r in ranks.items()}, compared))
        row = {"seed": seed, "test_events": int(len(split.test)), "compared": int(compared.sum()),
               "coldsim_epochs": chosen.epochs, "recbole_epochs": peer_epochs, "recbole_fit_rows": n_fit,
               "coldsim_s": ours_s, "recbole_s": peer_s,
               **{f"{n}_hr": float(hit_ndcg(r[compared], config.k)[0].mean()) for n, r in ranks.items()},
               "coldsim_sasrec_hr_all_events": float(hit_ndcg(ranks["coldsim_sasrec"], config.k)[0].mean())}
        out["seeds"].append(row)
        print(json.dumps(row), flush=True)
    for m, metric in enumerate(("hr", "ndcg")):
        cells = event_bootstrap({n: [values[n][m] for values, _ in per_seed] for n in names}, "coldsim_sasrec", seed=0)
        out[metric] = {n: {key: float(cell[key]) for key in ("mean", "lo", "hi", "rel", "rel_lo", "rel_hi")}
                       for n, cell in cells.items()}
    compared = sum(r["compared"] for r in out["seeds"]) / sum(r["test_events"] for r in out["seeds"])
    print(f"\n{a.log}, {a.seeds} seed(s), all windows, test positives with an earlier positive ({compared:.1%} of them):")
    print(f"| model | HitRate@{config.k} [95% CI] | NDCG@{config.k} [95% CI] | HR vs coldsim sasrec [95% CI] |")
    print("|---|---|---|---|")
    for n in names:
        hr, nd = out["hr"][n], out["ndcg"][n]
        print(f"| {n} | {hr['mean']:.4f} [{hr['lo']:.4f}, {hr['hi']:.4f}] | {nd['mean']:.4f} [{nd['lo']:.4f}, "
              f"{nd['hi']:.4f}] | {hr['rel']:+.1%} [{hr['rel_lo']:+.1%}, {hr['rel_hi']:+.1%}] |")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
