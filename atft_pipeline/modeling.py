"""Model-stage functions the Dagster model assets call (one each): train ATFT-GAT-FAN, fit the
LightGBM baseline, score the rule, predict, and predict the next day.

Everything here works on an in-memory ``ml_dataset`` frame plus the normalization statistics,
so it is testable without Dagster. torch is imported lazily: the code location stays light.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from atft_pipeline.config import PipelineConfig
from atft_pipeline.dataset.splits import SplitConfig
from atft_pipeline.features.catalog import META_COLUMNS, TARGET_COLUMNS

ATFT_MODEL = "atft_gat_fan"


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


def feature_columns(dataset: pl.DataFrame) -> list[str]:
    reserved = {*META_COLUMNS, *TARGET_COLUMNS}
    return [c for c in dataset.columns if c not in reserved]


def _panel(dataset: pl.DataFrame, stats: pl.DataFrame, config: PipelineConfig, model_config):
    from atft_pipeline.training import Panel, graph_config

    return Panel.from_dataset(
        dataset,
        stats,
        return_column=config.training.graph_return_column,
        window=model_config.window,
        graph=graph_config(model_config),
    )


def train_atft(
    dataset: pl.DataFrame,
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
    from atft_pipeline.training import JsonTracker, MlflowTracker, MultiTracker, train
    from atft_pipeline.training.mlflow_model import register_model, scoring_rows
    from atft_pipeline.training.tracking import run_name, tracked_run

    model_config = config.model.build(len(feature_columns(dataset)))
    training_config = config.training.build()
    panel = _panel(dataset, stats, config, model_config)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(
        ATFT_MODEL,
        {
            "model": model_config.model_dump(mode="json"),
            "training": training_config.model_dump(mode="json"),
        },
        splits.train.start,
        splits.val.end,
    )
    mlflow = MlflowTracker(tracking_uri, experiment="atft_gat_fan", run_name=name, tags=tags)
    tracker = MultiTracker([mlflow, JsonTracker(run_dir / "metrics.jsonl")])
    with tracked_run(tracker):  # the run ends FINISHED, FAILED or KILLED, never left RUNNING
        tracker.log_params({**tags, "parameters": model_config.parameter_count()})
        result = train(
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
    panel = _panel(dataset, stats, config, model.config)
    parts = []
    for split, (start, end) in windows.items():
        indices = panel.date_indices(start, end)
        if indices.size:
            parts.append(predict(model, panel, indices, split))
    if not parts:
        raise ValueError(f"no dates with valid stocks in {windows}")
    return pl.concat(parts)


def fit_lightgbm(
    dataset: pl.DataFrame, splits: SplitConfig, config: PipelineConfig, model_path: Path
) -> pl.DataFrame:
    """Fit one LightGBM per horizon (early-stopped on val), save it, predict val + test."""
    from atft_pipeline.evaluation.baselines import train_lightgbm_baseline

    features = feature_columns(dataset)
    universe = dataset.filter("universe")
    part = {name: universe.filter(splits.split_expr() == name) for name in ("train", "val", "test")}
    baseline = train_lightgbm_baseline(
        part["train"], part["val"], features, config.evaluation.lightgbm_config()
    )
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_suffix(".tmp")
    tmp.write_text(baseline.to_json())
    tmp.replace(model_path)
    return pl.concat([baseline.predict(part["val"], "val"), baseline.predict(part["test"], "test")])


def fit_ridge(dataset: pl.DataFrame, splits: SplitConfig, config: PipelineConfig) -> pl.DataFrame:
    """Fit one ridge per horizon (penalty chosen on val RankIC); predict val + test."""
    from atft_pipeline.evaluation.baselines import ridge_predictions

    universe = dataset.filter("universe")
    part = {name: universe.filter(splits.split_expr() == name) for name in ("train", "val", "test")}
    return ridge_predictions(
        part["train"], part["val"], part["test"], feature_columns(dataset), config.evaluation.ridge_config()
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
