"""Benchmarks (``python -m bench NAME``); results are recorded in BENCHMARKS.md."""
