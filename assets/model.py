"""Model assets (group ``model``): ATFT-GAT-FAN, the LightGBM baseline, validation predictions,
the evaluation report and the nightly next-day predictions."""

from functools import partial

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    asset,
)

from assets.partitions import partition_dates, trading_day_lookback, trading_day_partitions
from assets.stage_output import refuse_stale_inputs, write_stage_output
from atft_pipeline.names import (
    DATASET_ASSET,
    LATEST_ASSET,
    LIGHTGBM_ASSET,
    MODEL_ASSET,
    PREDICTIONS_ASSET,
    REPORT_ASSET,
    STATS_ASSET,
)
from atft_pipeline.stages import model as stages
from atft_pipeline.stages.model import HEALTH_CHECK, LIVE_LOOKBACK, PREDICTIONS_CHECK
from atft_pipeline.stages.scope import PipelineScope
from resources.jquants import JQuantsResource
from resources.storage import StorageResource

MODEL_GROUP = "model"
model_asset = partial(asset, group_name=MODEL_GROUP)


def build_model_assets(scope: PipelineScope) -> list[AssetsDefinition]:
    @model_asset(
        name=MODEL_ASSET,
        deps=[DATASET_ASSET, STATS_ASSET],
        kinds={"pytorch", "mlflow"},
        description="ATFT-GAT-FAN checkpoint (best validation RankIC over the phases) with its "
        "config, catalog hash and stats hash; trained with MLflow tracking, resumable.",
    )
    def atft_model(context: AssetExecutionContext, storage: StorageResource):
        output = stages.atft_model(storage.store(), scope, context.run.run_id)
        return write_stage_output(context, storage, output)

    @model_asset(
        name=LIGHTGBM_ASSET,
        deps=[DATASET_ASSET],
        kinds={"lightgbm"},
        description="LightGBM per horizon on the same dataset, splits and metrics; stores its "
        "validation/test predictions.",
    )
    def lightgbm_baseline(context: AssetExecutionContext, storage: StorageResource):
        return write_stage_output(context, storage, stages.lightgbm_baseline(storage.store(), scope))

    @model_asset(
        name=PREDICTIONS_ASSET,
        deps=[MODEL_ASSET, LIGHTGBM_ASSET, DATASET_ASSET, STATS_ASSET],
        kinds={"polars", "parquet"},
        description="Every val/test date × stock × horizon for ATFT-GAT-FAN, LightGBM, ridge, "
        "the momentum/reversal rule and (on the sandbox) the oracle; quantiles and targets.",
        check_specs=[
            AssetCheckSpec(PREDICTIONS_CHECK, asset=PREDICTIONS_ASSET, blocking=True),
            AssetCheckSpec(HEALTH_CHECK, asset=PREDICTIONS_ASSET),
        ],
    )
    def validation_predictions(
        context: AssetExecutionContext, storage: StorageResource, jquants: JQuantsResource
    ):
        output = stages.validation_predictions(storage.store(), scope, jquants.client)
        return write_stage_output(context, storage, output)

    @model_asset(
        name=REPORT_ASSET,
        deps=[PREDICTIONS_ASSET, MODEL_ASSET],
        kinds={"matplotlib", "mlflow"},
        description="Metrics table (ATFT-GAT-FAN vs LightGBM vs rule vs oracle), "
        "cumulative long-short, IC over time and decile plots; "
        "also logged to the model's MLflow run.",
    )
    def evaluation_report(context: AssetExecutionContext, storage: StorageResource):
        refuse_stale_inputs(context, PREDICTIONS_ASSET, [MODEL_ASSET, LIGHTGBM_ASSET])
        output = stages.evaluation_report(storage.store(), scope, context.run.run_id)
        return write_stage_output(context, storage, output)

    @model_asset(
        partitions_def=trading_day_partitions(scope.start, scope.last_partition),
        name=LATEST_ASSET,
        deps=[MODEL_ASSET, STATS_ASSET, AssetDep(DATASET_ASSET, partition_mapping=trading_day_lookback(LIVE_LOOKBACK))],
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"pytorch", "parquet"},
        description="Next-day ranked predictions for every stock of the partition date (the "
        "nightly deliverable), from the current atft_model.",
    )
    def latest_predictions(context: AssetExecutionContext, storage: StorageResource):
        dates = partition_dates(context.partition_keys)
        output = stages.latest_predictions(storage.store(), dates, scope)
        return write_stage_output(context, storage, output)

    return [atft_model, lightgbm_baseline, validation_predictions, evaluation_report, latest_predictions]
