"""Dagster resources wrapping the domain library: J-Quants client, partition storage."""

from resources.jquants import JQuantsResource
from resources.storage import StorageResource

__all__ = ["JQuantsResource", "StorageResource"]
