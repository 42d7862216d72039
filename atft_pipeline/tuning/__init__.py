"""Hyperparameter search over the model/training configuration (Optuna), selected on the
validation window only. Dagster-free; ``assets/tuning.py`` runs it as a job."""

from atft_pipeline.tuning.space import Parameter, PrunerSettings, SearchSpace, apply_values, load_search_space
from atft_pipeline.tuning.study import BEST_CONFIG, TUNING_EXPERIMENT, StudyResult, run_study, selection_frame

__all__ = [
    "BEST_CONFIG",
    "TUNING_EXPERIMENT",
    "Parameter",
    "PrunerSettings",
    "SearchSpace",
    "StudyResult",
    "apply_values",
    "load_search_space",
    "run_study",
    "selection_frame",
]
