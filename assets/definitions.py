"""The code location: every asset, check, job, schedule, sensor and resource.

Settings are read once from the environment (``atft_pipeline.settings.Settings``); the plan
decides which raw sources are entitled (the others are defined but disabled and left out of
the jobs). Importing this module must stay fast: nothing here imports torch.
"""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions, EnvVar

# Single-run backfill policies are the point of the raw assets; the beta notice is noise.
warnings.filterwarnings("ignore", category=BetaWarning)

from assets.dataset import build_dataset_asset, build_stats_asset
from assets.features import build_feature_asset, build_targets_asset
from assets.jobs import build_jobs, build_schedules
from assets.layout import Layout, resolve_layout
from assets.model import build_model_assets
from assets.raw import build_raw_assets
from assets.recovery import build_recovery_sensor
from atft_pipeline.config import PipelineConfig
from atft_pipeline.jquants.sources import RAW_SOURCES
from atft_pipeline.settings import Settings
from resources.jquants import JQuantsResource
from resources.storage import PolarsParquetIOManager, StorageResource


def build_resources(settings: Settings) -> dict:
    storage = StorageResource(root=str(settings.data_root.resolve()))
    return {
        "jquants": JQuantsResource(
            api_key=EnvVar("JQUANTS_API_KEY") if settings.api_key is not None else None,
            base_url=settings.base_url,
            plan=settings.effective_plan.value,
        ),
        "storage": storage,
        "parquet_io_manager": PolarsParquetIOManager(storage=storage),
    }


def build_assets(layout: Layout) -> list:
    catalog, start = layout.catalog, layout.start
    return [
        *build_raw_assets(start, layout.plan),
        *(build_feature_asset(catalog.family(n), start) for n in layout.families),
        build_targets_asset(start),
        build_dataset_asset(catalog, list(layout.families), layout.disabled, start, layout.config),
        build_stats_asset(catalog, list(layout.families), layout.config),
        *build_model_assets(layout),
    ]


def build_definitions(
    settings: Settings | None = None,
    resources: dict | None = None,
    config: PipelineConfig | None = None,
) -> Definitions:
    """The code location for ``settings`` (+ ``config``, default ``ATFT_HOME/config.yaml``);
    ``resources`` replaces individual resources by key."""
    layout = resolve_layout(settings or Settings.from_env(), config)
    jobs = build_jobs(layout)
    return Definitions(
        assets=build_assets(layout),
        jobs=jobs,
        schedules=build_schedules({j.name: j for j in jobs}),
        sensors=[build_recovery_sensor(list(RAW_SOURCES))],
        resources={**build_resources(layout.settings), **(resources or {})},
    )


defs = build_definitions()
