"""Model stages: ATFT-GAT-FAN, the LightGBM baseline, validation predictions, the evaluation
report and the next-day predictions (one stage function each, after the building blocks).

The building blocks work on an in-memory ``ml_dataset`` frame plus the normalization
statistics, so everything is testable without Dagster. torch, LightGBM and MLflow are imported
lazily: the code location stays light.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from atft_pipeline import calendar
from atft_pipeline.config import PipelineConfig
from atft_pipeline.dataset.normalization import stats_hash
from atft_pipeline.dataset.splits import SplitConfig
from atft_pipeline.jquants.client import ClientConfig
from atft_pipeline.names import (
    ATFT_MODEL,
    DATASET_ASSET,
    LIGHTGBM_ASSET,
    MODEL_ASSET,
    PREDICTIONS_ASSET,
    REPORT_ASSET,
    STATS_ASSET,
)
from atft_pipeline.sandbox.oracle_client import fetch_oracle, oracle_predictions
from atft_pipeline.stages import CheckOutcome, Markdown, StageOutput
from atft_pipeline.stages.scope import PipelineScope
from atft_pipeline.stages.windows import frames_by_partition, stored_keys
from atft_pipeline.storage import PartitionStore, atomic_write_text

if TYPE_CHECKING:  # the model package loads torch: only where a model is trained
    from atft_pipeline.model.config import ModelConfig
    from atft_pipeline.training.config import TrainingConfig

PREDICTIONS_CHECK = "covers_every_val_date_without_nan"
HEALTH_CHECK = "no_collapsed_model"  # constant predictions on too many dates
# latest_predictions needs the model window plus the graph's trailing-return window.
LIVE_LOOKBACK = 100


@dataclass(frozen=True)
class TrainedModel:
    checkpoint: Path
    run_id: str
    best_phase: str
    best_val_rank_ic: float
    final_metrics: dict[int, dict[str, float | None]]
    parameters: int
    epochs: int
    dates_per_batch: int

    def record(self, catalog_hash: str, stats_hash: str) -> pl.DataFrame:
        """A one-row description of the checkpoint (what the ``atft_model`` asset stores)."""
        return pl.DataFrame(
            {
                "checkpoint": [str(self.checkpoint)],
                "mlflow_run_id": [self.run_id],
                "best_phase": [self.best_phase],
                "best_val_rank_ic_1d": [self.best_val_rank_ic],
                "parameters": [self.parameters],
                "epochs": [self.epochs],
                "catalog_hash": [catalog_hash],
                "stats_hash": [stats_hash],
                "final_metrics": [json.dumps(self.final_metrics)],
            }
        )


def _panel(
    dataset: pl.DataFrame,
    stats: pl.DataFrame,
    config: PipelineConfig,
    model_config,
    span: tuple[dt.date, dt.date],
):
    """The model's panel over ``span`` (and the history it reads before it) only."""
    from atft_pipeline.training import Panel

    return Panel.for_model(
        dataset, stats, model_config, return_column=config.training.graph_return_column, span=span
    )


def train_atft(
    dataset: pl.DataFrame,
    features: list[str],
    stats: pl.DataFrame,
    splits: SplitConfig,
    config: PipelineConfig,
    run_dir: Path,
    tracking_uri: str,
    tags: dict[str, Any],
    *,
    resume: bool = True,
) -> TrainedModel:
    """Train on the train window, select on validation; MLflow + JSON tracking, resumable."""
    from atft_pipeline.training import JsonTracker, MlflowTracker, MultiTracker, train_ensemble
    from atft_pipeline.training.mlflow_model import register_model, scoring_rows
    from atft_pipeline.training.tracking import run_name, tracked_run

    model_config = config.model.build(len(features))
    training_config = config.training.build()
    panel = _panel(dataset, stats, config, model_config, (splits.train.start, splits.val.end))
    run_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(
        ATFT_MODEL, _trained_as(model_config, training_config), splits.train.start, splits.val.end
    )
    mlflow = MlflowTracker(tracking_uri, experiment=ATFT_MODEL, run_name=name, tags=tags)
    tracker = MultiTracker([mlflow, JsonTracker(run_dir / "metrics.jsonl")])
    with tracked_run(tracker):  # the run ends FINISHED, FAILED or KILLED, never left RUNNING
        tracker.log_params({**tags, "parameters": model_config.parameter_count()})
        result = train_ensemble(
            panel, splits, model_config, training_config, run_dir, tracker, resume=resume
        )
        example = scoring_rows(dataset, splits.val.end, model_config.window)
        register_model(tracking_uri, mlflow.run_id, result.best_checkpoint, stats,
                       config.training.graph_return_column, example)
    return TrainedModel(
        checkpoint=result.best_checkpoint,
        run_id=result.run_id,
        best_phase=result.best_phase,
        best_val_rank_ic=result.best_metric,
        final_metrics=result.final_metrics,
        parameters=model_config.parameter_count(),
        epochs=len(result.history),
        dates_per_batch=result.dates_per_batch,
    )


