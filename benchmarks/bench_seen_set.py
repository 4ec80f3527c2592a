"""The seen-pair set of ``FeatureStore``: adding a round's exposures and querying candidates, old vs new.

A synthetic stream shaped like one arm of a default run: ``--ticks`` x ``--rounds-per-tick`` rounds, each
with ``--users-per-round`` distinct users (of ``--users``) requesting, a catalogue growing linearly from
``--items-start`` to ``--items-end`` items with Zipf-like popularity, ``--candidates`` candidate items per
user (what ``ArmPolicy._filter`` asks ``FeatureStore.is_seen`` about) and ``--slate`` exposures per user
(the first unseen candidates, ~25,000 per round by default), which are then added to the set (what
``FeatureStore.record`` does). Two implementations replay the same stream:

  * **old**: one sorted array, re-merged with ``np.union1d`` every round (the store before issue 13 item 7:
    each round de-duplicates everything seen so far, with numpy 2.x's hash-table ``unique`` and a sort: quadratic
    in the run), copied here as the reference;
  * **new**: ``serving.features.SortedRuns``, disjoint sorted runs merged LSM-style (O(n log n) in all).

Every query's answers must be identical (checked each round). Prints the time per round of add and query for
both, early (the first ``--window`` rounds) and late (the last ``--window``) in the stream, the totals and
the old / new ratios, then the contention check.

Run: ``python benchmarks/bench_seen_set.py`` (over 10 minutes on 2 cores, nearly all of it the old one);
``--rounds-per-tick 2`` (112 rounds, ~3 minutes) for a shorter stream.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import ForeignLoad, fmt_table  # noqa: E402

from serving.features import FeatureStore, SortedRuns  # noqa: E402


class ReferenceSeen:
    """The old seen set: one sorted array of keys, ``np.union1d`` with each round's keys."""

    def __init__(self):
        self.seen = np.zeros(0, np.int64)

    def add(self, keys: np.ndarray) -> None:
        self.seen = np.union1d(self.seen, keys)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        if len(self.seen) == 0:
            return np.zeros(keys.shape, bool)
        pos = np.minimum(np.searchsorted(self.seen, keys), len(self.seen) - 1)
        return self.seen[pos] == keys


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ticks", type=int, default=56)
    p.add_argument("--rounds-per-tick", type=int, default=4)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--users-per-round", type=int, default=2_500)
    p.add_argument("--items-start", type=int, default=5_000)
    p.add_argument("--items-end", type=int, default=30_000)
    p.add_argument("--candidates", type=int, default=150)
    p.add_argument("--slate", type=int, default=10)
    p.add_argument("--merge-factor", type=float, default=SortedRuns().merge_factor,
                   help="SortedRuns merge factor (the store's default unless given)")
    p.add_argument("--window", type=int, default=10, help="rounds averaged for the early and late figures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=str, default=None)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    n_rounds = args.ticks * args.rounds_per_tick
    old, new = ReferenceSeen(), SortedRuns(merge_factor=args.merge_factor)
    times = {name: np.zeros(n_rounds) for name in ("old_add", "old_query", "new_add", "new_query")}
    n_seen_answers = 0
    with ForeignLoad() as load:
        for round_ in range(n_rounds):
            n_items = args.items_start + (args.items_end - args.items_start) * round_ // max(n_rounds - 1, 1)
            users = rng.choice(args.users, args.users_per_round, replace=False)
            # popular items more often: item row ~ n_items * u^2 (rows are not sorted by popularity in a run,
            # but the skew gives the repeated candidates that make the filter matter)
            cand = (n_items * rng.random((len(users), args.candidates)) ** 2).astype(np.int64)
            keys = FeatureStore.pair_keys(np.broadcast_to(users[:, None], cand.shape), cand)  # (n, C)

            t = time.perf_counter()
            seen_old = old.contains(keys)
            times["old_query"][round_] = time.perf_counter() - t
            t = time.perf_counter()
            seen_new = new.contains(keys)
            times["new_query"][round_] = time.perf_counter() - t
            if not np.array_equal(seen_old, seen_new):
                raise AssertionError(f"round {round_}: the two sets answer differently")
            n_seen_answers += int(seen_new.sum())

            # exposures: each user's first ``slate`` unseen candidates (duplicates within a user's row are kept,
            # as the world may show a pair twice across arms' rounds; the set must absorb them)
            rank = np.cumsum(~seen_new, 1)
            shown = keys[~seen_new & (rank <= args.slate)]

            t = time.perf_counter()
            old.add(shown)
            times["old_add"][round_] = time.perf_counter() - t
            t = time.perf_counter()
            new.add(shown)
            times["new_add"][round_] = time.perf_counter() - t
            if (round_ + 1) % 20 == 0:
                print(f"round {round_ + 1}/{n_rounds}: {len(new):,} pairs; last round ms: old add "
                      f"{1e3 * times['old_add'][round_]:.0f}, new add {1e3 * times['new_add'][round_]:.0f}",
                      file=sys.stderr, flush=True)
        if not np.array_equal(old.seen, new.keys()):
            raise AssertionError("the two sets hold different keys at the end")

    w = min(args.window, n_rounds)
    early, late = slice(0, w), slice(n_rounds - w, n_rounds)
    ms = lambda name, part: 1e3 * float(times[name][part].mean())  # noqa: E731
    rows, out = [], {}
    for label, part in (("early", early), ("late", late), ("whole run", slice(None))):
        old_round = ms("old_add", part) + ms("old_query", part)
        new_round = ms("new_add", part) + ms("new_query", part)
        rows.append([label, ms("old_add", part), ms("new_add", part), ms("old_query", part), ms("new_query", part),
                     old_round, new_round, old_round / new_round])
        out[label] = dict(zip(("old_add_ms", "new_add_ms", "old_query_ms", "new_query_ms", "old_round_ms",
                               "new_round_ms", "ratio"), rows[-1][1:]))
    total_old = times["old_add"].sum() + times["old_query"].sum()
    total_new = times["new_add"].sum() + times["new_query"].sum()
    print(f"{n_rounds} rounds, {len(new):,} seen pairs at the end ({len(new.runs)} runs: "
          f"{', '.join(f'{len(r):,}' for r in new.runs)}), {n_seen_answers:,} candidates found seen; answers identical")
    print(f"ms per round (early / late = mean of the first / last {w} rounds):")
    print(fmt_table(rows, ["rounds", "old add", "new add", "old query", "new query", "old round", "new round",
                           "old / new"]))
    print(f"whole stream: old {total_old:.1f}s, new {total_new:.1f}s, old / new {total_old / total_new:.1f}x")
    print(load.summary())
    if args.json:
        out.update(total_old_s=total_old, total_new_s=total_new, n_rounds=n_rounds, n_keys=len(new),
                   contention=load.as_dict(), args=vars(args))
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
