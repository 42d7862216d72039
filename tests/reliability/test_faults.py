"""API faults against the stand-in server: raw data identical to a fault-free run, the 429
pause held on loopback, one bad day isolated, every request bounded by its total deadline."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from atft_pipeline.jquants.client import JQuantsClient
from atft_pipeline.jquants.sources import RAW_SOURCES, fetch_raw_days
from atft_pipeline.sandbox.faults import FaultSettings
from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread
from tests.reliability.cases import FAULTS
from tests.reliability.conftest import API_KEY, DAYS, fast_config, fetch

BARS = "raw_daily_quotes"


class VirtualTime:
    """A clock that only moves when the client sleeps: 60 s back-offs cost no real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class Recording(httpx.AsyncBaseTransport):
    """Forwards to the real network; records (send time, status) of every request."""

    def __init__(self, clock, replace=None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.clock = clock
        self.replace = replace  # request -> Response | None: answer instead of the server
        self.log: list[tuple[float, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = self.clock()
        answer = self.replace(request) if self.replace else None
        response = answer if answer is not None else await self.inner.handle_async_request(request)
        self.log.append((sent, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _fetch_with(transport, config, days=DAYS, clock=None, sleep=None):
    async def run():
        async with JQuantsClient(config, transport=transport, clock=clock, sleep=sleep) as client:
            return await fetch_raw_days(client, RAW_SOURCES[BARS], days)

    return asyncio.run(run())


def test_429_on_loopback_url_pauses_every_request_at_least_60s(market, clean_frames):
    assert FAULTS[0].startswith("429 storm on a loopback URL")
    faults = FaultSettings(storm_requests=3)
    with serve_in_thread(create_app(market.tables, settings=ServerSettings(faults=faults))) as server:
        assert server.base_url.startswith("http://127.0.0.1")
        time = VirtualTime()
        transport = Recording(time)
        config = fast_config(server.base_url, backoff_429_s=60.0, min_backoff_429_s=60.0)
        assert config.rate_limited is False  # the limiter is off, as for any loopback stand-in
        frames = _fetch_with(transport, config, clock=time, sleep=time.sleep)
    assert not frames.failed and all(frames[d].equals(clean_frames[BARS][d]) for d in DAYS)
    log = transport.log
    assert sum(status == 429 for _, status in log) == 3
    for i, (at, status) in enumerate(log):
        if status == 429:
            later = [t for t, _ in log[i + 1 :] if t > at]  # requests sent after this 429
            assert all(t - at >= 60.0 for t in later), (at, later)
    sent = sorted(t for t, _ in log)
    after_first_429 = [b - a for a, b in zip(sent, sent[1:]) if b > a]
    assert after_first_429 and min(after_first_429) >= 60.0


FAULT_SETTINGS = {
    FAULTS[1]: FaultSettings(storm_requests=4),
    FAULTS[2]: FaultSettings(error_rate=0.4, seed=3),
    FAULTS[3]: FaultSettings(truncate_rate=0.4, seed=4),
    FAULTS[4]: FaultSettings(latency_s=0.05),
}


@pytest.mark.parametrize("name", list(FAULT_SETTINGS))
def test_faults_leave_raw_data_identical_to_a_fault_free_fetch(name, market, clean_frames):
    with serve_in_thread(create_app(market.tables, settings=ServerSettings(faults=FAULT_SETTINGS[name]))) as server:
        for asset, clean in clean_frames.items():
            frames = fetch(server.base_url, asset)
            assert not frames.failed, frames.failed
            assert list(frames) == DAYS and all(frames[d].equals(clean[d]) for d in DAYS), asset


def test_one_malformed_day_fails_alone_and_is_named(market, clean_frames):
    bad = DAYS[1].isoformat()

    def malformed(request: httpx.Request):
        if request.url.params.get("date") == bad:
            return httpx.Response(200, content=json.dumps({"data": 5}).encode())
        return None

    with serve_in_thread(create_app(market.tables, settings=ServerSettings())) as server:
        frames = _fetch_with(Recording(lambda: 0.0, malformed), fast_config(server.base_url, max_retries=1))
    assert sorted(frames) == [DAYS[0], DAYS[2]]
    assert all(frames[d].equals(clean_frames[BARS][d]) for d in frames)
    assert list(frames.failed) == [DAYS[1]]
    assert "equities/bars/daily" in frames.failed[DAYS[1]] and bad in frames.failed[DAYS[1]]
    assert "'data'" in frames.failed[DAYS[1]] and API_KEY not in frames.failed[DAYS[1]]


class Trickle(httpx.AsyncByteStream):
    async def __aiter__(self):
        for byte in b'{"data": []}' * 50:
            await asyncio.sleep(0.05)
            yield bytes([byte])


def test_a_trickling_server_cannot_hold_a_request_past_its_total_deadline():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Trickle())

    config = fast_config("http://127.0.0.1:9", timeout_s=0.3, max_retries=0)
    frames = _fetch_with(httpx.MockTransport(handler), config, days=DAYS[:1])
    assert not frames and list(frames.failed) == DAYS[:1]
    assert "no complete answer within timeout_s=0.3 s" in frames.failed[DAYS[0]]
