"""The API key never appears in reprs, errors, logs or anything written by a failing run."""

from __future__ import annotations

import asyncio
import logging

import httpx
from pydantic import SecretStr

from atft_pipeline.jquants.client import JQuantsClient
from atft_pipeline.jquants.sources import RAW_SOURCES, fetch_raw_days
from atft_pipeline.sandbox.faults import FaultSettings
from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread
from atft_pipeline.storage import PartitionStore
from atft_pipeline.validation.gate import gate_raw_partitions
from tests.reliability.cases import SECRETS
from tests.reliability.conftest import DAYS, fast_config

KEY = "k3y-Th4t-must-n3ver-leak"


def test_config_and_client_reprs_mask_the_key():
    assert SECRETS[0].startswith("client config")
    config = fast_config("http://127.0.0.1:9").model_copy(update={"api_key": SecretStr(KEY)})
    assert KEY not in repr(config) and KEY not in str(config)
    assert KEY not in repr(JQuantsClient(config))


def _failing_fetch(server_url: str):
    config = fast_config(server_url, max_retries=2).model_copy(update={"api_key": SecretStr(KEY)})
    bad = DAYS[0].isoformat()

    class Malformed(httpx.AsyncBaseTransport):
        inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request):
            if request.url.params.get("date") == bad:
                return httpx.Response(200, content=b'{"data": [')
            return await self.inner.handle_async_request(request)

    async def run():
        async with JQuantsClient(config, transport=Malformed()) as client:
            return await fetch_raw_days(client, RAW_SOURCES["raw_daily_quotes"], DAYS)

    return asyncio.run(run())


def test_errors_and_logs_of_a_failing_run_never_contain_the_key(market, caplog, tmp_path):
    assert SECRETS[1].startswith("errors and logs")
    settings = ServerSettings(api_key=SecretStr(KEY), faults=FaultSettings(storm_requests=2, error_rate=0.3, seed=2))
    with caplog.at_level(logging.DEBUG), serve_in_thread(create_app(market.tables, settings=settings)) as server:
        frames = _failing_fetch(server.base_url)
    assert list(frames.failed) == DAYS[:1] and sorted(frames) == DAYS[1:]
    assert "retry" in caplog.text and KEY not in caplog.text
    assert all(KEY not in message for message in frames.failed.values())

    # everything a blocked run writes (quarantine records, rejected rows, stored days)
    assert SECRETS[2].startswith("quarantine records")
    store = PartitionStore(tmp_path)
    gate = gate_raw_partitions(store, "raw_daily_quotes", frames, frames.failed)
    for day, frame in gate.accepted.items():
        store.write("raw_daily_quotes", day, frame)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("_quarantine" in str(p) for p in written)
    assert all(KEY.encode() not in p.read_bytes() for p in written)
