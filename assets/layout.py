"""What the code location contains for given settings + configuration, decided in one place.

The plan entitles raw sources; the feature families whose sources are all entitled (minus the
configuration's ``disabled`` list) build the dataset. The Definitions, the jobs and
``atft run`` all read this one object, so they can never disagree about what exists.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from atft_pipeline.config import PipelineConfig, load_config
from atft_pipeline.features.catalog import FeatureCatalog
from atft_pipeline.features.registry import default_catalog, enabled_families
from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.jquants.sources import RAW_SOURCES
from atft_pipeline.settings import Settings

CALENDAR_ASSET = "raw_trading_calendar"
TARGETS_ASSET = "targets"
DATASET_ASSET = "ml_dataset"
STATS_ASSET = "normalization_stats"
MODEL_ASSETS = ("atft_model", "lightgbm_baseline", "validation_predictions", "evaluation_report")
LATEST_ASSET = "latest_predictions"


@dataclass(frozen=True)
class Layout:
    settings: Settings
    config: PipelineConfig
    catalog: FeatureCatalog
    families: tuple[str, ...]  # enabled feature families, catalog order
    disabled: dict[str, str]  # family -> why it is off

    @property
    def plan(self) -> Plan:
        return self.settings.effective_plan

    @property
    def start(self) -> dt.date:
        return self.settings.effective_start_date

    @property
    def raw_assets(self) -> list[str]:
        """Entitled raw sources (partitioned), registry order."""
        return [s.asset for s in RAW_SOURCES.values() if self.plan.covers(s.plan)]

    @property
    def feature_assets(self) -> list[str]:
        return [self.catalog.family(n).asset for n in self.families]

    def pipeline_assets(self) -> list[str]:
        """Every asset ``atft run`` materializes, upstream first."""
        return [
            CALENDAR_ASSET,
            *self.raw_assets,
            *self.feature_assets,
            TARGETS_ASSET,
            DATASET_ASSET,
            STATS_ASSET,
            *MODEL_ASSETS,
            LATEST_ASSET,
        ]


def config_path(settings: Settings):
    return settings.home / "config.yaml"


def resolve_layout(settings: Settings, config: PipelineConfig | None = None) -> Layout:
    if config is None:
        path = config_path(settings)
        config = load_config(path if path.exists() else None)
    catalog = default_catalog()
    enabled = enabled_families(catalog, settings.effective_plan, config.dataset.families, config.dataset.disabled)
    disabled = {}
    for fam in catalog.enabled():
        if fam.name in enabled:
            continue
        if fam.name in config.dataset.disabled:
            disabled[fam.name] = "disabled by configuration"
        else:
            needs = sorted({RAW_SOURCES[s].plan.value for s in fam.sources if s in RAW_SOURCES})
            disabled[fam.name] = f"plan '{settings.effective_plan.value}' lacks its sources (needs {needs})"
    return Layout(settings, config, catalog, tuple(enabled), disabled)
