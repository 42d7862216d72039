from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from atft_pipeline.jquants.client import ClientConfig, JQuantsClient
from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.jquants.sources import RAW_SOURCES, FetchedDays, fetch_raw_days
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread
from pydantic import SecretStr

DAYS = [dt.date(2023, 2, 1), dt.date(2023, 2, 2), dt.date(2023, 2, 3)]
SUITE_ASSETS = ("raw_daily_quotes", "raw_listed_info", "raw_topix")
API_KEY = "sandbox"


@pytest.fixture(scope="session")
def market():
    return generate_market(
        MarketConfig(seed=5, n_stocks=12, start=dt.date(2022, 12, 1), end=dt.date(2023, 3, 31))
    )


def fast_config(base_url: str, **overrides) -> ClientConfig:
    values = dict(
        base_url=base_url, api_key=SecretStr(API_KEY), plan=Plan.PREMIUM, backoff_base_s=0.01, backoff_max_s=0.05,
        backoff_429_s=0.02, min_backoff_429_s=0.0, max_retries=8, rate_limited=False,
    )
    return ClientConfig(**(values | overrides))


def fetch(base_url: str, asset: str, days=DAYS, **overrides) -> FetchedDays:
    async def run():
        async with JQuantsClient(fast_config(base_url, **overrides)) as client:
            return await fetch_raw_days(client, RAW_SOURCES[asset], days)

    return asyncio.run(run())


@pytest.fixture(scope="session")
def clean_frames(market):
    """Fault-free fetch of the suite's days for each asset: the baseline every case compares to."""
    with serve_in_thread(create_app(market.tables, settings=ServerSettings())) as server:
        return {asset: fetch(server.base_url, asset) for asset in SUITE_ASSETS}
