"""How an asset records its stage's output: write through the storage resource, then report
the stage's metadata and check outcomes to Dagster as one ``MaterializeResult``."""

from __future__ import annotations

import os
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    Failure,
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
    if output.blocked is not None:
        _write_accepted_and_fail(context, storage, asset, output)
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


def _write_accepted_and_fail(
    context: AssetExecutionContext, storage: StorageResource, asset: str, output: StageOutput
) -> None:
    """Some partitions were blocked (and quarantined): store the accepted ones, record each as
    materialized so the UI and the runner see exactly what exists, and fail the step naming
    the blocked ones, so no dependant runs on this step's output."""
    frames = output.frames if isinstance(output.frames, dict) else {}
    storage.write_output(asset, sorted(frames), frames)
    for key, frame in sorted(frames.items()):
        context.log_event(AssetMaterialization(asset, partition=key, metadata={"rows": frame.height}))
    raise Failure(output.blocked)


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


def stale_inputs(instance: DagsterInstance, asset: str, sources: list[str]) -> str:
    """Why ``asset``'s stored data predates what it was made from ('' when it does not): e.g.
    predictions older than a retrained model come from the previous model (their own rerun
    failed) and must not be reported as current."""
    own = instance.get_latest_materialization_event(AssetKey(asset))
    if own is None:
        return "never materialized"
    newer = [
        name
        for name in sources
        if (event := instance.get_latest_materialization_event(AssetKey(name))) is not None
        and event.timestamp > own.timestamp
    ]
    return f"older than the latest {', '.join(newer)}" if newer else ""


def refuse_stale_inputs(context: AssetExecutionContext, asset: str, sources: list[str]) -> None:
    """Fail the step when ``asset`` is stale (``stale_inputs``), naming why."""
    stale = stale_inputs(context.instance, asset, sources)
    if stale:
        raise Failure(f"{context.asset_key.path[-1]}: {asset} is stale ({stale}); rerun it first")
