"""What the pipeline contains for given settings + configuration, decided in one place.

The plan entitles raw sources; the feature families whose sources are all entitled (minus the
configuration's ``disabled`` list) build the dataset. The Definitions, the jobs, ``atft run``
and every stage read this one object, so they can never disagree about what exists.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from atft_pipeline.config import PipelineConfig, load_config
from atft_pipeline.features.catalog import FeatureCatalog, FeatureFamily
from atft_pipeline.features.registry import (
    default_catalog,
    enabled_families,
    missing_sources,
    required_plan,
)
from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.jquants.sources import RAW_SOURCES
from atft_pipeline.names import (
    CALENDAR_ASSET,
    DATASET_ASSET,
    LATEST_ASSET,
    MODEL_ASSETS,
    STATS_ASSET,
    TARGETS_ASSET,
)
from atft_pipeline.settings import Settings


@dataclass(frozen=True)
class PipelineScope:
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
    def last_partition(self) -> dt.date | None:
        """The data's last session when it is known (a sandbox market), else None (the
        partitions run to tonight's session)."""
        return self.settings.last_session

    @property
    def enabled_families(self) -> list[FeatureFamily]:
        return [self.catalog.family(n) for n in self.families]

    @property
    def feature_columns(self) -> list[str]:
        """The model's inputs: every enabled catalog feature, in dataset column order."""
        return self.catalog.feature_columns(list(self.families))

    @property
    def catalog_hash(self) -> str:
        return self.catalog.hash(list(self.families))

    @property
    def raw_assets(self) -> list[str]:
        """Entitled raw sources (partitioned), registry order."""
        return [s.asset for s in RAW_SOURCES.values() if self.plan.covers(s.plan)]

    @property
    def feature_assets(self) -> list[str]:
        return [f.asset for f in self.enabled_families]

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


def config_path(settings: Settings) -> Path:
    return settings.home / "config.yaml"


def resolve_scope(settings: Settings, config: PipelineConfig | None = None) -> PipelineScope:
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
        elif not missing_sources(fam, settings.effective_plan):
            disabled[fam.name] = "not in dataset.families"
        else:
            plan = settings.effective_plan
            lacking = missing_sources(fam, plan)
            disabled[fam.name] = (
                f"plan '{plan.value}' lacks {', '.join(lacking)} (plan "
                f"'{required_plan(fam).value}' has {'them' if len(lacking) > 1 else 'it'})"
            )
    return PipelineScope(settings, config, catalog, tuple(enabled), disabled)
