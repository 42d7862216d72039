"""An Optuna study over the model/training configuration, selected on validation only.

Each trial applies its values to the base configuration, trains ATFT-GAT-FAN on the train
window and scores the best validation RankIC(1d) of its phases (the same number that picks
the checkpoint in ``atft_model``). Trials are MLflow child runs of one parent run per study
session; the study lives in a relational database (the Dagster instance's Postgres or a SQLite
file beside the local instance), so a killed study resumes: finished trials are kept, a trial
that was running when the process died is marked failed and its values are tried again, and
only the missing trials run.

The test window never reaches a trial: the frame handed to training holds no row dated after
the validation window, and a searched key may not move the validation or test windows.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from atft_pipeline.config import ConfigError, PipelineConfig, dump_config
from atft_pipeline.dataset.splits import SplitConfig
from atft_pipeline.progress import progress_extra
from atft_pipeline.tuning.space import SearchSpace, apply_values

log = logging.getLogger(__name__)

TUNING_EXPERIMENT = "hyperparameter_search"
BEST_CONFIG = "best.yaml"


@dataclass(frozen=True)
class StudyResult:
    study: str
    best_params: dict[str, Any]
    best_value: float  # validation RankIC(1d) of the best trial
    best_trial: int
    complete: int
    pruned: int
    failed: int
    trials: pl.DataFrame  # number, state, value, params (one column per key)
    best_config: Path  # a configuration file `atft run --config` accepts
    parent_run_id: str


def selection_frame(dataset: pl.DataFrame, splits: SplitConfig) -> pl.DataFrame:
    """The rows a selection step may see: nothing dated after the validation window."""
    return dataset.filter(pl.col("date") <= splits.val.end)


def trial_splits(config: PipelineConfig, days: list[dt.date], base: SplitConfig) -> SplitConfig:
    """The trial's splits; ``ConfigError`` if its values moved validation or test."""
    splits = config.splits.resolve(days)
    if (splits.val, splits.test) != (base.val, base.test):
        raise ConfigError(
            "a searched key moves the validation/test windows "
            f"({splits.val}, {splits.test} instead of {base.val}, {base.test}); "
            "only the training window (splits.max_train_days) may be searched"
        )
    return splits


class _ReportBest:
    """Report the running best validation RankIC(1d) after every epoch; prune on request."""

    def __init__(self, trial) -> None:
        self.trial = trial
        self.best = float("-inf")

    def on_batch_start(self, phase, epoch, batch) -> None:
        return None

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        import optuna

        value = record["val_rank_ic_h1"]
        if value is None:
            return
        self.best = max(self.best, value)
        self.trial.report(self.best, record["global_epoch"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"validation RankIC(1d) {self.best:.4f} after epoch {record['global_epoch']} "
                "is below the median of earlier trials"
            )


def optuna_storage(url: str):
    import optuna

    return optuna.storages.RDBStorage(url)


def run_study(
    dataset: pl.DataFrame,
    features: list[str],
    stats: pl.DataFrame,
    days: list[dt.date],
    base: PipelineConfig,
    space: SearchSpace,
    *,
    storage_url: str,
    out_dir: Path,
    tracking_uri: str,
    tags: dict[str, str] | None = None,
) -> StudyResult:
    """Run ``space`` until it holds ``space.trials`` finished trials; write the best
    configuration to ``out_dir/best.yaml``."""
    import optuna
    from optuna.trial import TrialState

    from atft_pipeline.training import JsonTracker, MlflowTracker, MultiTracker, Panel, graph_config, train
    from atft_pipeline.training.tracking import tracked_run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base_splits = base.splits.resolve(days)
    frame = selection_frame(dataset, base_splits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = optuna_storage(storage_url)
    study = optuna.create_study(
        study_name=space.study,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=space.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=space.pruner.startup_trials, n_warmup_steps=space.pruner.warmup_epochs
        ),
        load_if_exists=True,
    )
    _recover_interrupted(study, storage)
    parent = MlflowTracker(
        tracking_uri, TUNING_EXPERIMENT, run_name=space.study,
        tags={"optuna_study": space.study, **(tags or {})},
    )

    panels: dict[tuple, Panel] = {}

    def objective(trial: optuna.Trial) -> float:
        values = {p.key: p.suggest(trial) for p in space.parameters}
        config = apply_values(base, values)
        splits = trial_splits(config, days, base_splits)
        model_config = config.model.build(len(features))
        # a trial scores one model: an ensemble's members differ only in their seeds
        training_config = config.training.build().model_copy(update={"ensemble_members": 1})
        # Trials that differ only in optimiser/loss/size settings share one panel (building
        # it ranks every feature per date: seconds at demo scale).
        key = (
            model_config.window, graph_config(model_config), model_config.input_normalization,
            config.training.graph_return_column,
        )
        if key not in panels:
            panels[key] = Panel.for_model(
                frame, stats, model_config, return_column=config.training.graph_return_column
            )
        panel = panels[key]
        run_dir = out_dir / "trials" / f"{trial.number:04d}"
        child = MlflowTracker(
            tracking_uri, TUNING_EXPERIMENT, run_name=f"{space.study} trial {trial.number}",
            tags={"mlflow.parentRunId": parent.run_id, "optuna_study": space.study,
                  "optuna_trial": str(trial.number)},
        )
        tracker = MultiTracker([child, JsonTracker(run_dir / "metrics.jsonl")])
        pruned = None
        with tracked_run(tracker):  # a pruned trial ends normally, tagged PRUNED
            tracker.log_params(values)
            try:
                result = train(
                    panel, splits, model_config, training_config, run_dir, tracker,
                    callbacks=[_ReportBest(trial)],
                )
            except optuna.TrialPruned as stop:
                child.set_tag("optuna_state", "PRUNED")
                pruned = stop
        if pruned is not None:
            log.info("trial %d: pruned (%s)", trial.number, pruned,
                     extra=progress_extra(f"trial {trial.number}", keep=True))
            raise pruned
        child.set_tag("optuna_state", "COMPLETE")
        log.info(
            "trial %d: validation RankIC(1d) %.4f with %s", trial.number, result.best_metric, values,
            extra=progress_extra(f"trial {trial.number}", keep=True),
        )
        return result.best_metric

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    with tracked_run(parent):
        parent.log_params({"study": space.study, "trials": space.trials, "seed": space.seed})
        remaining = space.trials - len(study.get_trials(deepcopy=False, states=finished))
        if remaining > 0:
            study.optimize(objective, n_trials=remaining)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise ValueError(f"study {space.study!r} has no complete trial (all pruned or failed)")
        best = study.best_trial
        path = out_dir / BEST_CONFIG
        dump_config(apply_values(base, best.params), path)
        parent.log_metrics({"best_val_rank_ic_1d": best.value}, step=0)
        parent.log_params({f"best.{k}": v for k, v in best.params.items()})
        parent.log_artifact(path)
    return StudyResult(
        study=space.study,
        best_params=dict(best.params),
        best_value=float(best.value),
        best_trial=best.number,
        complete=len(complete),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        trials=_trials_frame(trials),
        best_config=path,
        parent_run_id=parent.run_id,
    )


def _recover_interrupted(study, storage) -> None:
    """Trials still RUNNING belong to a process that died (a study runs in one process at a
    time): mark them failed and queue their values again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), trial.number
        )
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params)
        log.warning("trial %d was interrupted; its values are queued again", trial.number)


def _trials_frame(trials) -> pl.DataFrame:
    rows = [
        {"number": t.number, "state": t.state.name, "value": t.value, **t.params} for t in trials
    ]
    return pl.DataFrame(rows) if rows else pl.DataFrame()
