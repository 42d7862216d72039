"""LightGBM set up for cross-sectional ranking, and the ridge baseline, on a panel whose
returns are dominated by a market move common to every stock of a date."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft_pipeline.evaluation import baselines, metrics
from atft_pipeline.evaluation.health import prediction_health

N_DATES, N_STOCKS = 120, 60
DAYS = [dt.date(2024, 1, 4) + dt.timedelta(days=i) for i in range(N_DATES)]
FEATURES = ["f_market", "f_signal", "f_noise"]


@pytest.fixture(scope="module")
def windows():
    """target = market_t (same for every stock, 3 %) + 0.4 %·f_signal + 2 % noise."""
    rng = np.random.default_rng(0)
    market = np.repeat(rng.normal(0, 0.03, (N_DATES, 1)), N_STOCKS, axis=1)
    signal, noise = rng.normal(size=(N_DATES, N_STOCKS)), rng.normal(size=(N_DATES, N_STOCKS))
    target = market + 0.004 * signal + 0.02 * rng.normal(size=(N_DATES, N_STOCKS))
    frame = pl.DataFrame(
        {
            "date": pl.Series([d for d in DAYS for _ in range(N_STOCKS)], dtype=pl.Date),
            "code": [f"{1000 + i:04d}0" for _ in DAYS for i in range(N_STOCKS)],
            "f_market": market.ravel(),
            "f_signal": signal.ravel(),
            "f_noise": noise.ravel(),
            "target_1d": target.ravel(),
            "target_5d": target.ravel(),
        }
    )
    part = lambda a, b: frame.filter(pl.col("date").is_between(DAYS[a], DAYS[b - 1]))  # noqa: E731
    return part(0, 70), part(75, 95), part(100, 120)


def test_normal_scores_equal_scipy_per_date():
    frame = pl.DataFrame(
        {
            "date": [DAYS[0]] * 5 + [DAYS[1]] * 4,
            "target_1d": [0.03, -0.01, 0.03, None, 0.2, 1.0, 2.0, 3.0, 4.0],
        }
    )
    got = baselines.normal_scores(frame, "target_1d")
    first = stats.norm.ppf(stats.rankdata([0.03, -0.01, 0.03, 0.2]) / 5)
    second = stats.norm.ppf(stats.rankdata([1.0, 2.0, 3.0, 4.0]) / 5)
    assert np.isnan(got[3])
    np.testing.assert_allclose(got[[0, 1, 2, 4]], first, rtol=1e-12)
    np.testing.assert_allclose(got[5:], second, rtol=1e-12)


def test_ranking_lightgbm_varies_every_date_and_ignores_the_market_move(windows):
    train, val, test = windows
    config = baselines.LightGBMConfig(num_threads=1, num_boost_round=300)
    model = baselines.train_lightgbm(train, val, FEATURES, "target_1d", config)
    assert config.min_boost_round <= model.best_iteration <= config.num_boost_round
    predictions = model.predict(test, "test")
    health = prediction_health(predictions)
    assert health.passed and health.table["constant_dates"][0] == 0
    assert health.table["n_dates"][0] == 20
    assert metrics.ic_summary(predictions)["rank_ic"] > 0.1
    gain = dict(zip(model.feature_columns, model.booster.feature_importance("gain"), strict=True))
    assert gain["f_signal"] > 5 * gain["f_market"]
    # a ranking score, not a return: no return quantiles
    assert predictions["q05"].null_count() == predictions.height
    # leaves sized to the universe: half the median number of stocks per training date
    assert config.leaf_rows(N_STOCKS) == N_STOCKS // 2
    assert config.model_copy(update={"min_data_in_leaf": 7}).leaf_rows(N_STOCKS) == 7


def test_early_stopping_never_selects_fewer_than_the_minimum_rounds(windows):
    train, val, _ = windows
    config = baselines.LightGBMConfig(
        num_threads=1, num_boost_round=80, min_boost_round=40, early_stopping_rounds=5
    )
    model = baselines.train_lightgbm(train, val, FEATURES, "target_1d", config)
    assert 40 <= model.best_iteration <= 80
    assert model.booster.num_trees() == model.best_iteration


def test_ridge_learns_the_stock_signal_and_picks_its_penalty_on_val(windows):
    train, val, test = windows
    config = baselines.RidgeConfig(alphas=(1.0, 100.0, 1e7))
    model = baselines.train_ridge(train, val, FEATURES, "target_1d", config)
    beta = dict(zip(model.feature_columns, model.coefficients, strict=True))
    # a date-constant feature z-scores to 0: it cannot enter a cross-sectional ranking
    assert beta["f_market"] == 0.0 and beta["f_signal"] > 10 * abs(beta["f_noise"])
    assert model.alpha in (1.0, 100.0)
    # the closed form equals a least-squares fit on the augmented system
    z = np.zeros((train.height, len(FEATURES)))
    dates = train["date"].to_numpy()
    for j, column in enumerate(FEATURES):
        x = train[column].to_numpy()
        for day in np.unique(dates):
            rows = dates == day
            std = x[rows].std(ddof=1)
            if std > 1e-12 * abs(x[rows].mean()):
                z[rows, j] = np.clip((x[rows] - x[rows].mean()) / std, -5, 5)
    y = baselines.normal_scores(train, "target_1d")
    augmented = np.vstack([z, np.sqrt(model.alpha) * np.eye(len(FEATURES))])
    lstsq = np.linalg.lstsq(augmented, np.r_[y, np.zeros(len(FEATURES))], rcond=None)[0]
    np.testing.assert_allclose(model.coefficients, lstsq, rtol=1e-6, atol=1e-9)
    predictions = baselines.ridge_predictions(train, val, test, FEATURES, config, horizons=(1, 5))
    assert predictions.columns == list(metrics.PREDICTION_COLUMNS)
    assert set(predictions["model"].unique()) == {"ridge"}
    assert predictions.height == 2 * (val.height + test.height)
    test_1d = predictions.filter((pl.col("split") == "test") & (pl.col("horizon") == 1))
    assert metrics.ic_summary(test_1d)["rank_ic"] > 0.1
    # the selection score is the report's mean per-date RankIC of the chosen fit on val
    val_1d = predictions.filter((pl.col("split") == "val") & (pl.col("horizon") == 1))
    assert model.val_rank_ic == pytest.approx(metrics.ic_summary(val_1d)["rank_ic"], rel=1e-9)
    assert prediction_health(predictions).passed
    with pytest.raises(ValueError, match="alphas must be > 0"):
        baselines.RidgeConfig(alphas=(0.0,))
    with pytest.raises(ValueError):
        baselines.RidgeConfig(unknown=1)
