"""Model assets (group ``model``): ATFT-GAT-FAN, the LightGBM baseline, validation predictions,
the evaluation report and the nightly next-day predictions."""

import base64
import datetime as dt
from pathlib import Path

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from assets.features import by_date
from assets.layout import DATASET_ASSET, LATEST_ASSET, MODEL_ASSETS, STATS_ASSET, Layout
from assets.partitions import partition_dates, trading_day_lookback, trading_day_partitions
from atft_pipeline import calendar
from atft_pipeline.dataset.normalization import stats_hash
from atft_pipeline.dataset.splits import SplitConfig
from atft_pipeline.evaluation.health import prediction_health
from atft_pipeline.modeling import (
    ATFT_MODEL,
    evaluation_windows,
    prediction_coverage,
    fit_lightgbm,
    fit_ridge,
    predict_atft,
    rule_predictions,
    train_atft,
)
from atft_pipeline.storage import PartitionStore
from resources.jquants import JQuantsResource
from resources.storage import StorageResource

MODEL_GROUP = "model"
MODEL_ASSET, LIGHTGBM_ASSET, PREDICTIONS_ASSET, REPORT_ASSET = MODEL_ASSETS
PREDICTIONS_CHECK = "covers_every_val_date_without_nan"
HEALTH_CHECK = "no_collapsed_model"  # constant predictions on too many dates
# latest_predictions needs the model window plus the graph's trailing-return window.
LIVE_LOOKBACK = 100


def _dataset(store: PartitionStore) -> tuple[pl.DataFrame, list[dt.date]]:
    keys = store.partitions(DATASET_ASSET)
    if not keys:
        raise Failure("ml_dataset has no stored partitions: materialize the dataset first")
    return store.scan(DATASET_ASSET, keys).collect(), [dt.date.fromisoformat(k) for k in keys]


def stale_inputs(instance, asset: str, sources: list[str]) -> str:
    """Why ``asset``'s stored data predates what it was made from ('' when it does not).

    Compares the latest materializations: e.g. predictions older than a retrained model come
    from the previous model (their own rerun failed) and must not be reported as current.
    """
    own = instance.get_latest_materialization_event(AssetKey(asset))
    if own is None:
        return "never materialized"
    newer = [
        name for name in sources
        if (event := instance.get_latest_materialization_event(AssetKey(name))) is not None
        and event.timestamp > own.timestamp
    ]
    return f"older than the latest {', '.join(newer)}" if newer else ""


