"""What the three papers claim, what coldsim measured for each claim, and the verdict rule.

A :class:`Claim` is one row of the fidelity report (``simulate fidelity``, :mod:`simulator.run.fidelity`): the
paper's number or statement, the key of the coldsim figure that tests it, and what would reproduce it. The
figures (:class:`Cell`: value and 95% interval) are read off the outcomes of the seed scenarios by the
``*_cells`` functions below. :func:`verdict` decides, from the interval alone and never from the paper's magnitude:

- ``+`` / ``-`` (the paper reports a significant gain / loss): *reproduced* when the interval excludes 0 on the
  paper's side, *not reproduced* when it excludes 0 on the other side, else *inconclusive*;
- ``0`` (the paper reports no material difference): *not reproduced* when the interval excludes 0, *reproduced*
  when it lies within +-:data:`NULL_MARGIN`, else *inconclusive*;
- ``>=`` (the paper reports no loss): *reproduced* when the interval's low end is above -:data:`NULL_MARGIN`, *not
  reproduced* when its high end is below it, else *inconclusive*.

A figure without an interval (one seed of a scalar such as an AUC) gets *no interval*; ``--replicates`` gives it a
t interval over seeds. Whether the paper's own number lies in coldsim's interval is reported beside the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats

NULL_MARGIN = 0.05  # relative: a difference within +-5% counts as "no material difference" / "no loss"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NO_INTERVAL, NOT_MEASURED = (
    "reproduced", "not reproduced", "inconclusive", "no interval", "not measured")
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NO_INTERVAL, NOT_MEASURED)

Expect = Literal["+", "-", "0", ">="]
Section = Literal["next_user_offline", "ihm_offline", "ab", "ladder"]


@dataclass(frozen=True)
class Cell:
    """A coldsim figure: its value and 95% interval (None: no interval), in the unit the claim reads."""

    value: float
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Claim:
    """One row of the report: the paper's ``table`` and ``row``, its number (``paper``, None where the paper states it
    in words or a figure) and text, the expected direction, the coldsim figure ``key`` of ``section`` and the unit."""

    table: str
    row: str
    paper_text: str
    expect: Expect
    section: Section
    key: str
    paper: float | None = None
    unit: Literal["rel", "pp", "abs"] = "rel"  # relative difference, percentage points, an absolute figure


def verdict(claim: Claim, cell: Cell | None) -> str:
    """The verdict rule of the module docstring."""
    if cell is None or not math.isfinite(cell.value):
        return NOT_MEASURED
    if cell.lo is None or cell.hi is None or not (math.isfinite(cell.lo) and math.isfinite(cell.hi)):
        return NO_INTERVAL
    lo, hi, m = cell.lo, cell.hi, NULL_MARGIN
    if claim.expect in ("+", "-"):
        side = 1.0 if claim.expect == "+" else -1.0
        lo_s, hi_s = sorted((side * lo, side * hi))
        return REPRODUCED if lo_s > 0 else NOT_REPRODUCED if hi_s < 0 else INCONCLUSIVE
    if claim.expect == "0":
        return NOT_REPRODUCED if lo > 0 or hi < 0 else REPRODUCED if -m <= lo and hi <= m else INCONCLUSIVE
    return REPRODUCED if lo > -m else NOT_REPRODUCED if hi < -m else INCONCLUSIVE  # ">="


def paper_in_interval(claim: Claim, cell: Cell | None) -> str:
    """'yes' / 'no' whether the paper's number lies in coldsim's interval; '-' where either is missing."""
    if claim.paper is None or cell is None or cell.lo is None or cell.hi is None:
        return "-"
    return "yes" if cell.lo <= claim.paper <= cell.hi else "no"


def pooled(per_seed: list[Cell]) -> Cell:
    """One seed's cell as it is; several seeds: the mean with a 95% t interval over the seeds' values (as the
    pooled A/B table, :func:`simulator.run.replicates.aggregate_lifts`)."""
    values = np.array([c.value for c in per_seed if math.isfinite(c.value)])
    if len(per_seed) == 1:
        return per_seed[0]
    if len(values) < 2:
        return Cell(float(values.mean()) if len(values) else float("nan"))
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return Cell(float(values.mean()), float(values.mean() - half), float(values.mean() + half))


# ---------------------------------------------------------------------------------------------- the claims
_NU = "Next-User Table 1 (offline, Recall@K)"
_NU_AB = "Next-User Table 2 (online A/B, next_user over base)"
_IHM = "IHM Table 1 (offline, window 1, ihm over transductive)"
_IHM_DECAY = "IHM Fig. 3 (decay without retraining, HitRate@10 share lost per window)"
_IHM_AB = "IHM online (Fig. 4 / Table 3, ihm over base)"
_DR_LADDER = "DualRec Table 2 (each version over the previous)"
_DR = "DualRec online (dualrec_v5 over base, Fig. 7)"
_DR_UAC = "DualRec UAC (5.3) and coverage (Fig. 8)"
_DR_T3 = "DualRec Table 3 (exposure ratio of each creator-side retrieval, v5)"
_DR_AUC = "DualRec Table 4 (creator-side ranker AUC over w/o SA, w/o EF)"

_NU_ABLATIONS = [("lookalike", "Traditional lookalike", -0.2720, -0.2211),
                 ("mask_prefix", "Mask prefix prompt", -0.1415, -0.1130),
                 ("half_seq", "Half the sequence length", -0.0433, -0.0198),
                 ("no_cls", "w/o [CLS] token", -0.0003, -0.0013),
                 ("no_causal", "w/o causal attention", -0.0052, -0.0022)]

CLAIMS: list[Claim] = [
    Claim(_NU, "full model above the most-active-users floor, Recall@20", "(no floor in the paper; 0.4100 on Douyin)",
          "+", "next_user_offline", "nu.above.most_active.recall_20", unit="abs"),
    Claim(_NU, "full model above the user-kNN floor, Recall@20", "(no floor in the paper)", "+",
          "next_user_offline", "nu.above.user_knn.recall_20", unit="abs"),
    *[Claim(_NU, f"{label}, Recall@{k}", f"{paper:+.2%}", "0" if abs(paper) < 0.01 else "-", "next_user_offline",
            f"nu.{variant}.recall_{k}_rel", paper)
      for variant, label, p20, p50 in _NU_ABLATIONS for k, paper in ((20, p20), (50, p50))],
    Claim(_NU_AB, "cold-item interactions", "+7.05%", "+", "ab", "ab.next_user.cold_interactions", 0.0705),
    Claim(_NU_AB, "publications", "+0.114%", "+", "ab", "ab.next_user.publications", 0.00114),
    Claim(_NU_AB, "daily active users", "+0.014%", "+", "ab", "ab.next_user.dau", 0.000142),
    *[Claim(_IHM, f"ihm above the {label} baseline, HitRate@10 {subset}", "(no such baseline in the paper)", "+",
            "ihm_offline", f"ihm.above.{name}.{subset}", unit="abs")
      for name, label, subset in (("most_popular", "most-popular", "overall"), ("item_knn", "item-kNN", "overall"),
                                  ("most_popular", "most-popular", "tail"))],
    Claim(_IHM, "tail items, HitRate@10", "+22.2% (IHM-SASRec over SASRec, ML-1M)", "+", "ihm_offline",
          "ihm.ihm.tail_hr10_rel", 0.2220),
    Claim(_IHM, "head items, HitRate@10 (no loss)", "-6.0% (IHM-SASRec, ML-1M); text: 'without degrading'", ">=",
          "ihm_offline", "ihm.ihm.head_hr10_rel", -0.0599),
    Claim(_IHM_DECAY, "ihm, head items: stable", "stable (Fig. 3)", "0", "ihm_offline", "ihm.decay.ihm.head"),
    Claim(_IHM_DECAY, "ihm, tail items: stable", "stable (Fig. 3)", "0", "ihm_offline", "ihm.decay.ihm.tail"),
    Claim(_IHM_DECAY, "transductive, head items: decays", "decays (Fig. 3)", "-", "ihm_offline",
          "ihm.decay.transductive.head"),
    Claim(_IHM_DECAY, "sasrec, head items: decays", "decays (Fig. 3)", "-", "ihm_offline", "ihm.decay.sasrec.head"),
    Claim(_IHM_AB, "new items' reach (ExpoReach, lowest K)", "+176% impressions of media 0-24h old (Table 3)", "+",
          "ab", "ab.ihm.expo_reach_low", 1.76),
    Claim(_IHM_AB, "cold-item interactions", "more engagement on fresh content (Fig. 4)", "+", "ab",
          "ab.ihm.cold_interactions"),
    Claim(_DR, "daily active creators", "+2.9% after 21 days", "+", "ab", "ab.dualrec_v5.dac", 0.029),
    Claim(_DR, "DAC lift rises over the days (slope per day, pp)", "gradually improves (Fig. 7)", "+", "ab",
          "ab.dualrec_v5.dac_trend", unit="pp"),
    Claim(_DR, "new items' reach (ExpoReach, lowest K)", "v1 over base +11.7% (ExpoReach-1K), every version up", "+",
          "ab", "ab.dualrec_v5.expo_reach_low"),
    *[Claim(_DR_LADDER, f"{step}, ExpoReach ({which} K)", f"{paper:+.2%} (ExpoReach-{paper_k})", "+", "ladder",
            f"ladder.{i}.{which}", paper)
      for i, (step, p1k, p10k) in enumerate([("v1 over base", 0.117, 0.084), ("v2 over v1", 0.049, 0.054),
                                             ("v3 over v2", 0.032, 0.048), ("v4 over v3", 0.0059, 0.0078),
                                             ("v5 over v4", 0.037, 0.035)])
      for which, paper, paper_k in (("low", p1k, "1K"), ("high", p10k, "10K"))],
    Claim(_DR_UAC, "hit rate: activity prediction over none (pp)", "82% vs 49%: +33 pp", "+", "ladder",
          "ladder.hit_rate_gain", 0.33, unit="pp"),
    Claim(_DR_UAC, "new-item coverage: creator side over user-side two-tower (pp)", "creator side far higher (Fig. 8)",
          "+", "ladder", "ladder.coverage_gain", unit="pp"),
    *[Claim(_DR_T3, f"{label} share of matched exposures over user-sim's (pp)", f"{paper:.1%} vs 2.79%: "
            f"{100 * (paper - 0.0279):+.1f} pp", "+", "ladder", f"ladder.ratio.{name}", paper - 0.0279, unit="pp")
      for name, label, paper in (("two_tower", "two-tower", 0.587), ("item_sim", "item-similarity", 0.385))],
    *[Claim(_DR_AUC, f"{label}, AUC of like (pp)", f"{100 * paper:+.1f} pp", "+", "ladder", f"ladder.auc.{variant}", paper,
            unit="pp")
      for variant, label, paper in (("sa0_ef1", "w/o SA, with EF", 0.007), ("sa1_ef0", "with SA, w/o EF", 0.010),
                                    ("sa1_ef1", "with SA, with EF", 0.012))],
]
"""Every row of the report, in its order."""


# ---------------------------------------------------------------------------------------------- coldsim's figures
def next_user_cells(table: pl.DataFrame, meta: dict, control: str) -> dict[str, Cell]:
    """Table 1's relative differences and the full model's margin over the floors (the difference of the intervals'
    ends: conservative, the floors being scored on the same events)."""
    cells: dict[str, Cell] = {}
    for row in table.iter_rows(named=True):
        for k in (20, 50):
            if row["variant"] != control and f"recall_{k}_rel" in row:
                cells[f"nu.{row['variant']}.recall_{k}_rel"] = Cell(row[f"recall_{k}_rel"], row[f"recall_{k}_rel_lo"],
                                                                     row[f"recall_{k}_rel_hi"])
    full = table.filter(pl.col("variant") == control).row(0, named=True)
    for name, floor in meta.get("floors", {}).items():
        if "recall_20_lo" in floor:
            cells[f"nu.above.{name}.recall_20"] = Cell(full["recall_20"] - floor["recall_20"],
                                                       full["recall_20_lo"] - floor["recall_20_hi"],
                                                       full["recall_20_hi"] - floor["recall_20_lo"])
    return cells


def ihm_cells(table: pl.DataFrame, decay: pl.DataFrame, k: int) -> dict[str, Cell]:
    """IHM Table 1's relative differences from the control (HitRate@``k``) and the decay slopes (share of the mean
    HitRate lost per window), with their bootstrap intervals."""
    cells: dict[str, Cell] = {}
    for row in table.iter_rows(named=True):
        for subset in ("overall", "tail", "head"):
            m = f"{subset}_hr{k}"
            cells[f"ihm.{row['variant']}.{m}_rel"] = Cell(row[f"{m}_rel"], row.get(f"{m}_rel_lo"),
                                                         row.get(f"{m}_rel_hi"))
    rows = {row["variant"]: row for row in table.iter_rows(named=True)}
    for name in ("most_popular", "recent_popular", "item_knn"):  # the baselines of the protocol, when it ran them
        if "ihm" in rows and name in rows:
            for subset in ("overall", "tail", "head"):
                m, a, b = f"{subset}_hr{k}", rows["ihm"], rows[name]
                if f"{m}_lo" in a:  # conservative: the difference of the intervals' ends
                    cells[f"ihm.above.{name}.{subset}"] = Cell(a[m] - b[m], a[f"{m}_lo"] - b[f"{m}_hi"],
                                                               a[f"{m}_hi"] - b[f"{m}_lo"])
    for row in decay.iter_rows(named=True):
        cells[f"ihm.decay.{row['variant']}.{row['subset']}"] = Cell(row["rel_slope"], row.get("rel_slope_lo"),
                                                                     row.get("rel_slope_hi"))
    return cells


def _lift(comparison: pl.DataFrame, metric: str, arm: str) -> Cell | None:
    rows = comparison.filter((pl.col("metric") == metric) & (pl.col("arm") == arm))
    if rows.height == 0:
        return None
    r = rows.row(0, named=True)
    return Cell(r["lift"], r["ci_low"], r["ci_high"])


def _expo_metrics(expo_k: dict[str, int]) -> tuple[str, str] | None:
    """The run's ExpoReach metrics with the lowest and the highest K (the paper's -1K and -10K)."""
    if not expo_k:
        return None
    ordered = sorted(expo_k, key=lambda name: expo_k[name])
    return ordered[0], ordered[-1]


def dac_trend(daily: dict[str, pl.DataFrame], arm: str, control: str) -> float:
    """Least-squares slope (per day) of the arm's daily DAC lift over control; NaN with fewer than two days."""
    a, c = daily[arm]["dac"].to_numpy(), daily[control]["dac"].to_numpy()
    ok = c > 0
    if ok.sum() < 2:
        return float("nan")
    days = np.arange(len(a))[ok]
    return float(np.polyfit(days, a[ok] / c[ok] - 1.0, 1)[0])