def predict_atft(
    checkpoint: Path,
    dataset: pl.DataFrame,
    stats: pl.DataFrame,
    config: PipelineConfig,
    windows: dict[str, tuple[dt.date, dt.date]],
) -> pl.DataFrame:
    """Long-format predictions of a checkpoint for each named window (``val``, ``test``, ``live``)."""
    from atft_pipeline.training import load_model, predict

    model, _ = load_model(checkpoint)
    span = (min(start for start, _ in windows.values()), max(end for _, end in windows.values()))
    panel = _panel(dataset, stats, config, model.config, span)
    parts = []
    for split, (start, end) in windows.items():
        indices = panel.date_indices(start, end)
        if indices.size:
            parts.append(predict(model, panel, indices, split))
    if not parts:
        raise ValueError(f"no dates with valid stocks in {windows}")
    return pl.concat(parts)


def universe_splits(dataset: pl.DataFrame, splits: SplitConfig) -> dict[str, pl.DataFrame]:
    """The universe rows of ``dataset`` by split name (``train``, ``val``, ``test``): what every
    baseline fits and predicts on."""
    universe = dataset.filter("universe")
    return {name: universe.filter(splits.split_expr() == name) for name in ("train", "val", "test")}


def fit_lightgbm(
    dataset: pl.DataFrame,
    features: list[str],
    splits: SplitConfig,
    config: PipelineConfig,
    model_path: Path,
) -> pl.DataFrame:
    """Fit one LightGBM per horizon (early-stopped on val), save it, predict val + test."""
    from atft_pipeline.evaluation.baselines import train_lightgbm_baseline

    part = universe_splits(dataset, splits)
    baseline = train_lightgbm_baseline(
        part["train"], part["val"], features, config.evaluation.lightgbm_config()
    )
    model_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(model_path, baseline.to_json())
    return pl.concat([baseline.predict(part["val"], "val"), baseline.predict(part["test"], "test")])


def fit_ridge(
    dataset: pl.DataFrame, features: list[str], splits: SplitConfig, config: PipelineConfig
) -> pl.DataFrame:
    """Fit one ridge per horizon (penalty chosen on val RankIC); predict val + test."""
    from atft_pipeline.evaluation.baselines import ridge_predictions

    part = universe_splits(dataset, splits)
    return ridge_predictions(
        part["train"], part["val"], part["test"], features, config.evaluation.ridge_config()
    )


def rule_predictions(dataset: pl.DataFrame, splits: SplitConfig) -> pl.DataFrame:
    from atft_pipeline.evaluation.baselines import momentum_reversal_rule

    universe = dataset.filter("universe")
    return pl.concat(
        [
            momentum_reversal_rule(universe.filter(splits.split_expr() == name), split=name)
            for name in ("val", "test")
        ]
    )


def evaluation_windows(splits: SplitConfig) -> dict[str, tuple[dt.date, dt.date]]:
    return {"val": (splits.val.start, splits.val.end), "test": (splits.test.start, splits.test.end)}


@dataclass(frozen=True)
class PredictionCoverage:
    """What the blocking check on validation predictions looks at (ATFT-GAT-FAN rows)."""

    rows: int
    missing_val_dates: list[dt.date]
    nan_predictions: int

    @property
    def passed(self) -> bool:
        return self.rows > 0 and not self.missing_val_dates and self.nan_predictions == 0


def prediction_coverage(predictions: pl.DataFrame, val_days: set[dt.date]) -> PredictionCoverage:
    atft = predictions.filter(pl.col("model") == ATFT_MODEL)
    covered = set(atft.filter(pl.col("split") == "val")["date"].unique().to_list())
    nan_rows = int(atft["prediction"].is_nan().sum() + atft["prediction"].is_null().sum())
    return PredictionCoverage(atft.height, sorted(val_days - covered), nan_rows)


def stored_dataset(store: PartitionStore) -> tuple[pl.DataFrame, list[dt.date]]:
    """Every stored ``ml_dataset`` partition as one frame, and its dates."""
    keys = store.partitions(DATASET_ASSET)
    if not keys:
        raise ValueError("ml_dataset has no stored partitions: materialize the dataset first")
    return store.scan(DATASET_ASSET, keys).collect(), [dt.date.fromisoformat(k) for k in keys]


