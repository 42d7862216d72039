"""The whole graph through Dagster on a small sandbox market: raw -> features -> dataset ->
stats -> ATFT-GAT-FAN + LightGBM -> predictions -> report -> next-day predictions."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from assets.definitions import build_definitions
from assets.runner import materialize_range
from assets.tuning import TUNING_JOB
from atft_pipeline.config import EvaluationSection, PipelineConfig, SplitSpec, load_config
from atft_pipeline.names import LATEST_ASSET
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread
from atft_pipeline.settings import Settings
from atft_pipeline.stages.scope import resolve_scope
from atft_pipeline.storage import PartitionStore
from tests.helpers import atft_test_instance

# Eight months: 60 warm-up sessions, then 40 train, ~21 val and ~21 test dates.
START, END = dt.date(2021, 1, 4), dt.date(2021, 8, 31)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_whole_graph_materializes_and_reports(tmp_path):
    market = generate_market(MarketConfig(seed=3, n_stocks=25, start=START, end=END))
    config = PipelineConfig(
        splits=SplitSpec(warmup_days=60, val_fraction=0.2, test_fraction=0.2, max_train_days=40),
        # a few larger boosting steps: 40 training dates of 25 stocks
        evaluation=EvaluationSection(lightgbm={"learning_rate": 0.2, "num_boost_round": 100,
                                               "min_boost_round": 10,
                                               "early_stopping_rounds": 10}),
    )
    app = create_app(market.tables, settings=ServerSettings(), oracle=market.oracle)
    with serve_in_thread(app) as server, atft_test_instance() as instance:
        settings = Settings(
            home=tmp_path, start_date=START, plan="premium", api_key="sandbox", base_url=server.base_url
        )
        defs = build_definitions(settings, config=config)
        scope = resolve_scope(settings, config)
        store = PartitionStore(tmp_path / "data")
        result = materialize_range(
            defs, instance, scope.pipeline_assets(), START, END, store,
            latest_only=[LATEST_ASSET], progress=lambda _: None,
        )
        assert result.success, [(s.asset, s.error) for s in result.stages if not s.success]

    dataset = store.read("ml_dataset", "2021-08-02")
    assert dataset.columns == scope.catalog.expected_columns(list(scope.families))
    assert len(scope.feature_columns) >= 300

    predictions = store.read("validation_predictions")
    assert set(predictions["model"].unique()) == {"atft_gat_fan", "lightgbm", "ridge", "rule", "oracle"}
    atft = predictions.filter(pl.col("model") == "atft_gat_fan")
    assert atft["prediction"].is_nan().sum() == 0 and atft["prediction"].null_count() == 0
    splits = config.splits.resolve([dt.date.fromisoformat(k) for k in store.partitions("ml_dataset")])
    val_days = {d for d in splits.val.days()}
    assert set(atft.filter(pl.col("split") == "val")["date"].unique()) == val_days
    assert set(atft["horizon"].unique()) == {1, 5, 10, 20}

    report = store.read("evaluation_report")
    assert {"atft_gat_fan", "lightgbm", "ridge", "rule", "oracle"} <= set(report["model"].unique())
    assert list((tmp_path / "reports").glob("*/report.md"))

    latest = store.read(LATEST_ASSET, END.isoformat())
    assert latest.height > 0 and set(latest["split"].unique()) == {"live"}
    assert latest.filter(pl.col("horizon") == 1)["rank"].sort().to_list()[:3] == [1, 2, 3]
    model_record = store.read("atft_model")
    assert model_record["catalog_hash"][0] == scope.catalog_hash

    # The hyperparameter search job on the stored dataset (the UI's path: the Definitions'
    # job with its run config); its best configuration is a file `atft run --config` takes.
    search = tmp_path / "search.yaml"
    search.write_text(
        "study: pipeline-test\ntrials: 2\nseed: 1\n"
        "parameters:\n  - {key: training.lr_scale, type: float, low: 1.0, high: 4.0, log: true}\n"
    )
    with atft_test_instance() as instance:
        outcome = defs.resolve_job_def(TUNING_JOB).execute_in_process(
            run_config={"ops": {"hyperparameter_search_study": {"config": {"search": str(search)}}}},
            instance=instance,
        )
    assert outcome.success
    best = tmp_path / "tuning" / "pipeline-test" / "best.yaml"
    tuned = load_config(best)
    assert 1.0 <= tuned.training.lr_scale <= 4.0
    assert tuned.splits == config.splits  # everything else is the home's configuration
    assert (tmp_path / "dagster" / "optuna.db").exists()  # the study beside the local instance
