"""Targets: entry at close t+1, exit at close t+1+h, trading days, null when unknown."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from atft_pipeline import calendar
from atft_pipeline.dataset.targets import compute_targets

DAYS = calendar.trading_days("2024-04-01", "2024-06-28")


def _bars(closes: dict[str, list[float | None]]) -> pl.LazyFrame:
    rows = [
        {"Date": d, "Code": code, "C": c, "AdjFactor": 1.0, "AdjC": c}
        for code, series in closes.items()
        for d, c in zip(DAYS, series)
    ]
    schema = {"Date": pl.Date, "Code": pl.String, "C": pl.Float64, "AdjFactor": pl.Float64}
    return pl.LazyFrame(rows, schema=schema | {"AdjC": pl.Float64})


def test_targets_match_a_brute_force_definition():
    rng = np.random.default_rng(0)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, size=len(DAYS))))
    series = prices.tolist()
    series[30] = None  # halted day
    out = compute_targets(_bars({"13010": series}), DAYS, DAYS).collect()
    assert out.columns == ["date", "code", "target_1d", "target_5d", "target_10d", "target_20d"]
    for t in range(len(DAYS)):
        row = out.row(t, named=True)
        assert row["date"] == DAYS[t]
        for h in (1, 5, 10, 20):
            entry = t + 1
            exit_ = t + 1 + h
            known = exit_ < len(DAYS) and series[entry] is not None and series[exit_] is not None
            value = row[f"target_{h}d"]
            if not known:
                assert value is None, (t, h)
            else:
                expected = series[exit_] / series[entry] - 1
                assert abs(value - expected) < 1e-6, (t, h)


def test_targets_span_holidays_by_trading_days():
    # 2024-05-02 (Thu): t+1 = 05-07 (Tue, after Golden Week), t+2 = 05-08.
    t = DAYS.index(dt.date(2024, 5, 2))
    series = [100.0] * len(DAYS)
    series[t + 1] = 200.0
    series[t + 2] = 220.0
    out = compute_targets(_bars({"13010": series}), DAYS, [DAYS[t]]).collect()
    assert out["target_1d"][0] == np.float32(220.0 / 200.0 - 1)


def test_missing_rows_do_not_shift_targets_onto_other_days():
    series = [float(100 + i) for i in range(len(DAYS))]
    bars = _bars({"13010": series}).filter(pl.col("Date") != DAYS[11])  # a missing row
    out = compute_targets(bars, DAYS, [DAYS[9], DAYS[10]]).collect()
    assert out["target_1d"][0] is None  # entry DAYS[10] known, exit DAYS[11] missing
    assert out["target_1d"][1] is None  # entry DAYS[11] missing
    assert abs(out["target_5d"][0] - (series[15] / series[10] - 1)) < 1e-6
