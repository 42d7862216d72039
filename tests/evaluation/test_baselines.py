"""LightGBM baseline and momentum / reversal rule on synthetic panels with planted signals."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from atft_pipeline.evaluation import baselines, metrics

N_DATES, N_STOCKS = 100, 60
FEATURES = ["f_signal", "f_negative", "f_noise"]
# One thread keeps the small fits fast on a busy 2-core machine (OpenMP barriers stall when
# cores are oversubscribed); the determinism test runs the default two threads.
CONFIG = baselines.LightGBMConfig(
    num_boost_round=100, early_stopping_rounds=15, learning_rate=0.1, min_data_in_leaf=20,
    num_leaves=15, num_threads=1,
)


def _dates(n: int) -> list[dt.date]:
    return [dt.date(2024, 1, 4) + dt.timedelta(days=i) for i in range(n)]


def _long(columns: dict[str, np.ndarray], n_dates: int, n_stocks: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": pl.Series([d for d in _dates(n_dates) for _ in range(n_stocks)], dtype=pl.Date),
            "code": [f"{1000 + i:04d}0" for _ in range(n_dates) for i in range(n_stocks)],
            **{name: values.ravel() for name, values in columns.items()},
        }
    )


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    """target_h = 0.01·f_signal − 0.006·f_negative + noise (√h-scaled); f_noise is irrelevant."""
    rng = np.random.default_rng(0)
    shape = (N_DATES, N_STOCKS)
    x1, x2, x3 = (rng.normal(size=shape) for _ in range(3))
    signal = 0.01 * x1 - 0.006 * x2
    targets = {f"target_{h}d": signal + 0.02 * np.sqrt(h) * rng.normal(size=shape) for h in (1, 5)}
    frame = _long({"f_signal": x1, "f_negative": x2, "f_noise": x3, **targets}, *shape)
    # missing features (LightGBM routes them) and unknown targets (dropped from training)
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) % 11 == 0)
        .then(None)
        .otherwise(pl.col("f_negative"))
        .alias("f_negative"),
        pl.when(pl.int_range(pl.len()) % 13 == 0)
        .then(None)
        .otherwise(pl.col("target_1d"))
        .alias("target_1d"),
    )


def _window(frame: pl.DataFrame, start: int, end: int) -> pl.DataFrame:
    days = _dates(N_DATES)
    return frame.filter(pl.col("date").is_between(days[start], days[end - 1]))


@pytest.fixture(scope="module")
def windows(panel: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return _window(panel, 0, 60), _window(panel, 65, 80), _window(panel, 85, 100)


@pytest.fixture(scope="module")
def model(windows) -> baselines.LightGBMModel:
    train, val, _ = windows
    return baselines.train_lightgbm(train, val, FEATURES, "target_1d", CONFIG)


def test_lightgbm_learns_the_planted_signal(model, windows) -> None:
    _, val, test = windows
    val_pred = model.predict(val, split="val")
    test_pred = model.predict(test, split="test")
    val_summary = metrics.ic_summary(val_pred)
    assert val_summary["rank_ic"] > 0.25
    assert model.val_rank_ic == pytest.approx(val_summary["rank_ic"], rel=1e-9)
    assert metrics.ic_summary(test_pred)["rank_ic"] > 0.25
    assert 1 <= model.best_iteration <= CONFIG.num_boost_round
    importance = dict(
        zip(model.feature_columns, model.booster.feature_importance("gain"), strict=True)
    )
    assert importance["f_signal"] > importance["f_negative"] > importance["f_noise"]


def test_lightgbm_predictions_follow_the_contract(model, windows) -> None:
    _, val, test = windows
    pred = model.predict(test, split="test")
    assert pred.columns == list(metrics.PREDICTION_COLUMNS)
    assert pred.height == test.height
    assert set(pred["model"].unique()) == {"lightgbm"} and set(pred["horizon"].unique()) == {1}
    assert pred["prediction"].null_count() == 0
    assert pred["q50"].to_list() == pred["prediction"].to_list()
    # a ranking (normal-score) model predicts a score: no return quantiles
    assert all(pred[q].null_count() == pred.height for q in metrics.QUANTILE_COLUMNS if q != "q50")
    # targets carried over, nulls stay null
    assert pred["target"].null_count() == test["target_1d"].null_count() > 0
    # a raw-return model's val-residual intervals are ordered and roughly calibrated out of sample
    train, _, _ = windows
    raw = baselines.train_lightgbm(
        train, val, FEATURES, "target_1d", CONFIG.model_copy(update={"target_transform": "raw"})
    ).predict(test, split="test")
    assert raw["q50"].to_list() == raw["prediction"].to_list()
    for low, high in zip(metrics.QUANTILE_COLUMNS, metrics.QUANTILE_COLUMNS[1:]):
        assert (raw[low] < raw[high]).all()
    known = raw.drop_nulls("target")
    inside = ((known["target"] >= known["q05"]) & (known["target"] <= known["q95"])).mean()
    assert inside == pytest.approx(0.9, abs=0.06)
    with pytest.raises(ValueError, match="split="):
        model.predict(test)
    assert model.predict(test.with_columns(pl.lit("live").alias("split")))[
        "split"
    ].unique().to_list() == ["live"]


@pytest.mark.slow
def test_lightgbm_is_deterministic(model, windows) -> None:
    train, val, test = windows
    # the default thread count; L2 stopping keeps Polars' thread pool out of the boosting loop
    two_threads = CONFIG.model_copy(
        update={"num_threads": baselines.LightGBMConfig().num_threads, "early_stopping_metric": "l2"}
    )
    assert two_threads.num_threads == 2
    first = baselines.train_lightgbm(train, val, FEATURES, "target_1d", two_threads)
    second = baselines.train_lightgbm(train, val, FEATURES, "target_1d", two_threads)
    assert second.predict(test, "test").equals(first.predict(test, "test"))
    other_seed = baselines.train_lightgbm(
        train, val, FEATURES, "target_1d", CONFIG.model_copy(update={"seed": 7})
    )
    assert not other_seed.predict(test, "test")["prediction"].equals(
        model.predict(test, "test")["prediction"]
    )


def test_lightgbm_baseline_per_horizon_and_round_trip(windows) -> None:
    train, val, test = windows
    config = CONFIG.model_copy(update={"early_stopping_metric": "l2", "num_boost_round": 60})
    baseline = baselines.train_lightgbm_baseline(train, val, FEATURES, config, horizons=(1, 5))
    pred = baseline.predict(test, "test")
    assert sorted(pred["horizon"].unique().to_list()) == [1, 5]
    assert pred.height == 2 * test.height
    assert metrics.ic_summary(pred.filter(pl.col("horizon") == 5))["rank_ic"] > 0.1
    restored = baselines.LightGBMBaseline.from_json(baseline.to_json())
    assert restored.predict(test, "test").equals(pred)


def test_lightgbm_refuses_bad_input(windows) -> None:
    train, val, _ = windows
    with pytest.raises(ValueError, match=r"train frame lacks column\(s\) \['missing'\]"):
        baselines.train_lightgbm(train, val, [*FEATURES, "missing"], "target_1d", CONFIG)
    with pytest.raises(ValueError, match="unknown target column 'target_3d'"):
        baselines.train_lightgbm(train, val, FEATURES, "target_3d", CONFIG)
    with pytest.raises(ValueError, match="val frame has no rows with a known 'target_1d'"):
        baselines.train_lightgbm(
            train,
            val.with_columns(pl.lit(None, dtype=pl.Float64).alias("target_1d")),
            FEATURES,
            "target_1d",
            CONFIG,
        )
    with pytest.raises(ValueError):
        baselines.LightGBMConfig(learning_rate=0.0)
    with pytest.raises(ValueError):
        baselines.LightGBMConfig(unknown=1)


def _returns_panel(seed: int, reversal: float, momentum: float) -> pl.DataFrame:
    """Log returns over 5 and 60 days; target = reversal·(−r5) + momentum·(r60 − r5) + noise."""
    rng = np.random.default_rng(seed)
    n_dates, n_stocks = 40, 80
    r5 = rng.normal(0, 0.05, (n_dates, n_stocks))
    r55 = rng.normal(0, 0.15, (n_dates, n_stocks))  # return from t−60 to t−5
    target = reversal * -r5 + momentum * r55 + rng.normal(0, 0.03, (n_dates, n_stocks))
    return _long(
        {"logret_5d": r5, "logret_60d": r5 + r55, "target_1d": target, "target_5d": target},
        n_dates,
        n_stocks,
    )


def test_rule_sign_on_planted_reversal_and_momentum() -> None:
    reversal = baselines.momentum_reversal_rule(
        _returns_panel(1, reversal=0.5, momentum=0.0), horizons=(1,), split="val"
    )
    assert metrics.ic_summary(reversal)["rank_ic"] > 0.3
    momentum = baselines.momentum_reversal_rule(
        _returns_panel(2, reversal=0.0, momentum=0.2), horizons=(1,), split="val"
    )
    assert metrics.ic_summary(momentum)["rank_ic"] > 0.3
    continuation = baselines.momentum_reversal_rule(
        _returns_panel(3, reversal=-0.5, momentum=0.0), horizons=(1,), split="val"
    )
    assert metrics.ic_summary(continuation)["rank_ic"] < -0.3


def test_rule_score_by_hand() -> None:
    frame = _returns_panel(4, reversal=0.5, momentum=0.1).with_columns(
        pl.when(pl.col("code") == "10030")
        .then(None)
        .otherwise(pl.col("logret_60d"))
        .alias("logret_60d")
    )
    pred = baselines.momentum_reversal_rule(frame, split="test")
    assert pred.columns == list(metrics.PREDICTION_COLUMNS)
    assert sorted(pred["horizon"].unique().to_list()) == [1, 5, 10, 20]
    assert (
        pred.filter(pl.col("horizon") == 10)["target"].null_count() == frame.height
    )  # no target_10d
    assert (
        pred["q50"].to_list() == pred["prediction"].to_list()
        and pred["q05"].null_count() == pred.height
    )
    day = frame.filter(pl.col("date") == frame["date"].min())
    r5 = day["logret_5d"].to_numpy()
    mom = (day["logret_60d"] - day["logret_5d"]).to_numpy()
    valid = ~np.isnan(mom)
    z_r5 = (r5 - r5.mean()) / r5.std(ddof=1)
    z_mom = np.zeros_like(mom)  # a missing input counts as the date's mean
    z_mom[valid] = (mom[valid] - mom[valid].mean()) / mom[valid].std(ddof=1)
    got = pred.filter((pl.col("date") == day["date"][0]) & (pl.col("horizon") == 1))
    np.testing.assert_allclose(got["prediction"].to_numpy(), -z_r5 + z_mom, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="logret_20d"):
        baselines.momentum_reversal_rule(frame, log_return_long="logret_20d", split="test")
