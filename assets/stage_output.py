"""How an asset records its stage's output: write through the storage resource, then report
the stage's metadata and check outcomes to Dagster as one ``MaterializeResult``."""

from __future__ import annotations

import os
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
)

from atft_pipeline.stages import Markdown, StageOutput
from resources.storage import StorageResource


def write_stage_output(
    context: AssetExecutionContext, storage: StorageResource, output: StageOutput
) -> MaterializeResult:
    asset = context.asset_key.path[-1]
    keys = list(context.partition_keys) if context.assets_def.partitions_def is not None else None
    written = storage.write_output(asset, keys, output.frames)
    checks = [
        AssetCheckResult(
            check_name=name,
            passed=check.passed,
            severity=AssetCheckSeverity.WARN if check.warn_only else AssetCheckSeverity.ERROR,
            metadata=_dagster_metadata(check.metadata),
        )
        for name, check in output.checks.items()
    ]
    return MaterializeResult(
        metadata=_dagster_metadata({**output.metadata, **written}), check_results=checks
    )


def _dagster_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: _value(value) for key, value in metadata.items()}


def _value(value: Any) -> Any:
    if isinstance(value, Markdown):
        return MetadataValue.md(str(value))
    if isinstance(value, os.PathLike):
        return MetadataValue.path(os.fspath(value))
    if isinstance(value, list | dict):
        return MetadataValue.json(value)
    return value
