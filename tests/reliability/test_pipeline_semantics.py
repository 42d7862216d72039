"""Stale outputs are refused; identical inputs in any order give identical datasets, stats and
models."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import polars as pl
from dagster import AssetMaterialization, instance_for_test

from assets.runner import LOOK_AHEAD, look_ahead_refresh
from assets.stage_output import stale_inputs
from atft_pipeline import calendar
from atft_pipeline.dataset.assemble import assemble_dataset, build_meta
from atft_pipeline.dataset.normalization import compute_normalization_stats, stats_hash
from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.dataset.targets import compute_targets
from atft_pipeline.evaluation.baselines import LightGBMConfig, train_lightgbm
from atft_pipeline.features.registry import compute_family, default_catalog
from atft_pipeline.stages.features import TARGET_REACH
from tests.reliability.cases import PIPELINE


def test_evaluation_report_refuses_predictions_older_than_their_models():
    assert PIPELINE[1].startswith("evaluation_report refuses")
    with instance_for_test() as instance:
        def materialize(name):
            instance.report_runless_asset_event(AssetMaterialization(name))

        assert stale_inputs(instance, "validation_predictions", ["atft_model"]) == "never materialized"
        materialize("atft_model")
        materialize("lightgbm_baseline")
        materialize("validation_predictions")
        assert stale_inputs(instance, "validation_predictions", ["atft_model", "lightgbm_baseline"]) == ""
        materialize("atft_model")  # retrained; the predictions' own rerun then failed
        assert stale_inputs(instance, "validation_predictions", ["atft_model", "lightgbm_baseline"]) == (
            "older than the latest atft_model"
        )


def _shuffled(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    return buffer.getvalue()


def test_identical_inputs_in_another_order_give_a_byte_identical_dataset_and_stats(market):
    assert PIPELINE[2].startswith("identical inputs in another order")
    catalog = default_catalog()
    days = calendar.trading_days(dt.date(2022, 12, 1), dt.date(2023, 3, 31))
    dates = days[-12:]
    raw = raw_frames_from_tables(market.tables)
    price = compute_family(catalog.family("price"), raw, dates, days)
    meta = build_meta(raw["raw_daily_quotes"], raw["raw_listed_info"], dates, days)
    targets = compute_targets(raw["raw_daily_quotes"], days, dates)

    def build(seed: int | None) -> pl.DataFrame:
        order = (lambda f: f) if seed is None else (lambda f: _shuffled(f.lazy().collect(), seed))
        return assemble_dataset(order(meta), {"price": order(price)}, order(targets), catalog, ["price"])

    first, second = build(None), build(7)
    assert first.height > 0 and _parquet_bytes(first) == _parquet_bytes(second)
    assert first.select("date", "code").equals(first.select("date", "code").sort("date", "code"))
    columns = catalog.feature_columns(["price"])
    assert stats_hash(compute_normalization_stats(first.lazy(), columns)) == stats_hash(
        compute_normalization_stats(second.lazy(), columns)
    )


def _panel(seed: int, n_dates: int, start: dt.date) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    dates = [start + dt.timedelta(days=i) for i in range(n_dates)]
    n = n_dates * 40
    x = rng.normal(size=(n, 4))
    return pl.DataFrame(
        {
            "date": [d for d in dates for _ in range(40)],
            "code": [f"{1000 + i}0" for i in range(40)] * n_dates,
            **{f"f{j}": x[:, j] for j in range(4)},
            "target_1d": x[:, 0] * 0.3 - x[:, 1] * 0.2 + rng.normal(scale=1.0, size=n),
        }
    )


def test_lightgbm_trained_on_the_same_rows_in_another_order_is_identical():
    assert PIPELINE[3].startswith("LightGBM trained on identical rows")
    train, val = _panel(1, 30, dt.date(2023, 1, 1)), _panel(2, 10, dt.date(2023, 3, 1))
    config = LightGBMConfig(num_boost_round=40, early_stopping_rounds=10, min_data_in_leaf=20, num_leaves=8)
    features = ["f0", "f1", "f2", "f3"]
    a = train_lightgbm(train, val, features, config=config)
    b = train_lightgbm(_shuffled(train, 3), _shuffled(val, 4), features, config=config)
    assert a.booster.model_to_string() == b.booster.model_to_string()
    assert a.predict(val, "val").equals(b.predict(val, "val")) and a.val_rank_ic == b.val_rank_ic


def test_extending_a_range_redoes_the_targets_that_looked_past_its_old_end():
    assert PIPELINE[4].startswith("extending a range")
    days = calendar.trading_days(dt.date(2023, 1, 4), dt.date(2023, 3, 31))
    old, new = days[:40], days[40:45]
    done = {d.isoformat() for d in old}
    assert look_ahead_refresh(new, done, TARGET_REACH) == old[-TARGET_REACH:]
    assert look_ahead_refresh([], done, TARGET_REACH) == [] and look_ahead_refresh(new, done, 0) == []
    assert LOOK_AHEAD == {"targets": TARGET_REACH, "ml_dataset": TARGET_REACH}
