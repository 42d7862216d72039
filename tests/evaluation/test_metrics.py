"""Metrics against independent implementations: scipy, empyrical, the published JPX formula."""

from __future__ import annotations

import datetime as dt
import math

import empyrical
import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats

from atft_pipeline.evaluation import metrics

START = dt.date(2024, 1, 4)


def _dates(n: int) -> list[dt.date]:
    return [START + dt.timedelta(days=i) for i in range(n)]


def _panel(
    n_dates: int, n_stocks: int, signal: float, seed: int, model: str = "m", horizon: int = 1
) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    target = rng.normal(0.0, 0.02, (n_dates, n_stocks))
    prediction = signal * target + rng.normal(0.0, 0.02, (n_dates, n_stocks))
    return pl.DataFrame(
        {
            "date": pl.Series([d for d in _dates(n_dates) for _ in range(n_stocks)], dtype=pl.Date),
            "code": [f"{1000 + i:04d}0" for _ in range(n_dates) for i in range(n_stocks)],
            "horizon": pl.Series([horizon] * (n_dates * n_stocks), dtype=pl.Int32),
            "prediction": prediction.ravel(),
            "target": target.ravel(),
            "split": ["val"] * (n_dates * n_stocks),
            "model": [model] * (n_dates * n_stocks),
        }
    )


@pytest.fixture
def messy() -> pl.DataFrame:
    """Ties (integer predictions), nulls in both columns, a tiny date and a constant date."""
    rng = np.random.default_rng(7)
    frames = []
    for i, day in enumerate(_dates(12)):
        n = 2 if i == 3 else 30
        prediction = rng.integers(0, 5, n).astype(float)
        target = np.round(rng.normal(0, 0.02, n), 3)
        if i == 5:
            prediction[:] = 1.0  # constant prediction: no correlation that day
        frame = pl.DataFrame(
            {
                "date": pl.Series([day] * n, dtype=pl.Date),
                "code": [f"{1000 + j:04d}0" for j in range(n)],
                "horizon": [1] * n,
                "prediction": prediction,
                "target": target,
            }
        ).with_columns(
            pl.when(pl.int_range(pl.len()) % 7 == 3)
            .then(None)
            .otherwise(pl.col("prediction"))
            .alias("prediction"),
            pl.when(pl.int_range(pl.len()) % 5 == 1)
            .then(None)
            .otherwise(pl.col("target"))
            .alias("target"),
        )
        frames.append(frame)
    return pl.concat(frames)


def _scipy_daily(frame: pl.DataFrame, fn) -> dict[dt.date, float]:
    """Per-date scipy correlations; a date with all-equal predictions scores 0."""
    out = {}
    for (day,), part in frame.drop_nulls(["prediction", "target"]).group_by("date"):
        if part.height >= 3 and part["target"].n_unique() > 1:
            constant = part["prediction"].n_unique() == 1
            out[day] = 0.0 if constant else fn(part["prediction"].to_numpy(), part["target"].to_numpy())[0]
    return out


@pytest.mark.parametrize("method,fn", [("pearson", stats.pearsonr), ("spearman", stats.spearmanr)])
def test_daily_ic_equals_scipy_per_date(messy: pl.DataFrame, method: str, fn) -> None:
    expected = _scipy_daily(messy, fn)
    got = metrics.daily_ic(messy, method=method)
    assert set(got["date"].to_list()) == set(expected)
    assert len(expected) == 11  # the 2-stock date is skipped, the constant date scores 0
    for day, ic, constant in got.iter_rows():
        assert ic == pytest.approx(expected[day], abs=1e-12)
        assert constant == (day == _dates(12)[5])


