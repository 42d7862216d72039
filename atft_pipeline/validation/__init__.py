"""Data-quality schemas for the raw J-Quants assets (pandera, polars backend).

Domain code only: the Dagster layer wraps ``validate_raw`` as asset checks, mapping
``Severity.ERROR`` to blocking checks and ``Severity.WARN`` to warnings.
"""

from atft_pipeline.validation.raw_schemas import (
    CALENDAR_ASSET,
    RAW_ASSET_SPECS,
    raw_schema,
    severity,
)
from atft_pipeline.validation.result import (
    Failure,
    RawValidationResult,
    split_by_validation,
    validate_raw,
    validate_raw_partitions,
)
from atft_pipeline.validation.rules import Severity

__all__ = [
    "CALENDAR_ASSET",
    "RAW_ASSET_SPECS",
    "Failure",
    "RawValidationResult",
    "Severity",
    "raw_schema",
    "severity",
    "split_by_validation",
    "validate_raw",
    "validate_raw_partitions",
]
