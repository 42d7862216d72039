"""Read the synthetic market's oracle from a stand-in server (``GET /_sandbox/oracle``)."""

from __future__ import annotations

import datetime as dt

import httpx
import polars as pl

from atft_pipeline.features.catalog import HORIZONS


def fetch_oracle(base_url: str, api_key: str, start: dt.date, end: dt.date) -> pl.DataFrame | None:
    """Oracle expected returns for ``[start, end]``, or None when the server has none (a real
    API or a replay of recorded data)."""
    root = base_url.rstrip("/").removesuffix("/v2")
    try:
        response = httpx.get(
            f"{root}/_sandbox/oracle",
            params={"from": start.isoformat(), "to": end.isoformat()},
            headers={"x-api-key": api_key},
            timeout=60.0,
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    frame = pl.read_json(response.content) if response.content.strip() != b"[]" else None
    if frame is None or frame.is_empty():
        return None
    return frame.with_columns(pl.col("date").str.to_date()).select(
        "date", "code", *(f"oracle_{h}d" for h in HORIZONS)
    )


def oracle_predictions(oracle: pl.DataFrame, dataset: pl.DataFrame, split: pl.Expr) -> pl.DataFrame:
    """The oracle as a model in the long predictions format, on the dataset's rows."""
    rows = dataset.select("date", "code", *(f"target_{h}d" for h in HORIZONS)).join(
        oracle, on=["date", "code"], how="inner"
    )
    parts = []
    for h in HORIZONS:
        parts.append(
            rows.select(
                "date",
                "code",
                pl.lit(h, dtype=pl.Int64).alias("horizon"),
                pl.col(f"oracle_{h}d").cast(pl.Float64).alias("prediction"),
                pl.col(f"target_{h}d").cast(pl.Float64).alias("target"),
            )
        )
    out = pl.concat(parts)
    return out.with_columns(
        split.alias("split"),
        pl.lit("oracle").alias("model"),
    ).filter(pl.col("split").is_not_null())
