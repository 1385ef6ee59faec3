"""Drift monitoring: signals against the champion's training reference, the retrain policy,
the nightly drift_metrics partition and HTML report (see docs/drift.md).

Modules: ``signals`` (pure signal functions), ``compute`` (all signals of one night from two
frames), ``policy`` (thresholds and the decision), ``monitor`` (lake, registry, cache, outputs),
``report`` (HTML), ``alerts`` (failure callback), ``commands`` (``fbk drift``), ``testing``
(helpers for tests and demos).
"""
