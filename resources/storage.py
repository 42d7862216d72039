"""Storage resource and the Polars Parquet IO manager (one file per asset partition).

The published Polars IO-manager package passes arguments polars 2 removed, so this small one
wraps the library's ``PartitionStore`` instead: partitioned outputs are a dict
``{partition_key: DataFrame}`` (a single-run backfill writes every partition it covers) or a
DataFrame when the run covers one partition; inputs load lazily as one ``LazyFrame`` over all
requested partitions (a ``DataFrame`` when the parameter is annotated so).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
from dagster import (
    ConfigurableIOManager,
    ConfigurableResource,
    InputContext,
    MetadataValue,
    OutputContext,
)

from atft_pipeline.storage import PartitionStore


class StorageResource(ConfigurableResource):
    """Where asset data lives: a local directory or any UPath URL (``s3://bucket/atft``)."""

    root: str

    def store(self) -> PartitionStore:
        return PartitionStore(self.root)


class PolarsParquetIOManager(ConfigurableIOManager):
    storage: StorageResource

    def _asset(self, context: OutputContext | InputContext) -> str:
        return context.asset_key.path[-1]

    def handle_output(self, context: OutputContext, obj: object) -> None:
        if obj is None:
            return
        store = self.storage.store()
        asset = self._asset(context)
        if not context.has_asset_partitions:
            frame = _as_frame(obj, asset)
            path = store.write(asset, None, frame)
            context.add_output_metadata({"path": MetadataValue.path(str(path)), "rows": frame.height})
            return
        keys = list(context.asset_partition_keys)
        if isinstance(obj, Mapping):
            frames = {str(k): _as_frame(v, asset) for k, v in obj.items()}
        elif len(keys) == 1:
            frames = {keys[0]: _as_frame(obj, asset)}
        else:
            raise TypeError(
                f"asset {asset!r}: a run over {len(keys)} partitions must return "
                "a dict {partition_key: DataFrame}"
            )
        if set(frames) != set(keys):
            missing = sorted(set(keys) - set(frames))
            extra = sorted(set(frames) - set(keys))
            raise ValueError(
                f"asset {asset!r}: output partitions do not match the run's partitions "
                f"(missing {missing[:5]}, unexpected {extra[:5]})"
            )
        for key in keys:
            store.write(asset, key, frames[key])
        context.add_output_metadata(
            {
                "files": len(keys),
                "rows": sum(f.height for f in frames.values()),
                "root": MetadataValue.path(str(store.root / asset)),
            }
        )

    def load_input(self, context: InputContext) -> pl.LazyFrame | pl.DataFrame:
        store = self.storage.store()
        asset = self._asset(context)
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else None
        lazy = store.scan(asset, keys)
        if context.dagster_type.typing_type is pl.DataFrame:
            return lazy.collect()
        return lazy


def _as_frame(obj: object, asset: str) -> pl.DataFrame:
    if isinstance(obj, pl.LazyFrame):
        return obj.collect()
    if isinstance(obj, pl.DataFrame):
        return obj
    raise TypeError(f"asset {asset!r}: expected a polars DataFrame, got {type(obj).__name__}")
