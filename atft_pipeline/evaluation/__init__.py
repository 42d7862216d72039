"""Evaluation: cross-sectional metrics, the non-neural baselines and the evaluation report.

- ``metrics``: IC / RankIC / ICIR, long-short Sharpe (gross, net), the JPX competition score,
  hit rate, top-decile precision, ``evaluate`` (one row per model, split, horizon).
- ``baselines``: the LightGBM baseline and the momentum / reversal rule.
- ``report``: ``build_report`` — metrics table, markdown and PNG plots.

Submodules are imported explicitly (``from atft_pipeline.evaluation.metrics import evaluate``)
so that code needing only the metrics (training) does not load LightGBM or matplotlib.
"""