def _checkpoint(store: PartitionStore) -> Path:
    return Path(store.read(MODEL_ASSET)["checkpoint"][0])


def model_run_dir(
    home: Path, catalog_hash: str, stats_digest: str, config: PipelineConfig, n_features: int
) -> Path:
    """``ATFT_HOME/models/atft_gat_fan/<catalog>-<stats>-<model and training config>``.

    A killed training resumes from its directory only with the configuration that wrote it
    (``train`` refuses any other), so every configuration gets its own: training again with
    another configuration starts fresh instead of failing, and switching back resumes."""
    from atft_pipeline.training.tracking import config_digest

    digest = config_digest(_trained_as(config.model.build(n_features), config.training.build()))
    return Path(home).resolve() / "models" / ATFT_MODEL / f"{catalog_hash}-{stats_digest}-{digest}"


def _trained_as(model_config: ModelConfig, training_config: TrainingConfig) -> dict[str, Any]:
    """The resolved model and training configurations: what the MLflow run name and the
    model directory hash (so both carry the same digest)."""
    return {
        "model": model_config.model_dump(mode="json"),
        "training": training_config.model_dump(mode="json"),
    }


def atft_model(store: PartitionStore, scope: PipelineScope, run_id: str) -> StageOutput:
    """Train ATFT-GAT-FAN (resumable, MLflow-tracked) under ``ATFT_HOME/models``; the output
    is the one-row checkpoint record."""
    dataset, days = stored_dataset(store)
    stats = store.read(STATS_ASSET)
    catalog_hash, stats_digest = scope.catalog_hash, stats_hash(stats)
    run_dir = model_run_dir(scope.settings.home, catalog_hash, stats_digest, scope.config,
                            len(scope.feature_columns))
    trained = train_atft(
        dataset, scope.feature_columns, stats, scope.config.splits.resolve(days), scope.config,
        run_dir, scope.settings.mlflow_uri,
        tags={"catalog_hash": catalog_hash, "stats_hash": stats_digest, "dagster_run_id": run_id},
    )
    metrics = {
        f"val_{k}_{h}d": float(v) for h, m in trained.final_metrics.items() for k, v in m.items()
        if v is not None
    }
    return StageOutput(
        trained.record(catalog_hash, stats_digest),
        metadata={
            "checkpoint": trained.checkpoint,
            "mlflow_run_id": trained.run_id,
            "parameters": trained.parameters,
            "best_phase": trained.best_phase,
            "epochs": trained.epochs,
            "catalog_hash": catalog_hash,
            "stats_hash": stats_digest,
            **metrics,
        },
    )


def lightgbm_baseline(store: PartitionStore, scope: PipelineScope) -> StageOutput:
    """LightGBM per horizon on the same dataset and splits; its val/test predictions."""
    dataset, days = stored_dataset(store)
    path = scope.settings.home.resolve() / "models" / "lightgbm" / f"{scope.catalog_hash}.json"
    splits = scope.config.splits.resolve(days)
    predictions = fit_lightgbm(dataset, scope.feature_columns, splits, scope.config, path)
    return StageOutput(predictions, metadata={"model": path, "rows": predictions.height})


def validation_predictions(
    store: PartitionStore, scope: PipelineScope, client: ClientConfig
) -> StageOutput:
    """ATFT-GAT-FAN, LightGBM, ridge, the rule and (when the server has one) the oracle on
    every val/test date. The blocking check requires ATFT-GAT-FAN on every val date without
    NaN; the health check fails any model constant on too many dates (not blocking: the report
    must still show a collapsed model, scored ≈ 0)."""
    from atft_pipeline.evaluation.health import prediction_health

    dataset, days = stored_dataset(store)
    splits = scope.config.splits.resolve(days)
    parts = [
        predict_atft(_checkpoint(store), dataset, store.read(STATS_ASSET), scope.config, evaluation_windows(splits)),
        store.read(LIGHTGBM_ASSET),
        fit_ridge(dataset, scope.feature_columns, splits, scope.config),
        rule_predictions(dataset, splits),
    ]
    key = client.api_key.get_secret_value() if client.api_key is not None else ""
    oracle = fetch_oracle(client.base_url, key, splits.val.start, splits.test.end)
    if oracle is not None:
        parts.append(oracle_predictions(oracle, dataset.filter("universe"), splits.split_expr()))
    predictions = pl.concat(parts, how="diagonal_relaxed").sort("model", "split", "horizon", "date", "code")
    val_dates = set(splits.val.days()) & set(days)
    coverage = prediction_coverage(predictions, val_dates)
    health = prediction_health(predictions, scope.config.evaluation.max_constant_share)
    return StageOutput(
        predictions,
        metadata={
            "rows": predictions.height,
            "models": sorted(predictions["model"].unique().to_list()),
            "val_dates": len(val_dates),
            "test_dates": len(set(splits.test.days()) & set(days)),
        },
        checks={
            PREDICTIONS_CHECK: CheckOutcome(
                passed=coverage.passed,
                metadata={
                    "atft_rows": coverage.rows,
                    "missing_val_dates": str(coverage.missing_val_dates[:10]),
                    "nan_predictions": coverage.nan_predictions,
                },
            ),
            HEALTH_CHECK: CheckOutcome(
                passed=health.passed,
                metadata={
                    "failing_models": health.failing,
                    "max_constant_share": health.max_constant_share,
                    "health": health.table.to_dicts(),
                },
                warn_only=True,
            ),
        },
    )


