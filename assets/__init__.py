"""Dagster assets, checks, partitions, jobs, schedules and sensors (``assets.definitions``)."""
