"""Metrics that cannot flatter: constant dates score 0, coverage, Newey–West standard errors,
the JPX score only as the competition defines it, and the prediction-health check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft_pipeline.evaluation import metrics
from atft_pipeline.evaluation.health import prediction_health
from atft_pipeline.evaluation.report import build_report

START = dt.date(2024, 1, 4)


def _frame(prediction: np.ndarray, target: np.ndarray, model: str, horizon: int = 1, split: str = "test"):
    n_dates, n_stocks = target.shape
    days = [START + dt.timedelta(days=i) for i in range(n_dates)]
    return pl.DataFrame(
        {
            "date": pl.Series([d for d in days for _ in range(n_stocks)], dtype=pl.Date),
            "code": [f"{1000 + i:04d}0" for _ in days for i in range(n_stocks)],
            "horizon": pl.Series([horizon] * target.size, dtype=pl.Int32),
            "prediction": prediction.ravel(),
            "target": target.ravel(),
            "split": [split] * target.size,
            "model": [model] * target.size,
        }
    )


def _collapsed_and_healthy(n_dates: int = 100, n_stocks: int = 50, varying: int = 6, seed: int = 0):
    """``collapsed``: the target itself on ``varying`` dates, one value per date otherwise;
    ``healthy``: target + noise every date."""
    rng = np.random.default_rng(seed)
    target = rng.normal(0, 0.02, (n_dates, n_stocks))
    collapsed = np.repeat(rng.normal(0, 0.01, (n_dates, 1)), n_stocks, axis=1)
    collapsed[:varying] = target[:varying]
    healthy = 0.2 * target + rng.normal(0, 0.02, target.shape)
    return pl.concat([_frame(collapsed, target, "lightgbm"), _frame(healthy, target, "ridge")])


def _scipy_daily_rank_ic(frame: pl.DataFrame) -> np.ndarray:
    """Per-date scipy Spearman in date order; an all-equal prediction scores 0."""
    out = []
    for (_,), part in sorted(frame.group_by("date"), key=lambda kv: kv[0][0]):
        p, t = part["prediction"].to_numpy(), part["target"].to_numpy()
        out.append(0.0 if np.all(p == p[0]) else stats.spearmanr(p, t)[0])
    return np.array(out)


def _newey_west_se(x: np.ndarray, lags: int) -> float:
    """SE of the mean: (γ0 + 2 Σ_{l≤L} (1 − l/(L+1)) γl) / n, γl = Σ d_t d_{t−l} / n."""
    n, d = len(x), x - x.mean()
    variance = d @ d / n
    for lag in range(1, lags + 1):
        variance += 2 * (1 - lag / (lags + 1)) * (d[lag:] @ d[:-lag]) / n
    return float(np.sqrt(variance / n))


def test_a_collapsed_model_scores_about_zero_with_full_coverage_and_fails_the_check(tmp_path: Path):
    frame = _collapsed_and_healthy()
    table = metrics.evaluate(frame)
    dead = table.filter(pl.col("model") == "lightgbm").row(0, named=True)
    # perfect ranking on 6 dates, nothing on 94: the mean over all 100 scored dates
    assert dead["n_dates"] == dead["n_split_dates"] == 100 and dead["coverage"] == 1.0
    assert dead["constant_dates"] == 94
    assert dead["rank_ic"] == pytest.approx(6 / 100, abs=1e-12)
    # the flattering number (mean over the varying dates only) would have been 1.0
    daily = metrics.daily_ic(frame.filter(pl.col("model") == "lightgbm"), "spearman")
    assert daily.filter(~pl.col("constant_prediction"))["ic"].mean() == pytest.approx(1.0)
    # constant dates hold no book: their spread is 0
    book = metrics.long_short_returns(frame.filter(pl.col("model") == "lightgbm"))
    assert book.height == 100 and (book["spread"][6:] == 0).all() and book["long"][6:].is_null().all()
    assert dead["long_short"] == pytest.approx(book["spread"].mean(), rel=1e-12)

    health = prediction_health(frame)
    assert health.failing == ["lightgbm"] and not health.passed
    row = health.table.filter(pl.col("model") == "lightgbm").row(0, named=True)
    assert row["constant_share"] == pytest.approx(0.94) and not row["healthy"]
    assert prediction_health(frame.filter(pl.col("model") == "ridge")).passed

    report = build_report(frame, tmp_path, "Collapsed")
    health_section = report.markdown[: report.markdown.index("## Metrics")]
    assert "| test | lightgbm | 1 | 100 / 100 | 100.0% | 94 (94.0%) | **FAILS** |" in health_section
    assert "Failing the constant-prediction check: `lightgbm`" in health_section
    line = next(l for l in report.markdown.splitlines() if l.startswith("| lightgbm | 1 |"))
    assert f"0.0600 ± {dead['rank_ic_se']:.4f}" in line


def test_rank_ic_and_its_newey_west_se_against_scipy_and_a_direct_formula():
    rng = np.random.default_rng(1)
    n_dates, n_stocks = 120, 40
    for h in (1, 5, 20):
        # overlapping h-day targets: sums of h consecutive daily shocks per stock
        shocks = rng.normal(0, 0.02, (n_dates + h, n_stocks))
        target = np.stack([shocks[t : t + h].sum(axis=0) for t in range(n_dates)])
        prediction = 0.3 * target + rng.normal(0, 0.02 * np.sqrt(h), target.shape)
        prediction[7] = 1.0  # one constant date
        frame = _frame(prediction, target, "m", horizon=h)
        daily = _scipy_daily_rank_ic(frame)
        summary = metrics.ic_summary(frame)
        assert summary["rank_ic"] == pytest.approx(daily.mean(), abs=1e-12)
        assert summary["rank_ic_se"] == pytest.approx(_newey_west_se(daily, h - 1), rel=1e-9)
        assert summary["constant_dates"] == 1 and summary["n_dates"] == n_dates
        row = metrics.evaluate(frame).row(0, named=True)
        assert row["rank_ic_se"] == pytest.approx(summary["rank_ic_se"], rel=1e-12)
        book = metrics.long_short_returns(frame, lag=h)["spread"].to_numpy()
        assert row["long_short_se"] == pytest.approx(_newey_west_se(book, h - 1), rel=1e-9)
    # at h = 1 the Newey–West SE is the plain std (ddof 0) / √n
    assert _newey_west_se(daily[:10], 0) == pytest.approx(daily[:10].std() / np.sqrt(10))


def test_coverage_counts_dates_a_model_skipped():
    rng = np.random.default_rng(2)
    target = rng.normal(0, 0.02, (30, 20))
    full = _frame(target + rng.normal(0, 0.02, target.shape), target, "full")
    gappy = _frame(target + rng.normal(0, 0.02, target.shape), target, "gappy").with_columns(
        pl.when(pl.col("date") >= START + dt.timedelta(days=24)).then(None).otherwise(pl.col("prediction"))
        .alias("prediction")
    )
    table = metrics.coverage(pl.concat([full, gappy]))
    got = {r["model"]: (r["n_dates"], r["n_split_dates"], r["coverage"]) for r in table.iter_rows(named=True)}
    assert got == {"full": (30, 30, 1.0), "gappy": (24, 30, 0.8)}


def test_jpx_score_is_only_the_competitions_at_one_day_with_400_stocks():
    rng = np.random.default_rng(3)
    target = rng.normal(0, 0.02, (20, 420))
    prediction = 0.1 * target + rng.normal(0, 0.02, target.shape)
    frame = pl.concat([_frame(prediction, target, "m", horizon=h) for h in (1, 5)])
    table = metrics.evaluate(frame)
    one, five = (table.filter(pl.col("horizon") == h).row(0, named=True) for h in (1, 5))
    assert one["jpx_score"] == pytest.approx(
        metrics.jpx_competition_score(frame.filter(pl.col("horizon") == 1)), rel=1e-12
    )
    assert five["jpx_score"] is None  # h > 1 is not the competition's metric
    assert five["jpx_scaled_score"] == pytest.approx(
        metrics.jpx_scaled_score(frame.filter(pl.col("horizon") == 5)), rel=1e-12
    )
    # one date below 400 stocks: no competition score at all
    thinned = frame.filter((pl.col("date") != START) | (pl.col("code") < "13000"))
    assert metrics.evaluate(thinned).filter(pl.col("horizon") == 1)["jpx_score"][0] is None


def test_a_live_split_without_targets_is_healthy_and_uncovered():
    rng = np.random.default_rng(4)
    target = rng.normal(0, 0.02, (5, 20))
    live = _frame(rng.normal(size=target.shape), target, "m", split="live").with_columns(
        pl.lit(None, dtype=pl.Float64).alias("target")
    )
    health = prediction_health(live)
    row = health.table.row(0, named=True)
    assert (row["n_dates"], row["n_split_dates"], row["coverage"]) == (0, 0, None)
    assert health.passed
