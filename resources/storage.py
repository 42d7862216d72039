"""The storage resource: every asset reads and writes its data through it (one file per asset
partition, ``atft_pipeline.storage.PartitionStore``).

Stages read from ``store()``; an asset writes its stage's frames with ``write_output``, which
checks that a partitioned output covers exactly the run's partitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl
from dagster import ConfigurableResource

from atft_pipeline.progress import Counter
from atft_pipeline.storage import PartitionStore


class StorageResource(ConfigurableResource):
    """Where asset data lives: a local directory or any UPath URL (``s3://bucket/atft``)."""

    root: str

    def store(self) -> PartitionStore:
        return PartitionStore(self.root)

    def write_output(
        self,
        asset: str,
        partition_keys: Sequence[str] | None,
        output: Mapping[str, pl.DataFrame] | pl.DataFrame,
    ) -> dict[str, object]:
        """Write ``{partition_key: frame}`` (or one frame when the asset is unpartitioned or
        the run covers one partition); returns the metadata to record."""
        store = self.store()
        if partition_keys is None:
            frame = _as_frame(output, asset)
            return {"path": store.write(asset, None, frame), "rows": frame.height}
        keys = list(partition_keys)
        if isinstance(output, Mapping):
            frames = {str(k): _as_frame(v, asset) for k, v in output.items()}
        elif len(keys) == 1:
            frames = {keys[0]: _as_frame(output, asset)}
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
        counter = Counter("partitions written", len(keys))
        for key in keys:
            store.write(asset, key, frames[key])
            counter.advance()
        return {
            "files": len(keys),
            "rows": sum(f.height for f in frames.values()),
            "root": store.root / asset,
        }


def _as_frame(obj: object, asset: str) -> pl.DataFrame:
    if isinstance(obj, pl.DataFrame):
        return obj
    raise TypeError(f"asset {asset!r}: expected a polars DataFrame, got {type(obj).__name__}")
