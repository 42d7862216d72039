"""Dagster resources wrapping the domain library: J-Quants client, partition storage."""

from resources.jquants import JQuantsResource
from resources.storage import PolarsParquetIOManager, StorageResource

__all__ = ["JQuantsResource", "PolarsParquetIOManager", "StorageResource"]
