"""atft-pipeline domain library (no Dagster imports below this package)."""

__version__ = "0.1.0"