def test_ic_summary_means_and_icir_by_hand(messy: pl.DataFrame) -> None:
    ic = np.array(list(_scipy_daily(messy, stats.pearsonr).values()))
    rank_ic = np.array(list(_scipy_daily(messy, stats.spearmanr).values()))
    summary = metrics.ic_summary(messy)
    assert summary["n_dates"] == 11 and summary["constant_dates"] == 1
    assert summary["n_split_dates"] == 11 and summary["coverage"] == 1.0
    assert summary["ic"] == pytest.approx(ic.mean(), abs=1e-12)
    assert summary["rank_ic"] == pytest.approx(rank_ic.mean(), abs=1e-12)
    assert summary["icir"] == pytest.approx(ic.mean() / ic.std(ddof=1), abs=1e-10)
    assert summary["rank_icir"] == pytest.approx(rank_ic.mean() / rank_ic.std(ddof=1), abs=1e-10)


def test_mean_daily_rank_ic_equals_scipy_and_ic_summary_in_any_row_order(messy: pl.DataFrame) -> None:
    expected = np.mean(list(_scipy_daily(messy, stats.spearmanr).values()))
    shuffled = messy.sample(fraction=1.0, shuffle=True, seed=3)
    score = metrics.MeanDailyRankIC(
        shuffled["date"].to_numpy(), shuffled["target"].cast(pl.Float64).to_numpy()
    )
    got = score(shuffled["prediction"].cast(pl.Float64).to_numpy())
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(metrics.ic_summary(messy)["rank_ic"], abs=1e-12)
    # Another prediction vector against the same target: the object holds no state per call.
    reversed_prediction = -shuffled["prediction"].cast(pl.Float64).to_numpy()
    assert score(reversed_prediction) == pytest.approx(-expected, abs=1e-12)
    # Every prediction finite (the cached-target path; the ones above drop rows and re-rank).
    filled = shuffled.with_columns(pl.col("prediction").fill_null(2.0))
    assert score(filled["prediction"].cast(pl.Float64).to_numpy()) == pytest.approx(
        metrics.ic_summary(filled)["rank_ic"], abs=1e-12
    )
    with pytest.raises(ValueError, match="predictions for"):
        score(np.zeros(3))


def test_per_date_mean_differs_from_pooled_correlation() -> None:
    # Within each date the ranking is exactly backwards, but the second date's levels are
    # higher on both sides: pooled across dates the correlation looks strongly positive.
    frame = pl.DataFrame(
        {
            "date": [START] * 3 + [START + dt.timedelta(days=1)] * 3,
            "code": ["10000", "10010", "10020"] * 2,
            "horizon": [1] * 6,
            "prediction": [1.0, 2.0, 3.0, 11.0, 12.0, 13.0],
            "target": [0.03, 0.02, 0.01, 0.13, 0.12, 0.11],
        }
    )
    pooled = stats.pearsonr(frame["prediction"].to_numpy(), frame["target"].to_numpy())[0]
    summary = metrics.ic_summary(frame)
    assert pooled > 0.9
    assert summary["ic"] == pytest.approx(-1.0)
    assert summary["rank_ic"] == pytest.approx(-1.0)
    assert summary["icir"] is None  # the daily ICs have no dispersion


def test_long_short_legs_and_turnover_by_hand() -> None:
    codes = [f"{1000 + j:04d}0" for j in range(10)]
    day1, day2, day3 = _dates(3)
    target = [float(j) / 100 for j in range(10)]
    frame = pl.DataFrame(
        {
            "date": [day1] * 10 + [day2] * 10 + [day3] * 10,
            "code": codes * 3,
            "horizon": [1] * 30,
            # day 1: codes ranked 0..9; day 2 identical book; day 3 reversed book
            "prediction": list(range(10)) + list(range(10)) + list(range(9, -1, -1)),
            "target": target * 3,
        }
    ).with_columns(pl.col("prediction").cast(pl.Float64))
    book = metrics.long_short_returns(frame, quantile=0.2)  # 2 names per leg
    assert book["long"].to_list() == pytest.approx([0.085, 0.085, 0.005])
    assert book["short"].to_list() == pytest.approx([0.005, 0.005, 0.085])
    assert book["spread"].to_list() == pytest.approx([0.08, 0.08, -0.08])
    # opening from nothing: 2 units; unchanged: 0; every name flips side: 4 × 0.5 × 2 = 4.
    assert book["turnover"].to_list() == pytest.approx([2.0, 0.0, 4.0])
    # against the book two dates back, day 3 still flips everything, day 2 opens from nothing
    assert metrics.long_short_returns(frame, 0.2, lag=2)["turnover"].to_list() == pytest.approx(
        [2.0, 2.0, 4.0]
    )


