"""Targets, dataset assembly, splits and normalization."""
