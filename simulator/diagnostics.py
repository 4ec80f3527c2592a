"""Strategy diagnostics over a run: what the arms report at the end of each day, summarised and arranged as tables
(their markdown: :mod:`simulator.run.report`).

The arms' daily rows (``SimulationResult.diagnostics``) hold, for DualRec arms, the UAC diagnostics
(``dualrec.hit_rate.<kind>`` with ``dualrec.hit_pairs.<kind>``, the ``dualrec.msize.<kind>.bin<lo>``
histogram of |M_u|, coverage, budget use) and the learner's per-day training statistics
(``train.dualrec.auc.<variant>.<task>``: progressive-validation AUC of each SA/EF ranker variant); for IHM
arms, the real-time serving figures (``ihm.ats_p50_min``, ``ihm.inferences``, ..., and the run-so-far
``ihm.run.ats_p50_min`` / ``ihm.run.ats_p95_min``).
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

VARIANT_LABELS = {"sa0_ef0": "w/o SA, w/o EF", "sa1_ef0": "with SA, w/o EF", "sa0_ef1": "w/o SA, with EF",
                  "sa1_ef1": "with SA, with EF"}


def _col(diag: pl.DataFrame, name: str) -> np.ndarray:
    return diag[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def summarise(diag: pl.DataFrame) -> dict[str, float]:
    """Run-level values: hit rates pooled over days (weighted by evaluated pairs), histogram bins summed over
    days, cumulative values (a ``.run.`` in the name: e.g. ``ihm.run.ats_p50_min``, the percentile over every
    sample so far) taken from the last day that reported them, everything else averaged over the days that
    reported it."""
    out: dict[str, float] = {}
    for c in diag.columns:
        if c == "day" or ".hit_pairs." in c:
            continue
        v = _col(diag, c)
        if ".hit_rate." in c:
            w = _col(diag, c.replace(".hit_rate.", ".hit_pairs."))
            ok = np.isfinite(v) & np.isfinite(w)
            if ok.any() and w[ok].sum() > 0:
                out[c] = float((v[ok] * w[ok]).sum() / w[ok].sum())
                out[c.replace(".hit_rate.", ".hit_pairs.")] = float(w[ok].sum())
        elif re.search(r"\.msize\..*\.bin\d+$", c):
            out[c] = float(np.nansum(v))
        elif ".run." in c:
            if np.isfinite(v).any():
                out[c] = float(v[np.isfinite(v)][-1])
        elif np.isfinite(v).any():
            out[c] = float(np.nanmean(v))
    return out


def auc_table(summary: dict[str, float], prefix: str = "train.dualrec.auc.") -> pl.DataFrame | None:
    """Paper Table 4 layout: one row per SA/EF variant, the mean progressive AUC of each task."""
    rows = {}
    for k, v in summary.items():
        if k.startswith(prefix):
            variant, task = k[len(prefix):].split(".", 1)
            rows.setdefault(variant, {})[task] = v
    if not rows:
        return None
    tasks = sorted({t for r in rows.values() for t in r}, key=lambda t: (t != "like", t))
    order = [v for v in VARIANT_LABELS if v in rows]
    return pl.DataFrame({"model": [VARIANT_LABELS[v] for v in order],
                         **{t: [rows[v].get(t, float("nan")) for v in order] for t in tasks}})


def msize_table(summary: dict[str, float], prefix: str = "dualrec.msize.") -> pl.DataFrame | None:
    """Paper Fig. 9 as a table: user-days per |M_u| bin, with the store and without it."""
    bins: dict[str, dict[int, float]] = {}
    for k, v in summary.items():
        m = re.fullmatch(re.escape(prefix) + r"(\w+)\.bin(\d+)", k)
        if m:
            bins.setdefault(m.group(1), {})[int(m.group(2))] = v
    if not bins:
        return None
    los = sorted({lo for b in bins.values() for lo in b})
    labels = [_bin_label(lo, los[i + 1] if i + 1 < len(los) else None) for i, lo in enumerate(los)]
    return pl.DataFrame({"|M_u|": labels, **{k: [bins[k].get(lo, 0.0) for lo in los] for k in bins}})


def _bin_label(lo: int, nxt: int | None) -> str:
    if nxt is None:
        return f"{lo}+"
    return str(lo) if nxt == lo + 1 else f"{lo}-{nxt - 1}"