def test_sharpe_equals_empyrical_gross_and_net() -> None:
    frame = _panel(120, 60, signal=0.2, seed=1)
    book = metrics.long_short_returns(frame)
    gross = book["spread"].to_numpy()
    net = book.select(metrics.net_returns(pl.col("spread"), pl.col("turnover"), 10.0))
    net = net.to_series().to_numpy()
    assert metrics.sharpe(gross) == pytest.approx(
        empyrical.sharpe_ratio(gross, risk_free=0, annualization=252), rel=1e-10
    )
    assert metrics.sharpe(net) == pytest.approx(
        empyrical.sharpe_ratio(net, risk_free=0, annualization=252), rel=1e-10
    )
    assert metrics.sharpe(net) < metrics.sharpe(gross)
    assert metrics.sharpe([0.01]) is None
    assert metrics.sharpe([0.01, 0.01, 0.01]) is None


def _kaggle_spread_return_sharpe(
    df: pd.DataFrame, portfolio_size: int | None = 200, toprank_weight_ratio: float = 2
) -> float:
    """The published ``calc_spread_return_sharpe`` of the JPX Tokyo Stock Exchange Prediction
    competition, with ``portfolio_size=None`` meaning n // 2 per date."""

    def per_day(day: pd.DataFrame) -> float:
        assert day["Rank"].min() == 0
        assert day["Rank"].max() == len(day["Rank"]) - 1
        size = portfolio_size or len(day) // 2
        weights = np.linspace(start=toprank_weight_ratio, stop=1, num=size)
        purchase = (day.sort_values(by="Rank")["Target"][:size] * weights).sum() / weights.mean()
        short = (
            day.sort_values(by="Rank", ascending=False)["Target"][:size] * weights
        ).sum() / weights.mean()
        return purchase - short

    buf = df.groupby("Date").apply(per_day, include_groups=False)
    return buf.mean() / buf.std()


def _to_kaggle(frame: pl.DataFrame) -> pd.DataFrame:
    df = frame.select(
        pl.col("date").alias("Date"), pl.col("prediction"), pl.col("target").alias("Target")
    ).to_pandas()
    df["Rank"] = (
        df.groupby("Date")["prediction"].rank(ascending=False, method="first") - 1
    ).astype(int)
    return df


def test_jpx_score_equals_the_published_formula() -> None:
    frame = _panel(25, 450, signal=0.1, seed=2)
    expected = _kaggle_spread_return_sharpe(_to_kaggle(frame))
    assert metrics.jpx_competition_score(frame) == pytest.approx(expected, rel=1e-10)


def test_jpx_score_needs_400_stocks_and_the_scaled_variant_uses_a_tenth_per_leg() -> None:
    frame = _panel(30, 399, signal=0.1, seed=3)  # below the competition's 400 names
    assert metrics.jpx_competition_score(frame) is None
    expected = _kaggle_spread_return_sharpe(_to_kaggle(frame), portfolio_size=39)
    assert metrics.jpx_scaled_score(frame) == pytest.approx(expected, rel=1e-10)
    large = _panel(25, 2500, signal=0.1, seed=2)  # a tenth would be 250: capped at 200
    assert metrics.jpx_scaled_score(large) == pytest.approx(metrics.jpx_competition_score(large), rel=1e-12)


