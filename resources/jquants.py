"""The J-Quants resource: plan, endpoint and secret, wrapping the async client.

The API key comes from ``EnvVar("JQUANTS_API_KEY")`` (set by the Definitions) and never from run
config. With neither a key nor a base URL, the resource starts the embedded sandbox market's
stand-in server in-process, so every code path, HTTP included, runs offline.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import polars as pl
from dagster import Config, ConfigurableResource
from pydantic import Field, SecretStr

from atft_pipeline.jquants.client import ClientConfig, ClientStats, JQuantsClient
from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.dataset.splits import SplitConfig
from atft_pipeline.jquants.sources import RawSource, fetch_raw_days
from atft_pipeline.sandbox.oracle_client import fetch_oracle, oracle_predictions
from atft_pipeline.settings import PUBLIC_BASE_URL, SANDBOX_API_KEY


class SandboxMarket(Config):
    """The synthetic market the embedded stand-in server serves when no API key is set."""

    seed: int = 7
    n_stocks: int = 300
    start: str = "2021-01-04"
    end: str = "2023-12-29"


class JQuantsResource(ConfigurableResource):
    api_key: str | None = Field(default=None, description="V2 API key (from JQUANTS_API_KEY)")
    base_url: str | None = Field(default=None, description="None: public V2 URL, or the sandbox")
    plan: str = Field(default="premium", description="free | light | standard | premium")
    max_concurrency: int = Field(default=4, ge=1, le=32)
    max_retries: int = Field(default=5, ge=0)
    backoff_429_s: float = Field(default=60.0, gt=0, description="wait after a 429")
    min_backoff_429_s: float = Field(
        default=60.0, ge=0, description="floor for backoff_429_s; lowered only against stand-ins"
    )
    backoff_base_s: float = Field(default=1.0, gt=0, description="first 5xx/timeout backoff")
    timeout_s: float = Field(default=60.0, gt=0)
    sandbox: SandboxMarket = SandboxMarket()

    @property
    def plan_enum(self) -> Plan:
        return Plan(self.plan.lower())

    @property
    def is_sandbox(self) -> bool:
        return self.api_key is None and self.base_url is None

    def client_config(self) -> ClientConfig:
        if self.is_sandbox:
            from atft_pipeline.sandbox.embedded import embedded_sandbox_url

            base_url = embedded_sandbox_url(
                seed=self.sandbox.seed,
                n_stocks=self.sandbox.n_stocks,
                start=dt.date.fromisoformat(self.sandbox.start),
                end=dt.date.fromisoformat(self.sandbox.end),
            )
            key = SANDBOX_API_KEY
        else:
            base_url = self.base_url or PUBLIC_BASE_URL
            key = self.api_key or SANDBOX_API_KEY
        return ClientConfig(
            base_url=base_url,
            api_key=SecretStr(key),
            plan=self.plan_enum,
            max_concurrency=self.max_concurrency,
            max_retries=self.max_retries,
            backoff_429_s=self.backoff_429_s,
            min_backoff_429_s=self.min_backoff_429_s,
            backoff_base_s=self.backoff_base_s,
            timeout_s=self.timeout_s,
            rate_limited=not _is_loopback(base_url),
        )

    def fetch_days(
        self, source: RawSource, days: list[dt.date]
    ) -> tuple[dict[dt.date, pl.DataFrame], ClientStats]:
        async def run():
            async with JQuantsClient(self.client_config()) as client:
                return await fetch_raw_days(client, source, days), client.stats

        return asyncio.run(run())

    def sandbox_oracle(
        self, start: dt.date, end: dt.date, dataset: pl.DataFrame, splits: SplitConfig
    ) -> pl.DataFrame | None:
        """The synthetic market's oracle as a model in the predictions format, when the server
        is a sandbox stand-in that has one (None for the real API or a replay)."""
        config = self.client_config()
        oracle = fetch_oracle(config.base_url, config.api_key.get_secret_value(), start, end)
        if oracle is None:
            return None
        return oracle_predictions(oracle, dataset.filter("universe"), splits.split_expr())

    def fetch_calendar(self) -> tuple[pl.DataFrame, ClientStats]:
        async def run():
            async with JQuantsClient(self.client_config()) as client:
                return await client.get(ENDPOINTS["markets/calendar"]), client.stats

        return asyncio.run(run())


def _is_loopback(url: str) -> bool:
    import ipaddress

    import httpx

    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