def ab_cells(result) -> dict[str, Cell]:
    """The A/B figures of one ``coldstart_ab`` run (:class:`~simulator.run.results.SimulationResult`): lifts over
    control with their bootstrap intervals, and DualRec's DAC trend (no interval within one run)."""
    cells: dict[str, Cell] = {}
    control, comparison = result.scenario.control, result.comparison
    expo = _expo_metrics(result.expo_k)
    for arm in comparison["arm"].unique().to_list():
        for metric in ("cold_interactions", "publications", "dau", "dac"):
            cell = _lift(comparison, metric, arm)
            if cell is not None:
                cells[f"ab.{arm}.{metric}"] = cell
        if expo is not None:
            for which, metric in zip(("low", "high"), expo):
                cell = _lift(comparison, metric, arm)
                if cell is not None:
                    cells[f"ab.{arm}.expo_reach_{which}"] = cell
        if "dac" in result.daily.get(arm, pl.DataFrame()).columns:
            cells[f"ab.{arm}.dac_trend"] = Cell(dac_trend(result.daily, arm, control))
    return cells


def ladder_cells(result) -> dict[str, Cell]:
    """The ``dualrec_ladder`` figures of one run: each step's ExpoReach lift (lowest and highest K) with its
    interval; from the last version's diagnostics the UAC hit-rate gain (normal interval of a difference of two
    proportions over the matched pairs), the retrievals' shares of the matched exposures (Table 3; multinomial
    intervals), the creator- over user-side coverage and the AUC gains (no interval)."""
    from simulator.diagnostics import summarise

    cells: dict[str, Cell] = {}
    ladder, expo = result.ladder, _expo_metrics(result.expo_k)
    steps = result.scenario.ladder or []
    if ladder is not None and expo is not None:
        for i, arm in enumerate(steps[1:]):
            for which, metric in zip(("low", "high"), expo):
                cell = _lift(ladder, metric, arm)
                if cell is not None:
                    cells[f"ladder.{i}.{which}"] = cell
    last = next((arm for arm in reversed(steps) if arm in result.diagnostics), None)
    s = summarise(result.diagnostics[last]) if last is not None else {}
    if "dualrec.hit_rate.actual" in s and "dualrec.hit_rate.no_activity" in s:
        p1, p0 = s["dualrec.hit_rate.actual"], s["dualrec.hit_rate.no_activity"]
        n1, n0 = s.get("dualrec.hit_pairs.actual", 0.0), s.get("dualrec.hit_pairs.no_activity", 0.0)
        if n1 > 0 and n0 > 0:
            a1, a0 = (p1 * n1 + 1) / (n1 + 2), (p0 * n0 + 1) / (n0 + 2)  # Agresti-Caffo: never a zero-width interval
            half = 1.96 * math.sqrt(a1 * (1 - a1) / (n1 + 2) + a0 * (1 - a0) / (n0 + 2))
            cells["ladder.hit_rate_gain"] = _clipped(p1 - p0, half)
    diag = result.diagnostics[last] if last is not None else pl.DataFrame()
    counts = {name: float(diag[f"dualrec.served_by.{name}"].fill_null(0).sum())
              for name in ("two_tower", "item_sim", "user_sim") if f"dualrec.served_by.{name}" in diag.columns}
    n = sum(counts.values())
    if n > 0 and "user_sim" in counts:  # Table 3: shares of the matched exposures, against user-sim's
        k = len(counts)
        p_user, a_user = counts["user_sim"] / n, (counts["user_sim"] + 1) / (n + k)
        for name in ("two_tower", "item_sim"):
            p_a, a_a = counts.get(name, 0.0) / n, (counts.get(name, 0.0) + 1) / (n + k)
            # a difference of two multinomial shares; its variance from pseudo-counts (never a zero-width interval)
            half = 1.96 * math.sqrt(max(a_a + a_user - (a_a - a_user) ** 2, 0.0) / (n + k))
            cells[f"ladder.ratio.{name}"] = _clipped(p_a - p_user, half)
    if "dualrec.coverage.creator_side.actual" in s and "dualrec.coverage.user_side.two_tower" in s:
        cells["ladder.coverage_gain"] = Cell(s["dualrec.coverage.creator_side.actual"]
                                             - s["dualrec.coverage.user_side.two_tower"])
    base = s.get("train.dualrec.auc.sa0_ef0.like")
    for variant in ("sa0_ef1", "sa1_ef0", "sa1_ef1"):
        value = s.get(f"train.dualrec.auc.{variant}.like")
        if base is not None and value is not None:
            cells[f"ladder.auc.{variant}"] = Cell(value - base)
    return cells


def _clipped(value: float, half: float) -> Cell:
    """``value +- half`` within [-1, 1] (a difference of shares)."""
    return Cell(value, max(value - half, -1.0), min(value + half, 1.0))


def pool_runs(per_run: list[dict[str, Cell]]) -> dict[str, Cell]:
    """Each key's cells over seed replicates (:func:`pooled`); a key missing in some run keeps the runs that have it."""
    keys = dict.fromkeys(k for cells in per_run for k in cells)
    return {k: pooled([cells[k] for cells in per_run if k in cells]) for k in keys}
