"""Nightly operation simulated: the stand-in's clock moved night by night, and the stores a
sequence of nights leaves compared with a one-shot backfill (docs/nightly.md)."""