def test_hit_rate_and_top_decile_precision_by_hand() -> None:
    day1, day2 = _dates(2)
    frame = pl.DataFrame(
        {
            "date": [day1] * 10 + [day2] * 10,
            "code": [f"{1000 + j:04d}0" for j in range(10)] * 2,
            "horizon": [1] * 20,
            "prediction": [-0.5, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4]
            + [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, -0.1],
            "target": [-1.0, 1.0, -1.0, 1.0, 0.0, 1.0, 1.0, -1.0, 1.0, 2.0]
            + [-1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        }
    )
    # day 1: zeros excluded at codes 4 (target) and 5 (prediction); of the other 8 rows,
    # same sign at 0, 2, 6, 8, 9 -> 5. day 2: same sign everywhere but codes 0 and 9 -> 8 of 10.
    assert metrics.hit_rate(frame) == pytest.approx((5 + 8) / 18)
    # top decile = 1 name per date: day 1 code 9 (target 2.0 > median 1.0), day 2 code 0
    # (target -1.0 < median 1.0).
    assert metrics.top_decile_precision(frame) == pytest.approx(0.5)
    # top 20 %: day 1 codes 8, 9 (1.0 is not above the median 1.0; 2.0 is), day 2 codes 0, 1.
    assert metrics.top_decile_precision(frame, quantile=0.2) == pytest.approx(1 / 4)


def test_decile_returns_by_hand() -> None:
    frame = _panel(5, 40, signal=0.3, seed=4)
    got = metrics.decile_returns(frame)
    pdf = frame.to_pandas()
    pdf["decile"] = pdf.groupby("date")["prediction"].rank(method="first").sub(1).floordiv(4).add(1)
    expected = pdf.groupby(["date", "decile"])["target"].mean().groupby("decile").mean()
    assert got["decile"].to_list() == list(range(1, 11))
    assert got["mean_return"].to_list() == pytest.approx(expected.to_list(), rel=1e-12)


def test_random_predictor_scores_about_zero() -> None:
    frame = _panel(250, 500, signal=0.0, seed=5)
    row = metrics.evaluate(frame).row(0, named=True)
    # standard errors: IC ~ 1/sqrt(500·250) ≈ 0.003; JPX ~ 1/sqrt(250) ≈ 0.063;
    # annualized Sharpe ~ sqrt(252/250) ≈ 1.0
    assert abs(row["ic"]) < 0.012
    assert abs(row["rank_ic"]) < 0.012
    assert abs(row["jpx_score"]) < 0.25
    assert abs(row["sharpe_gross"]) < 4.0
    assert row["hit_rate"] == pytest.approx(0.5, abs=0.01)
    assert row["top_decile_precision"] == pytest.approx(0.5, abs=0.02)
    # a random book turns over almost fully every day, so costs dominate
    assert row["sharpe_net"] < row["sharpe_gross"]
    signal = metrics.evaluate(_panel(250, 500, signal=0.2, seed=5)).row(0, named=True)
    assert signal["rank_ic"] > 0.15 and signal["jpx_score"] > 0.5


def test_evaluate_matches_the_single_series_functions() -> None:
    frame = pl.concat(
        [
            _panel(40, 50, 0.3, seed=10, model="a", horizon=1),
            _panel(40, 50, 0.1, seed=11, model="b", horizon=1),
            _panel(40, 50, 0.3, seed=12, model="a", horizon=5),
        ]
    )
    table = metrics.evaluate(frame, cost_bp=25.0)
    assert table.height == 3
    assert table.columns == ["model", "split", "horizon", *metrics.METRIC_COLUMNS]
    for row in table.iter_rows(named=True):
        part = frame.filter(
            (pl.col("model") == row["model"]) & (pl.col("horizon") == row["horizon"])
        )
        h = row["horizon"]
        for key, value in metrics.ic_summary(part).items():
            assert row[key] == pytest.approx(value, rel=1e-12)
        book = metrics.long_short_returns(part, lag=h)
        net = (book["spread"] - 25.0 / 1e4 * book["turnover"]).to_numpy()
        assert row["sharpe_gross"] == pytest.approx(
            empyrical.sharpe_ratio(book["spread"].to_numpy(), risk_free=0, annualization=252 / h),
            rel=1e-10,
        )
        assert row["sharpe_net"] == pytest.approx(
            empyrical.sharpe_ratio(net, risk_free=0, annualization=252 / h), rel=1e-10
        )
        assert row["sharpe_net"] < row["sharpe_gross"]
        assert row["jpx_score"] is None  # 50 stocks: not the competition's metric
        assert row["jpx_scaled_score"] == pytest.approx(metrics.jpx_scaled_score(part), rel=1e-12)
        assert row["hit_rate"] == pytest.approx(metrics.hit_rate(part), rel=1e-12)
        assert row["top_decile_precision"] == pytest.approx(
            metrics.top_decile_precision(part), rel=1e-12
        )
        assert row["n_rows"] == part.height and row["n_dates"] == 40 and row["coverage"] == 1.0
    no_cost = metrics.evaluate(frame, cost_bp=0.0)
    assert no_cost["sharpe_net"].to_list() == pytest.approx(no_cost["sharpe_gross"].to_list())


def test_evaluate_keeps_series_without_known_targets() -> None:
    known = _panel(10, 20, 0.3, seed=13)
    live = _panel(1, 20, 0.3, seed=14).with_columns(
        pl.lit("live").alias("split"), pl.lit(None, dtype=pl.Float64).alias("target")
    )
    table = metrics.evaluate(pl.concat([known, live]))
    row = table.filter(pl.col("split") == "live").row(0, named=True)
    assert row["n_rows"] == 0 and row["n_dates"] == 0 and row["ic"] is None


def test_bad_input_is_refused_with_names() -> None:
    frame = _panel(5, 20, 0.3, seed=15)
    with pytest.raises(ValueError, match=r"'prediction'.*\['m'\]"):
        metrics.evaluate(
            frame.with_columns(
                pl.when(pl.col("code") == "10030")
                .then(float("nan"))
                .otherwise(pl.col("prediction"))
                .alias("prediction")
            )
        )
    with pytest.raises(ValueError, match="lack column"):
        metrics.evaluate(frame.drop("target"))
    mixed = pl.concat([frame, frame.with_columns(pl.lit("other").alias("model"))])
    with pytest.raises(ValueError, match="mix 2 values of 'model'"):
        metrics.ic_summary(mixed)
    with pytest.raises(ValueError, match="mix 2 values of 'model'"):
        metrics.long_short_returns(mixed)
    assert metrics.daily_ic(mixed, by=["model"]).height == 10
    with pytest.raises(ValueError, match="quantile"):
        metrics.long_short_returns(frame, quantile=0.7)


def test_metrics_are_invariant_to_row_order() -> None:
    frame = pl.concat(
        [_panel(30, 40, 0.2, seed=16, model="a"), _panel(30, 40, 0.2, seed=17, model="b")]
    )
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    a, b = metrics.evaluate(frame), metrics.evaluate(shuffled)
    assert a["jpx_score"].to_list() == b["jpx_score"].to_list() == [None, None]  # 40 stocks
    for column in metrics.METRIC_COLUMNS:
        if column != "jpx_score":
            assert a[column].to_list() == pytest.approx(b[column].to_list(), rel=1e-9), column
    assert not math.isnan(a["sharpe_gross"][0])


def test_prediction_coverage_blocks_empty_missing_dates_and_nan():
    import datetime as dt

    from atft_pipeline.stages.model import prediction_coverage

    days = {dt.date(2023, 1, 4), dt.date(2023, 1, 5)}
    frame = pl.DataFrame(
        {"model": ["atft_gat_fan"] * 2, "split": ["val"] * 2, "date": sorted(days), "prediction": [0.1, 0.2]}
    )
    assert prediction_coverage(frame, days).passed
    assert not prediction_coverage(frame.head(1), days).passed  # a val date missing
    assert prediction_coverage(frame.head(1), days).missing_val_dates == [dt.date(2023, 1, 5)]
    with_nan = frame.with_columns(pl.Series("prediction", [0.1, float("nan")]))
    assert prediction_coverage(with_nan, days).nan_predictions == 1
    assert not prediction_coverage(frame.clear(), days).passed  # empty
