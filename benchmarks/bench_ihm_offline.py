"""Why does IHM sit where it does in its offline protocol? Learning curves and sensitivities against the baselines.

On one log (MovieLens-100K by default) and the protocol's own split, candidates and exclusions
(simulator/run/offline_ihm.py), this trains the ``ihm`` and ``transductive`` models and scores HitRate@10
(overall, tail, head, all windows together) after each of ``--epochs`` checkpoints, beside the protocol's
baselines (most popular, recently popular, item-kNN); then, at the default budget, one setting changed at a time:
learning rate, in-batch negatives (batch size), temperature, history length, history dropout, and the logQ
correction switched off. Prints one table and writes ``--json``.

Run: ``python benchmarks/bench_ihm_offline.py --log movielens:../shared/data/ml-100k`` (about 20 minutes on 2
cores); docs/models/ihm.md, "Why IHM is where it is", quotes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", default="movielens:../shared/data/ml-100k")
    p.add_argument("--epochs", default="1,2,5,10,20,40", help="learning-curve checkpoints (epochs, increasing)")
    p.add_argument("--max-eval", type=int, default=2000, help="test positives scored per window")
    p.add_argument("--skip-sensitivity", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from scenarios import get_scenario
    from simulator.core.schema import SECONDS_PER_DAY  # noqa: F401
    from simulator.run.logs import load_log
    from simulator.run.offline_ihm import VARIANTS, sizes_of
    from simulator.run.offline_ihm_steps import hit_ndcg, score, train, user_vectors
    from simulator.run.offline_ihm_baselines import BASELINES, baseline_ranks
    from simulator.run.offline_ihm_data import Batches, Chunks, ItemTable, Positives, Split
    from trainers.tasks.ihm_offline import RETRIEVAL_MODELS

    sc = get_scenario("ihm_decay")
    config = sc.ihm_offline.model_copy(update={"max_eval_per_window": a.max_eval})
    sc = sc.model_copy(update={"ihm_offline": config})
    log = load_log(a.log, sc)
    items = ItemTable.of(log)
    positives = Positives.of(log, items)
    split = Split.of(positives, len(items), config, sc.seed)
    tail = split.train_count[positives.item[split.test]] < config.tail_max

    def hr(rank: np.ndarray) -> dict[str, float]:
        hit, _ = hit_ndcg(rank, config.k)
        return {"overall": float(hit.mean()), "tail": float(hit[tail].mean()) if tail.any() else float("nan"),
                "head": float(hit[~tail].mean()) if (~tail).any() else float("nan")}

    def batches_for(cfg):
        return Batches.of(positives, items, cfg, split.train)

    out: dict = {"log": a.log, "test_events": int(len(split.test)), "tail_share": float(tail.mean()),
                 "baselines": {}, "curves": {}, "sensitivity": {}}
    batches = batches_for(config)
    for name in BASELINES:
        out["baselines"][name] = hr(baseline_ranks(name, batches, split, config, sc.seed))
    log_q_of = lambda: torch.from_numpy(np.log(np.maximum(split.train_count, 1) / max(len(split.train), 1)))  # noqa: E731
    checkpoints = [int(e) for e in a.epochs.split(",")]

    def run(model: str, scenario, cfg, epochs_list, no_logq: bool = False) -> list[dict]:
        b = batches_for(cfg)
        chunks = Chunks.of(positives, split.train, cfg.model.seq_len)
        log_q = log_q_of() * (0.0 if no_logq else 1.0)
        task = RETRIEVAL_MODELS[model](sizes_of(scenario, items.features_by_row["item_dense"].shape[1]), log_q)
        variant = VARIANTS["ihm" if model == "ihm" else model]
        rows, done, started = [], 0, time.perf_counter()
        for e in epochs_list:
            stats = train(task, b, chunks, e - done, cfg.batch_size, sc.seed + done)
            done = e
            rank = score(task, variant, b, split, cfg, sc.seed, users=user_vectors(task, b, split))
            rows.append({"epochs": e, "loss": stats["final_loss"], "train_s": time.perf_counter() - started, **hr(rank)})
            print(f"  {model} epochs {e}: loss {stats['final_loss']:.3f}, HR@10 " +
                  " / ".join(f"{rows[-1][s]:.4f}" for s in ("overall", "tail", "head")), flush=True)
        return rows

    for model in ("ihm", "transductive"):
        print(f"learning curve: {model}", flush=True)
        out["curves"][model] = run(model, sc, config, checkpoints)
    if not a.skip_sensitivity:
        default_epochs = [config.epochs]
        settings = {
            "lr 5e-4": {"lr": 5e-4}, "lr 8e-3": {"lr": 8e-3}, "batch 128 (more negatives)": {"batch_size": 128},
            "tau 0.05": {"model.tau": 0.05}, "tau 0.3": {"model.tau": 0.3}, "history 10": {"model.max_history": 10},
            "history dropout 0": {"model.history_dropout": 0.0}, "no logQ correction": {"no_logq": True},
        }
        for label, change in settings.items():
            cfg, no_logq = config, bool(change.pop("no_logq", False))
            model_changes = {k.split(".", 1)[1]: v for k, v in change.items() if k.startswith("model.")}
            cfg = cfg.model_copy(update={k: v for k, v in change.items() if not k.startswith("model.")}
                                 | ({"model": cfg.model.model_copy(update=model_changes)} if model_changes else {}))
            scenario = sc.model_copy(update={"ihm_offline": cfg})
            print(f"sensitivity: {label}", flush=True)
            out["sensitivity"][label] = {m: run(m, scenario, cfg, default_epochs, no_logq)[-1]
                                         for m in ("ihm", "transductive")}
    print(f"\n{a.log}: {out['test_events']:,} test positives ({out['tail_share']:.1%} on tail items), HitRate@10 "
          "overall / tail / head")
    for name, cell in out["baselines"].items():
        print(f"| {name} | " + " / ".join(f"{cell[s]:.4f}" for s in ("overall", "tail", "head")) + " |")
    for model, rows in out["curves"].items():
        for r in rows:
            print(f"| {model}, {r['epochs']} epochs | " + " / ".join(f"{r[s]:.4f}" for s in ("overall", "tail", "head"))
                  + f" | loss {r['loss']:.3f} | {r['train_s']:.0f} s |")
    for label, per_model in out["sensitivity"].items():
        for model, r in per_model.items():
            print(f"| {model}, {label} | " + " / ".join(f"{r[s]:.4f}" for s in ("overall", "tail", "head")) + " |")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
