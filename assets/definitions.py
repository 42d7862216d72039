"""The code location: every asset, check, job, schedule, sensor and resource.

Settings are read once from the environment (``atft_pipeline.settings.Settings``); the plan
decides which raw sources are entitled (the others are defined but disabled and left out of
the jobs). Importing this module must stay fast: nothing here imports torch.
"""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions

# Single-run backfill policies are the point of the raw assets; the beta notice is noise.
warnings.filterwarnings("ignore", category=BetaWarning)

from assets.dataset import build_dataset_asset, build_stats_asset
from assets.features import build_feature_asset, build_targets_asset
from assets.jobs import build_jobs, build_schedules
from assets.model import build_model_assets
from assets.quality import build_quality_job
from assets.raw import build_raw_assets
from assets.recovery import build_recovery_sensor
from assets.tuning import build_tuning_job
from atft_pipeline.config import PipelineConfig
from atft_pipeline.jquants.sources import RAW_SOURCES
from atft_pipeline.settings import Settings
from atft_pipeline.stages.scope import PipelineScope, resolve_scope
from resources.jquants import JQuantsResource
from resources.storage import StorageResource


def build_resources(settings: Settings) -> dict:
    return {
        "jquants": JQuantsResource(settings=settings),
        "storage": StorageResource(root=str(settings.data_root.resolve())),
    }


def build_assets(scope: PipelineScope) -> list:
    return [
        *build_raw_assets(scope.start, scope.plan, scope.last_partition),
        *(build_feature_asset(family, scope.start, scope.last_partition) for family in scope.enabled_families),
        build_targets_asset(scope.start, scope.last_partition),
        build_dataset_asset(scope),
        build_stats_asset(scope),
        *build_model_assets(scope),
    ]


def build_definitions(
    settings: Settings | None = None,
    resources: dict | None = None,
    config: PipelineConfig | None = None,
) -> Definitions:
    """The code location for ``settings`` (+ ``config``, default ``ATFT_HOME/config.yaml``);
    ``resources`` replaces individual resources by key."""
    scope = resolve_scope(settings or Settings.from_env(), config)
    jobs = build_jobs(scope)
    return Definitions(
        assets=build_assets(scope),
        jobs=[*jobs, build_quality_job(scope), build_tuning_job(scope)],
        schedules=build_schedules({j.name: j for j in jobs}),
        sensors=[
            build_recovery_sensor(list(RAW_SOURCES), scope.config.orchestration.recovery_sensor_interval_s)
        ],
        resources={**build_resources(scope.settings), **(resources or {})},
    )


defs = build_definitions()
