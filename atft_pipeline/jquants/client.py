"""Async J-Quants API V2 client: typed Polars frames out, the API's rules built in.

One ``httpx.AsyncClient`` per ``JQuantsClient`` (connection reuse, HTTP/1.1, gzip), the key in
the ``x-api-key`` header only. Every call is validated against the endpoint registry before
any HTTP, follows ``pagination_key`` to the end, respects the plan's requests/minute on the
client side, and retries only what can succeed on retry:

- 429: J-Quants sends no ``Retry-After``; back off at least ``backoff_429_s`` (60 s) plus up to
  50% jitter, pausing every request of this client (the server counts them all). The pause is
  the client's own, so it holds whether or not client-side rate limiting is on.
- 5xx, timeouts, broken connections, truncated/invalid bodies: exponential backoff.
- 400/401/403/404: raised at once as typed errors with an entitlement hint.

``timeout_s`` bounds each request as a whole (connect to last byte), not only each read, so
a server that trickles its answer cannot hold a request longer than that.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import random
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self, TypeVar

import httpx
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from atft_pipeline import __version__
from atft_pipeline.jquants.endpoints import Endpoint, Plan, get_endpoint
from atft_pipeline.jquants.errors import (
    JQuantsError,
    JQuantsHTTPError,
    NetworkError,
    PageLimitError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    describe_request,
    error_for_status,
)
from atft_pipeline.jquants.parsing import missing_key_fields, rows_to_frame, unknown_fields
from atft_pipeline.jquants.ratelimit import Clock, RateLimiter, Sleep
from atft_pipeline.progress import Counter

logger = logging.getLogger("atft_pipeline.jquants")

DEFAULT_BASE_URL = "https://api.jquants.com/v2"
# 429 backoff is stretched by a random 0..50% so that clients blocked together do not all
# come back in the same second.
JITTER_429 = 0.5
# "No Content (Partial)": bars/daily/am outside its hours or an unknown code. Not an error.
STATUS_NO_CONTENT_PARTIAL = 210

_RETRYABLE = (RateLimitError, ServerError, NetworkError, ResponseFormatError)
_Retryable = JQuantsHTTPError | NetworkError
_TRANSPORT_ERRORS = (httpx.TransportError, httpx.DecodingError)
_T = TypeVar("_T")


class ClientConfig(BaseModel):
    """Everything a ``JQuantsClient`` needs; the key is a ``SecretStr`` (masked in reprs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = DEFAULT_BASE_URL
    api_key: SecretStr | None = None
    plan: Plan = Plan.FREE
    timeout_s: float = Field(default=30.0, gt=0)
    max_concurrency: int = Field(default=4, ge=1)
    max_retries: int = Field(default=5, ge=0)
    backoff_429_s: float = Field(default=60.0, gt=0)
    # The floor for ``backoff_429_s``; only tests against a stand-in server lower it.
    min_backoff_429_s: float = Field(default=60.0, ge=0)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    max_pages: int = Field(default=10_000, ge=1)
    # None: the plan's published rate (Free 5, Light 60, Standard 120, Premium 500).
    requests_per_minute: int | None = Field(default=None, ge=1)
    # Client-side pacing to the plan's published rates. Off only for a stand-in server on
    # this machine, which is not J-Quants (its own limit, if set, still answers 429s).
    rate_limited: bool = True

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _blank_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @model_validator(mode="after")
    def _check_backoffs(self) -> Self:
        if self.backoff_429_s < self.min_backoff_429_s:
            raise ValueError(
                f"backoff_429_s={self.backoff_429_s} is below min_backoff_429_s="
                f"{self.min_backoff_429_s}: J-Quants asks for at least 60 s after a 429"
            )
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError(
                f"backoff_max_s={self.backoff_max_s} is below backoff_base_s={self.backoff_base_s}"
            )
        return self

    @property
    def rate_per_minute(self) -> int:
        return self.requests_per_minute or self.plan.requests_per_minute


@dataclass
class ClientStats:
    """What one client has done so far (``requests`` counts retries too)."""

    requests: dict[str, int] = field(default_factory=dict)  # HTTP requests sent, per endpoint
    retries: int = 0
    rate_limited: int = 0  # 429 responses
    pages: int = 0
    rows: int = 0
    bytes: int = 0  # body bytes as received (compressed when gzip)
    # Response fields the endpoint registry does not define, per endpoint (the API grew them).
    unknown_fields: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


@dataclass(frozen=True)
class CursorResult:
    """One incremental retrieval: the rows and the cursor for the next call (None: none sent)."""

    frame: pl.DataFrame
    cursor: str | None


def resolve_endpoint(endpoint: str | Endpoint) -> Endpoint:
    if isinstance(endpoint, Endpoint):
        return endpoint
    try:
        return get_endpoint(endpoint)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


def build_query(endpoint: Endpoint, params: Mapping[str, object]) -> dict[str, str]:
    """Check ``params`` against the registry and encode them as query strings.

    ``None`` values are dropped; dates are sent as ``YYYY-MM-DD``; ``from_`` is accepted for
    ``from`` (a Python keyword).
    """
    given = {_param_name(k): v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(endpoint.params))
    if unknown:
        raise ValueError(
            f"{endpoint.path}: unknown parameter(s) {unknown}; accepted: {list(endpoint.params)}"
        )
    if endpoint.required_any and not any(p in given for p in endpoint.required_any):
        raise ValueError(
            f"{endpoint.path} requires at least one of {list(endpoint.required_any)}, "
            f"got {sorted(given) or 'no parameters'}"
        )
    if "date" in given and ({"from", "to"} & set(given)):
        raise ValueError(f"{endpoint.path}: 'date' and 'from'/'to' are mutually exclusive")
    if "published_date" in given and ({"date", "from", "to"} & set(given)):
        raise ValueError(
            f"{endpoint.path}: 'published_date' cannot be combined with 'date'/'from'/'to'"
        )
    return {name: _encode_param(endpoint, name, value) for name, value in given.items()}


def _param_name(name: str) -> str:
    return "from" if name == "from_" else name


def _encode_param(endpoint: Endpoint, name: str, value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(
        f"{endpoint.path}: parameter {name!r} must be a str, int or date, "
        f"got {type(value).__name__}"
    )


class JQuantsClient:
    """Async J-Quants V2 client; use as ``async with JQuantsClient(config) as client``."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._config = config
        self._transport = transport
        self._sleep: Sleep = sleep or asyncio.sleep
        self._clock: Clock = clock or time.monotonic
        self._limiter = RateLimiter.for_plan(
            config.rate_per_minute, clock=self._clock, sleep=self._sleep
        )
        # After a 429 no request of this client is sent before this time (clock seconds).
        self._resume_at = float("-inf")
        self._stats = ClientStats()
        self._http: httpx.AsyncClient | None = None
        # Created on open: a semaphore belongs to the event loop that first waits on it.
        self._slots: asyncio.Semaphore | None = None

    @property
    def config(self) -> ClientConfig:
        return self._config

    @property
    def plan(self) -> Plan:
        return self._config.plan

    @property
    def stats(self) -> ClientStats:
        """A snapshot; later calls do not change it."""
        return replace(
            self._stats,
            requests=dict(self._stats.requests),
            unknown_fields={k: list(v) for k, v in self._stats.unknown_fields.items()},
        )

    def __repr__(self) -> str:
        key = "set" if self._config.api_key is not None else "unset"
        return (
            f"JQuantsClient(base_url={self._config.base_url!r}, plan={self.plan.value!r}, "
            f"api_key={key})"
        )

    async def __aenter__(self) -> Self:
        if self._http is not None:
            raise RuntimeError(f"{self!r} is already open")
        self._http = httpx.AsyncClient(
            base_url=self._config.base_url,
            headers=self._headers(),
            timeout=httpx.Timeout(self._config.timeout_s),
            limits=httpx.Limits(
                max_connections=self._config.max_concurrency,
                max_keepalive_connections=self._config.max_concurrency,
            ),
            http1=True,
            http2=False,
            transport=self._transport,
        )
        self._slots = asyncio.Semaphore(self._config.max_concurrency)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
            "User-Agent": f"atft-pipeline/{__version__}",
        }
        if self._config.api_key is not None:
            headers["x-api-key"] = self._config.api_key.get_secret_value()
        return headers

    async def get(self, endpoint: str | Endpoint, /, **params: Any) -> pl.DataFrame:
        """Every row of one query (all pages), typed to the registry schema for the plan."""
        resolved = resolve_endpoint(endpoint)
        frame, _ = await self._get_all_pages(resolved, build_query(resolved, params))
        return frame

    async def get_with_cursor(
        self, endpoint: str | Endpoint, /, cursor: str | None = None, **params: Any
    ) -> CursorResult:
        """Incremental retrieval: the rows published since ``cursor`` (all of them without one)
        plus the response's new cursor to pass next time.

        Only fins/summary, fins/details and td/list accept ``cursor``; on fins/summary it is a
        Premium feature. The cursor arrives on the last page, after every ``pagination_key``.
        """
        resolved = resolve_endpoint(endpoint)
        if "cursor" not in resolved.params:
            raise ValueError(f"{resolved.path} does not support cursor retrieval")
        query = build_query(resolved, {**params, "cursor": cursor})
        frame, next_cursor = await self._get_all_pages(resolved, query)
        return CursorResult(frame, next_cursor)

    async def get_many(
        self, endpoint: str | Endpoint, params_list: Sequence[Mapping[str, Any]]
    ) -> list[pl.DataFrame]:
        """One frame per query, in order, at most ``max_concurrency`` requests in flight.

        Every query is validated before the first request. The first failure cancels the
        remaining queries and is raised.
        """
        resolved = resolve_endpoint(endpoint)
        queries = [build_query(resolved, params) for params in params_list]
        pages = await _gather_or_cancel([self._get_all_pages(resolved, q) for q in queries])
        return [frame for frame, _ in pages]

    async def get_each(
        self, endpoint: str | Endpoint, params_list: Sequence[Mapping[str, Any]]
    ) -> list[pl.DataFrame | JQuantsError]:
        """Like ``get_many``, but each query succeeds or fails on its own: the result holds,
        in order, its frame or the ``JQuantsError`` it ended with (after its retries)."""
        resolved = resolve_endpoint(endpoint)
        queries = [build_query(resolved, params) for params in params_list]
        counter = Counter(f"{resolved.path} queries", len(queries))

        async def one(query: dict[str, str]) -> pl.DataFrame | JQuantsError:
            try:
                frame, _ = await self._get_all_pages(resolved, query)
                return frame
            except JQuantsError as error:
                return error
            finally:
                counter.advance()

        return await _gather_or_cancel([one(q) for q in queries])

    async def _get_all_pages(
        self, endpoint: Endpoint, query: dict[str, str]
    ) -> tuple[pl.DataFrame, str | None]:
        """Every page of ``query`` as one typed frame, and the last page's ``cursor`` if any."""
        rows: list[dict[str, Any]] = []
        page_query = query
        for _ in range(self._config.max_pages):
            envelope = await self._fetch_page(endpoint, page_query)
            rows.extend(envelope["data"])
            self._stats.pages += 1
            key = envelope.get("pagination_key")
            if not key:
                frame = self._typed_frame(endpoint, query, rows)
                cursor = envelope.get("cursor")
                return frame, cursor if isinstance(cursor, str) and cursor else None
            if key == page_query.get("pagination_key"):
                # Keys change on every page; the same key again would loop until max_pages.
                raise ResponseFormatError(
                    200, endpoint.path, page_query, f"pagination_key {key!r} was repeated"
                )
            page_query = {**query, "pagination_key": key}
        raise PageLimitError(endpoint.path, query, self._config.max_pages)

    def _typed_frame(
        self, endpoint: Endpoint, query: dict[str, str], rows: list[dict[str, Any]]
    ) -> pl.DataFrame:
        missing = missing_key_fields(endpoint, rows)
        if missing:
            raise ResponseFormatError(
                200, endpoint.path, query, f"rows lack the key field(s) {missing}"
            )
        extra = unknown_fields(endpoint, rows)
        known = self._stats.unknown_fields.get(endpoint.path, [])
        new = sorted(set(extra) - set(known))
        if new:
            logger.warning(
                "%s: response field(s) %s are not in the endpoint registry (kept out of the "
                "typed frame, reported in the client stats)",
                describe_request(endpoint.path, query),
                new,
            )
            self._stats.unknown_fields[endpoint.path] = sorted(set(known) | set(new))
        frame = rows_to_frame(endpoint, rows, self.plan)
        self._stats.rows += frame.height
        return frame

    async def _fetch_page(self, endpoint: Endpoint, query: dict[str, str]) -> dict[str, Any]:
        attempt = 1
        while True:
            try:
                return await self._attempt(endpoint, query, attempt)
            except _RETRYABLE as error:
                if attempt > self._config.max_retries:
                    error.attempts = attempt
                    raise
                await self._back_off(endpoint, query, error, attempt)
            attempt += 1

    async def _attempt(
        self, endpoint: Endpoint, query: dict[str, str], attempt: int
    ) -> dict[str, Any]:
        http, slots = self._session()
        async with slots:
            await self._wait_for_resume()
            if self._config.rate_limited:
                await self._limiter.acquire(endpoint.rate_bucket)
            self._stats.requests[endpoint.path] = self._stats.requests.get(endpoint.path, 0) + 1
            try:
                response = await asyncio.wait_for(
                    http.get(endpoint.path, params=query), self._config.timeout_s
                )
            except TimeoutError as exc:
                raise NetworkError(
                    endpoint.path, query,
                    f"no complete answer within timeout_s={self._config.timeout_s:g} s",
                ) from exc
            except _TRANSPORT_ERRORS as exc:
                logger.debug(
                    "%s attempt %d: %s", describe_request(endpoint.path, query), attempt, exc
                )
                raise NetworkError(endpoint.path, query, f"{type(exc).__name__}: {exc}") from exc
        self._stats.bytes += response.num_bytes_downloaded
        logger.debug(
            "%s -> %d (attempt %d, %d bytes)",
            describe_request(endpoint.path, query),
            response.status_code,
            attempt,
            response.num_bytes_downloaded,
        )
        return self._read_envelope(endpoint, query, response)

    async def _wait_for_resume(self) -> None:
        """Sleep until the pause set by the last 429 is over (re-checked: it may be extended)."""
        while (delay := self._resume_at - self._clock()) > 0:
            await self._sleep(delay)

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        if self._http is None or self._slots is None:
            raise RuntimeError(
                "JQuantsClient is not open; use `async with JQuantsClient(config) as client:`"
            )
        return self._http, self._slots

    def _read_envelope(
        self, endpoint: Endpoint, query: dict[str, str], response: httpx.Response
    ) -> dict[str, Any]:
        status = response.status_code
        if status == STATUS_NO_CONTENT_PARTIAL:
            return {"data": []}
        if status != httpx.codes.OK:
            if status == httpx.codes.TOO_MANY_REQUESTS:
                self._stats.rate_limited += 1
            raise error_for_status(
                status,
                endpoint,
                query,
                _error_message(response),
                plan=self.plan,
                has_key=self._config.api_key is not None,
                retry_after_s=_retry_after_s(response),
            )
        return _parse_envelope(endpoint, query, response)

    async def _back_off(
        self, endpoint: Endpoint, query: dict[str, str], error: _Retryable, attempt: int
    ) -> None:
        delay = self._retry_delay(error, attempt)
        self._stats.retries += 1
        logger.warning(
            "%s: %s; retry %d/%d in %.1f s",
            describe_request(endpoint.path, query),
            _reason(error),
            attempt,
            self._config.max_retries,
            delay,
        )
        if isinstance(error, RateLimitError):
            # The server counts every request of this key: hold them all (every request,
            # this retry included, waits for the resume time before it is sent).
            self._resume_at = max(self._resume_at, self._clock() + delay)
        else:
            await self._sleep(delay)

    def _retry_delay(self, error: _Retryable, attempt: int) -> float:
        config = self._config
        if isinstance(error, RateLimitError):
            delay = config.backoff_429_s * (1.0 + random.uniform(0.0, JITTER_429))
            return max(delay, error.retry_after_s or 0.0)
        return min(config.backoff_max_s, config.backoff_base_s * 2.0 ** (attempt - 1))


def _reason(error: _Retryable) -> str:
    if isinstance(error, NetworkError):
        return error.message
    return f"{error.status} {error.message}"


def _error_message(response: httpx.Response) -> str:
    """The body's ``message`` (V2 does not promise one), else its text, else the reason."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase


def _retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or HTTP-date); None when absent or invalid."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _parse_envelope(
    endpoint: Endpoint, query: dict[str, str], response: httpx.Response
) -> dict[str, Any]:
    """``{"data": [...], "pagination_key": "..."}``, checked; anything else is a format error."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError as exc:
        raise ResponseFormatError(
            status,
            endpoint.path,
            query,
            f"invalid JSON body ({len(response.content)} bytes, possibly truncated): {exc}",
        ) from exc
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        shape = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise ResponseFormatError(
            status, endpoint.path, query, f"body has no 'data' list (got {shape})"
        )
    if not all(isinstance(row, dict) for row in body["data"]):
        raise ResponseFormatError(status, endpoint.path, query, "'data' holds non-object rows")
    key = body.get("pagination_key")
    if key is not None and not isinstance(key, str):
        raise ResponseFormatError(
            status, endpoint.path, query, f"pagination_key is not a string: {key!r}"
        )
    return body


async def _gather_or_cancel(coros: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run ``coros`` concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return []
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]


def fetch(config: ClientConfig, endpoint: str | Endpoint, /, **params: Any) -> pl.DataFrame:
    """Synchronous ``JQuantsClient.get`` for callers without an event loop (CLI, Dagster)."""

    async def run() -> pl.DataFrame:
        async with JQuantsClient(config) as client:
            return await client.get(endpoint, **params)

    return asyncio.run(run())


def fetch_many_sync(
    config: ClientConfig, endpoint: str | Endpoint, params_list: Sequence[Mapping[str, Any]]
) -> list[pl.DataFrame]:
    """Synchronous ``JQuantsClient.get_many``."""

    async def run() -> list[pl.DataFrame]:
        async with JQuantsClient(config) as client:
            return await client.get_many(endpoint, params_list)

    return asyncio.run(run())