def evaluation_report(store: PartitionStore, scope: PipelineScope, run_id: str) -> StageOutput:
    """The metrics table and plots under ``ATFT_HOME/reports/<run>``, also logged as artifacts
    of the model's MLflow run; the plots are embedded in the metadata for the Dagster UI."""
    from atft_pipeline.evaluation.report import build_report, inline_images
    from atft_pipeline.training import MlflowTracker

    out_dir = scope.settings.home.resolve() / "reports" / run_id[:8]
    report = build_report(
        store.read(PREDICTIONS_ASSET), out_dir, "ATFT-GAT-FAN evaluation",
        cost_bp=scope.config.evaluation.cost_bp,
    )
    mlflow_run = store.read(MODEL_ASSET)["mlflow_run_id"][0]
    tracker = MlflowTracker(scope.settings.mlflow_uri, ATFT_MODEL, run_id=mlflow_run)
    for path in [report.path, *report.plots.values()]:
        tracker.log_artifact(path)
    return StageOutput(
        report.table,
        metadata={
            "report": Markdown(inline_images(report.markdown, report.plots)),
            "report_path": report.path,
            **{f"plot_{name}": p for name, p in report.plots.items()},
        },
    )


def latest_predictions(store: PartitionStore, dates: list[dt.date], scope: PipelineScope) -> StageOutput:
    """Next-day predictions for every stock of each date, ranked per date and horizon, from
    the stored dataset over ``LIVE_LOOKBACK`` sessions."""
    first = max(calendar.shift_trading_days(dates[0], -LIVE_LOOKBACK), scope.start)
    window = stored_keys(store, DATASET_ASSET, calendar.trading_days(first, dates[-1]))
    dataset = store.scan(DATASET_ASSET, window).collect()
    live = predict_atft(
        _checkpoint(store), dataset, store.read(STATS_ASSET), scope.config, {"live": (dates[0], dates[-1])}
    )
    ranked = live.with_columns(
        pl.col("prediction").rank("ordinal", descending=True).over("date", "horizon").alias("rank")
    ).sort("date", "horizon", "rank")
    return StageOutput(
        frames_by_partition(ranked, dates),
        metadata={"rows": ranked.height, "stocks": ranked["code"].n_unique()},
    )


_SUMMARY_COLUMNS = ["model", "split", "rank_ic", "ic", "rank_icir", "sharpe_gross", "sharpe_net",
                    "hit_rate", "rank_ic_vs_oracle"]


def report_summary(store: PartitionStore) -> pl.DataFrame | None:
    """The stored report's 1-day rows (the table ``atft run`` prints), or None before one."""
    if not store.exists(REPORT_ASSET):
        return None
    table = store.read(REPORT_ASSET).filter(pl.col("horizon") == 1)
    return table.select([c for c in _SUMMARY_COLUMNS if c in table.columns]).sort("split", "model")


def tune_atft(store: PartitionStore, scope: PipelineScope, space, storage_url: str, tags: dict[str, str]):
    """The hyperparameter study (``atft_pipeline.tuning``) on the stored dataset and stats;
    its files under ``ATFT_HOME/tuning/<study>``."""
    from atft_pipeline.tuning import run_study

    dataset, days = stored_dataset(store)
    return run_study(
        dataset, scope.feature_columns, store.read(STATS_ASSET), days, scope.config, space,
        storage_url=storage_url, out_dir=scope.settings.home.resolve() / "tuning" / space.study,
        tracking_uri=scope.settings.mlflow_uri, tags=tags,
    )
