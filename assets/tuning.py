"""``hyperparameter_search``: an Optuna study over the model/training configuration as a job
(one op calling ``atft_pipeline.tuning.run_study``).

It reads the stored ``ml_dataset`` and ``normalization_stats`` (materialize the dataset first),
selects on the validation window only, and writes the best configuration to
``ATFT_HOME/tuning/<study>/best.yaml`` (``atft run --config`` accepts it). The study lives in the
instance's database: the deployment's Postgres (``ATFT_POSTGRES_URL``) or
``ATFT_HOME/dagster/optuna.db`` beside the local instance; re-running the job resumes it. Run
config: the search file and, optionally, a different number of trials.
"""

from pathlib import Path

from dagster import AssetObservation, Config, MetadataValue, OpExecutionContext, job, op

from atft_pipeline.settings import Settings
from atft_pipeline.stages.scope import PipelineScope
from resources.storage import StorageResource

TUNING_JOB = "hyperparameter_search"
DEFAULT_SEARCH = "configs/tuning.yaml"
REPO_ROOT = Path(__file__).resolve().parent.parent


def search_path(search: str) -> Path:
    """A relative search file is relative to the repository (the UI's code server may run
    elsewhere)."""
    path = Path(search)
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


class TuningRunConfig(Config):
    search: str = DEFAULT_SEARCH  # the search file (study, trials, pruner, parameters)
    trials: int | None = None  # finished trials the study should end with (default: the file's)


def optuna_storage_url(settings: Settings) -> str:
    if settings.postgres_url is not None:
        return settings.postgres_url.get_secret_value()
    path = (settings.dagster_home / "optuna.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.as_posix()}"


def build_tuning_job(scope: PipelineScope):
    @op(name="hyperparameter_search_study")
    def study_op(context: OpExecutionContext, config: TuningRunConfig, storage: StorageResource) -> None:
        from atft_pipeline.stages.model import tune_atft
        from atft_pipeline.tuning import load_search_space

        space = load_search_space(search_path(config.search), scope.config)
        if config.trials is not None:
            space = space.model_copy(update={"trials": config.trials})
        result = tune_atft(
            storage.store(), scope, space, optuna_storage_url(scope.settings),
            tags={"dagster_run_id": context.run_id},
        )
        context.log.info(
            f"study {result.study}: best validation RankIC(1d) {result.best_value:.4f} (trial "
            f"{result.best_trial}), {result.complete} complete, {result.pruned} pruned, "
            f"{result.failed} failed; best configuration: {result.best_config}"
        )
        context.log_event(
            AssetObservation(
                asset_key=TUNING_JOB,
                metadata={
                    "best_config": MetadataValue.path(str(result.best_config)),
                    "best_val_rank_ic_1d": result.best_value,
                    "best_params": MetadataValue.json(result.best_params),
                    "trials": MetadataValue.md(_markdown(result.trials)),
                    "mlflow_run_id": result.parent_run_id,
                },
            )
        )

    @job(
        name=TUNING_JOB,
        description="Optuna study over the model/training configuration on the stored dataset, "
        "selected on validation RankIC(1d) only; resumable; writes the best configuration file.",
    )
    def tuning_job():
        study_op()

    return tuning_job


def _markdown(frame) -> str:
    import polars as pl

    with pl.Config(
        tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
        tbl_rows=-1, tbl_cols=-1,
    ):
        return str(frame)


def run_tuning(settings: Settings, search: str, trials: int | None = None, *, verbose: bool = False) -> int:
    """``atft tune``: the job through the code location on the persistent instance; one line
    per finished trial while it runs, then the trial table and the best configuration."""
    import datetime as dt

    from dagster import DagsterInstance

    from assets.definitions import build_definitions
    from assets.instance import configure_dagster_process, ensure_dagster_home
    from assets.runner import StageLog
    from atft_pipeline.errors import UsageError
    from atft_pipeline.names import DATASET_ASSET
    from atft_pipeline.stages.scope import resolve_scope
    from atft_pipeline.storage import PartitionStore
    from atft_pipeline.tuning import load_search_space

    scope = resolve_scope(settings)
    space = load_search_space(search_path(search), scope.config)  # a bad file stops here
    if not PartitionStore(settings.data_root).partitions(DATASET_ASSET):
        raise UsageError(f"no stored ml_dataset in {settings.data_root}: run `atft run` (or `atft demo`) first")
    log = StageLog(
        settings.home.resolve() / "logs" / f"tune-{dt.datetime.now():%Y%m%d-%H%M%S}.log",
        echo=verbose, progress=lambda update: print(update.message) if update.keep else None,
    )
    print(f"study {space.study}: {trials or space.trials} trials on {settings.data_root.resolve()}; "
          f"Dagster's logs: {log.path}")
    configure_dagster_process()
    defs = build_definitions(settings, config=scope.config)
    run_config = {"ops": {"hyperparameter_search_study": {"config": {"search": str(search), "trials": trials}}}}
    with DagsterInstance.from_config(str(ensure_dagster_home(settings))) as instance, log.capture(TUNING_JOB):
        outcome = defs.resolve_job_def(TUNING_JOB).execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
    if not outcome.success:
        print(f"{TUNING_JOB} failed (run {outcome.run_id}); see {log.path}. Re-running resumes the study.")
        return 1
    observation = next(
        e.event_specific_data.asset_observation
        for e in outcome.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    )
    metadata = observation.metadata
    print(metadata["trials"].value)
    print(f"best validation RankIC(1d) {metadata['best_val_rank_ic_1d'].value:.4f}: "
          f"{metadata['best_params'].value}")
    print(f"best configuration: {metadata['best_config'].value}  (atft run --config accepts it)")
    return 0
