"""Training of ATFT-GAT-FAN: dense panel feed, phased loop, checkpoints, tracking, predictions.

Dagster-free; the model assets call :func:`train_ensemble` (one member: :func:`train`) and
:func:`predict`.
"""

from atft_pipeline.training.checkpoint import load_checkpoint, load_model
from atft_pipeline.training.config import PhaseConfig, TrainingConfig, default_phases
from atft_pipeline.training.ensemble import train_ensemble
from atft_pipeline.training.loop import TrainCallback, TrainResult, horizon_metrics, train
from atft_pipeline.training.panel import Batch, Panel, PanelError, graph_config
from atft_pipeline.training.predict import MODEL_NAME, predict
from atft_pipeline.training.tracking import JsonTracker, MlflowTracker, MultiTracker, Tracker

__all__ = [
    "MODEL_NAME",
    "Batch",
    "JsonTracker",
    "MlflowTracker",
    "MultiTracker",
    "Panel",
    "PanelError",
    "PhaseConfig",
    "TrainCallback",
    "TrainResult",
    "Tracker",
    "TrainingConfig",
    "default_phases",
    "graph_config",
    "horizon_metrics",
    "load_checkpoint",
    "load_model",
    "predict",
    "train",
    "train_ensemble",
]
