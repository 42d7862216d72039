"""ATFT-GAT-FAN as an MLflow pyfunc model, registered with its signature.

Input: ``ml_dataset`` rows (meta, features, targets — targets may be null) of the partition to
score plus the ``window - 1`` trading days before it, ``date`` as ISO text; more history is
fine. Output: the next-day predictions (``predict``'s columns, ``date`` as ISO text) of every
stock of the input's last date, e.g.

    mlflow models predict -m models:/atft_gat_fan/1 -i rows.json -t json --env-manager local

The model's files: the checkpoint, the normalization statistics it was trained with, and the
``atft_pipeline`` package itself (``code_paths``), so any environment with the pinned
dependencies can load it. ``mlflow`` is imported here; the trainer imports this lazily.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import polars as pl
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel

REGISTERED_MODEL = "atft_gat_fan"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # atft_pipeline/
# What loading the model imports (besides atft_pipeline, shipped with it).
REQUIREMENTS = ("mlflow", "torch", "torch-geometric", "polars", "pyarrow", "pandas", "numpy")


def score_last_date(
    model, stats: pl.DataFrame, return_column: str, rows: pl.DataFrame
) -> pl.DataFrame:
    """Predictions of ``model`` for every stock of the last date in ``rows``."""
    from atft_pipeline.training.panel import Panel
    from atft_pipeline.training.predict import predict

    panel = Panel.for_model(rows, stats, model.config, return_column=return_column)
    last = rows["date"].max()
    indices = panel.date_indices(last, last)
    if indices.size == 0:
        raise ValueError(
            f"no stock of {last} can be scored: send its {model.config.window - 1} preceding trading days too"
        )
    return predict(model, panel, indices, "live")


def to_wire(frame: pl.DataFrame) -> pd.DataFrame:
    """Polars -> the pandas frame MLflow serializes: dates as ISO text."""
    return frame.with_columns(pl.col(pl.Date).dt.to_string("%Y-%m-%d")).to_pandas()


def from_wire(frame: pd.DataFrame) -> pl.DataFrame:
    rows = pl.from_pandas(frame)
    if rows.schema["date"] == pl.String:
        rows = rows.with_columns(pl.col("date").str.to_date("%Y-%m-%d"))
    elif rows.schema["date"] != pl.Date:
        rows = rows.with_columns(pl.col("date").cast(pl.Date))
    return rows


class AtftGatFanModel(PythonModel):
    """The pyfunc wrapper around one checkpoint (loaded on the CPU)."""

    def load_context(self, context) -> None:
        from atft_pipeline.training.checkpoint import load_model

        self.model, _ = load_model(Path(context.artifacts["checkpoint"]))
        self.stats = pl.read_parquet(context.artifacts["stats"])
        self.return_column = context.model_config["return_column"]

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        rows = from_wire(model_input)
        return to_wire(score_last_date(self.model, self.stats, self.return_column, rows))


def register_model(
    tracking_uri: str,
    run_id: str,
    checkpoint: Path,
    stats: pl.DataFrame,
    return_column: str,
    example: pl.DataFrame,
    name: str = REGISTERED_MODEL,
) -> str:
    """Log the checkpoint as a pyfunc model into run ``run_id`` and register it as ``name``;
    the signature is inferred from ``example`` (dataset rows) and the model's own output on
    it. Returns the registered version."""
    from atft_pipeline.training.checkpoint import load_model

    model, _ = load_model(checkpoint)
    output = score_last_date(model, stats, return_column, example)
    signature = infer_signature(to_wire(example), to_wire(output))
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "normalization_stats.parquet"
        stats.write_parquet(stats_path)
        # start_run(run_id=...) re-enters the training run; leaving it ends that run again.
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=AtftGatFanModel(),
                artifacts={"checkpoint": str(checkpoint), "stats": str(stats_path)},
                model_config={"return_column": return_column},
                code_paths=[str(PACKAGE_DIR)],
                signature=signature,
                pip_requirements=[f"{p}=={version(p)}" for p in REQUIREMENTS],
                registered_model_name=name,
            )
    return str(info.registered_model_version)


def scoring_rows(dataset: pl.DataFrame, last: dt.date, window: int) -> pl.DataFrame:
    """The rows that score ``last``: its partition and the ``window - 1`` dates before it."""
    dates = sorted(d for d in dataset["date"].unique().to_list() if d <= last)[-window:]
    return dataset.filter(pl.col("date").is_in(dates)).sort("date", "code")