def build_model_assets(layout: Layout) -> list[AssetsDefinition]:
    from assets.dataset import resolve_splits

    config = layout.config
    catalog_hash = layout.catalog.hash(list(layout.families))
    home = layout.settings.home.resolve()

    def splits_for(days: list[dt.date]) -> SplitConfig:
        return resolve_splits(config, days)

    @asset(
        name=MODEL_ASSET,
        group_name=MODEL_GROUP,
        deps=[DATASET_ASSET, STATS_ASSET],
        io_manager_key="parquet_io_manager",
        kinds={"pytorch", "mlflow"},
        description="ATFT-GAT-FAN checkpoint (best validation RankIC over the phases) with its "
        "config, catalog hash and stats hash; trained with MLflow tracking, resumable.",
    )
    def atft_model(context: AssetExecutionContext, storage: StorageResource):
        store = storage.store()
        dataset, days = _dataset(store)
        stats = store.read(STATS_ASSET)
        splits = splits_for(days)
        run_dir = home / "models" / ATFT_MODEL / f"{catalog_hash}-{stats_hash(stats)}"
        trained = train_atft(
            dataset, stats, splits, config, run_dir, layout.settings.mlflow_uri,
            tags={"catalog_hash": catalog_hash, "stats_hash": stats_hash(stats),
                  "dagster_run_id": context.run.run_id},
        )
        metrics = {
            f"val_{k}_{h}d": v for h, m in trained.final_metrics.items() for k, v in m.items()
            if v is not None
        }
        return Output(
            trained.record(catalog_hash, stats_hash(stats)),
            metadata={
                "checkpoint": MetadataValue.path(str(trained.checkpoint)),
                "mlflow_run_id": trained.run_id,
                "parameters": trained.parameters,
                "best_phase": trained.best_phase,
                "epochs": trained.epochs,
                "catalog_hash": catalog_hash,
                "stats_hash": stats_hash(stats),
                **{k: float(v) for k, v in metrics.items()},
            },
        )

    @asset(
        name=LIGHTGBM_ASSET,
        group_name=MODEL_GROUP,
        deps=[DATASET_ASSET],
        io_manager_key="parquet_io_manager",
        kinds={"lightgbm"},
        description="LightGBM per horizon on the same dataset, splits and metrics; stores its "
        "validation/test predictions.",
    )
    def lightgbm_baseline(context: AssetExecutionContext, storage: StorageResource):
        store = storage.store()
        dataset, days = _dataset(store)
        path = home / "models" / "lightgbm" / f"{catalog_hash}.json"
        predictions = fit_lightgbm(dataset, splits_for(days), config, path)
        return Output(predictions, metadata={"model": MetadataValue.path(str(path)), "rows": predictions.height})

    @asset(
        name=PREDICTIONS_ASSET,
        group_name=MODEL_GROUP,
        deps=[MODEL_ASSET, LIGHTGBM_ASSET, DATASET_ASSET, STATS_ASSET],
        io_manager_key="parquet_io_manager",
        kinds={"polars", "parquet"},
        description="Every val/test date × stock × horizon for ATFT-GAT-FAN, LightGBM, ridge, the "
        "momentum/reversal rule and (on the sandbox) the oracle; quantiles and targets.",
        check_specs=[
            AssetCheckSpec(PREDICTIONS_CHECK, asset=PREDICTIONS_ASSET, blocking=True),
            # Not blocking: the report must still show a collapsed model, scored ≈ 0.
            AssetCheckSpec(HEALTH_CHECK, asset=PREDICTIONS_ASSET),
        ],
    )
    def validation_predictions(
        context: AssetExecutionContext, storage: StorageResource, jquants: JQuantsResource
    ):
        store = storage.store()
        dataset, days = _dataset(store)
        splits = splits_for(days)
        checkpoint = store.read(MODEL_ASSET)["checkpoint"][0]
        parts = [
            predict_atft(Path(checkpoint), dataset, store.read(STATS_ASSET), config, evaluation_windows(splits)),
            store.read(LIGHTGBM_ASSET),
            fit_ridge(dataset, splits, config),
            rule_predictions(dataset, splits),
        ]
        oracle = jquants.sandbox_oracle(splits.val.start, splits.test.end, dataset, splits)
        if oracle is not None:
            parts.append(oracle)
        predictions = pl.concat(parts, how="diagonal_relaxed").sort("model", "split", "horizon", "date", "code")
        val_dates = set(splits.val.days()) & set(days)
        coverage = prediction_coverage(predictions, val_dates)
        yield Output(
            predictions,
            metadata={
                "rows": predictions.height,
                "models": MetadataValue.json(sorted(predictions["model"].unique().to_list())),
                "val_dates": len(val_dates),
                "test_dates": len(set(splits.test.days()) & set(days)),
            },
        )
        yield AssetCheckResult(
            check_name=PREDICTIONS_CHECK,
            passed=coverage.passed,
            metadata={
                "atft_rows": coverage.rows,
                "missing_val_dates": str(coverage.missing_val_dates[:10]),
                "nan_predictions": coverage.nan_predictions,
            },
        )
        health = prediction_health(predictions, config.evaluation.max_constant_share)
        yield AssetCheckResult(
            check_name=HEALTH_CHECK,
            passed=health.passed,
            metadata={
                "failing_models": MetadataValue.json(health.failing),
                "max_constant_share": health.max_constant_share,
                "health": MetadataValue.json(health.table.to_dicts()),
            },
        )

    @asset(
        name=REPORT_ASSET,
        group_name=MODEL_GROUP,
        deps=[PREDICTIONS_ASSET, MODEL_ASSET],
        io_manager_key="parquet_io_manager",
        kinds={"matplotlib", "mlflow"},
        description="Metrics table (ATFT-GAT-FAN vs LightGBM vs rule vs oracle), cumulative "
        "long-short, IC over time and decile plots; also logged to the model's MLflow run.",
    )
    def evaluation_report(context: AssetExecutionContext, storage: StorageResource):
        from atft_pipeline.evaluation.report import build_report
        from atft_pipeline.training import MlflowTracker

        store = storage.store()
        # --- refuse stale predictions: they must postdate the models they came from ---
        stale = stale_inputs(context.instance, PREDICTIONS_ASSET, [MODEL_ASSET, LIGHTGBM_ASSET])
        if stale:
            raise Failure(f"{REPORT_ASSET}: {PREDICTIONS_ASSET} is stale ({stale}); rerun it first")
        # --- end of stale check ---
        predictions = store.read(PREDICTIONS_ASSET)
        out_dir = home / "reports" / context.run.run_id[:8]
        report = build_report(
            predictions, out_dir, "ATFT-GAT-FAN evaluation", cost_bp=config.evaluation.cost_bp
        )
        run_id = store.read(MODEL_ASSET)["mlflow_run_id"][0]
        tracker = MlflowTracker(layout.settings.mlflow_uri, "atft_gat_fan", run_id=run_id)
        for path in [report.path, *report.plots.values()]:
            tracker.log_artifact(path)
        plots_md = "\n\n".join(
            f"### {name}\n\n![{name}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})"
            for name, p in report.plots.items()
        )
        return Output(
            report.table,
            metadata={
                "report": MetadataValue.md(report.markdown),
                "plots": MetadataValue.md(plots_md),  # viewable inline in the Dagster UI
                "report_path": MetadataValue.path(str(report.path)),
                **{f"plot_{name}": MetadataValue.path(str(p)) for name, p in report.plots.items()},
            },
        )

    @asset(
        name=LATEST_ASSET,
        group_name=MODEL_GROUP,
        partitions_def=trading_day_partitions(layout.start),
        deps=[MODEL_ASSET, STATS_ASSET, AssetDep(DATASET_ASSET, partition_mapping=trading_day_lookback(LIVE_LOOKBACK))],
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        kinds={"pytorch", "parquet"},
        description="Next-day ranked predictions for every stock of the partition date (the "
        "nightly deliverable), from the current atft_model.",
    )
    def latest_predictions(context: AssetExecutionContext, storage: StorageResource):
        store = storage.store()
        dates = partition_dates(context.partition_keys)
        first = max(calendar.shift_trading_days(dates[0], -LIVE_LOOKBACK), layout.start)
        stored = set(store.partitions(DATASET_ASSET))
        window = [d.isoformat() for d in calendar.trading_days(first, dates[-1]) if d.isoformat() in stored]
        dataset = store.scan(DATASET_ASSET, window).collect()
        checkpoint = Path(store.read(MODEL_ASSET)["checkpoint"][0])
        live = predict_atft(checkpoint, dataset, store.read(STATS_ASSET), config, {"live": (dates[0], dates[-1])})
        ranked = live.with_columns(
            pl.col("prediction").rank("ordinal", descending=True).over("date", "horizon").alias("rank")
        ).sort("date", "horizon", "rank")
        return Output(by_date(ranked, dates), metadata={"rows": ranked.height, "stocks": ranked["code"].n_unique()})

    return [atft_model, lightgbm_baseline, validation_predictions, evaluation_report, latest_predictions]
