"""Per-arm metrics of a co-diverted A/B run (ExpoReach-K, DAC, ...) and bootstrap lifts with CIs.

Pure numpy/polars (plus scipy.sparse for the two-way bootstrap): no Ray or MLflow here. Reads only
an arm's exposures, uploads and visits (:mod:`simulator.core.schema`) plus its bucket of creators and
users and, for CUPED, per-creator pre-treatment covariates. Definitions, the ExpoReach window and
thresholds, the normalisation across arms of different shares, the bootstraps and CUPED are written
up in ``docs/metrics.md``. One module per concept:

- :mod:`~simulator.metrics.definitions`: metric names, ExpoReach thresholds, ``ArmData``;
- :mod:`~simulator.metrics.expo_reach`: exposures in time order, items reaching K, derived K (``resolve_expo_k``);
- :mod:`~simulator.metrics.daily`: ``daily_metrics``, ``overall_metrics``, ``early_exposure``, ``exposures_by_age``;
- :mod:`~simulator.metrics.units`: per-unit (creator, user, cell, item) tables, ``normalised_metrics``;
- :mod:`~simulator.metrics.bootstrap`: Poisson-bootstrap replicates and lift CIs;
- :mod:`~simulator.metrics.cuped`: CUPED's covariate adjustment;
- :mod:`~simulator.metrics.comparison`: ``compare_arms`` and ``ladder_comparison``.
"""
