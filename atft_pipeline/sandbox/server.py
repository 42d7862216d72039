"""The J-Quants V2 stand-in server: an ASGI app that answers like ``api.jquants.com/v2``.

It serves any set of endpoint tables (the synthetic market or a replay directory) with the
API's paths, ``x-api-key`` check, plan entitlements and windows, parameter validation,
``{"data": [...], "pagination_key": ...}`` envelopes, gzip, rate limits (429 without
``Retry-After``) and optional injected faults, so the client and the pipeline exercise
every HTTP path offline. ``serve_in_thread`` runs it on a loopback port for tests and the
demo; ``atft sandbox serve`` runs it in the foreground.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self

import polars as pl
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from atft_pipeline.jquants.endpoints import ENDPOINTS, FINS_REQUESTS_PER_MINUTE, Endpoint, Plan
from atft_pipeline.jquants.parsing import coerce_frame, frame_to_rows
from atft_pipeline.sandbox.clock import parse_clock, tokyo_time
from atft_pipeline.sandbox.faults import FaultInjector, FaultSettings
from atft_pipeline.sandbox.query import (
    ApiError,
    EndpointTable,
    PlanWindow,
    Query,
    encode_cursor,
    normalize_params,
    parse_query,
    plan_window,
)
from atft_pipeline.sandbox.ratelimit import SlidingWindowLimiter
from atft_pipeline.sandbox.replay import check_columns
from atft_pipeline.sandbox.stats import RequestStats
from atft_pipeline.settings import SANDBOX_API_KEY

API_PREFIX = "/v2"
STATS_PATH = "/_sandbox/stats"
# Not part of J-Quants: the simulated clock (see ``atft_pipeline.sandbox.clock``). A request
# may carry its own moment in CLOCK_HEADER; otherwise the server's clock applies (set by the
# ``--clock`` flag or a PUT to CLOCK_PATH); without either everything stored is served.
CLOCK_PATH = "/_sandbox/clock"
CLOCK_HEADER = "x-sandbox-clock"
# Not part of J-Quants: the synthetic market's oracle (expected forward returns), so reports
# can state what fraction of the achievable RankIC a model reaches.
ORACLE_PATH = "/_sandbox/oracle"
INVALID_KEY_MESSAGE = "The incoming api key is invalid or expired."
_ERROR_MESSAGES = {
    403: "Access denied (injected fault).",
    429: "Too Many Requests",
    500: "Unexpected error. Please try again later.",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
# Dated "future" tables (the calendar runs to the end of next year; the earnings calendar is
# the next business day) do not define the last day of the data.
_NOT_DEFINING_TODAY = frozenset({"markets/calendar", "equities/earnings-calendar"})
_ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class ServerSettings(BaseModel):
    """How the stand-in server behaves. The defaults: Premium, no rate limit, no faults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: SecretStr = SecretStr(SANDBOX_API_KEY)
    plan: Plan = Plan.PREMIUM
    today: dt.date | None = Field(
        None, description="date the plan window is measured from; None: the data's last date"
    )
    page_size: int = Field(5000, ge=1, description="rows per page before pagination_key")
    rate_limit_per_minute: int | None = Field(
        None, ge=1, description="requests per sliding minute (fins/* also capped at 60); None: off"
    )
    lockout_s: float | None = Field(
        None, gt=0, description="after a 429, reject everything for this long (the API's block)"
    )
    faults: FaultSettings = FaultSettings()
    clock: dt.datetime | None = Field(
        None,
        description="simulated Tokyo time: serve the API as known then; None: everything stored",
    )

    @model_validator(mode="after")
    def _lockout_needs_a_limit(self) -> Self:
        if self.lockout_s is not None and self.rate_limit_per_minute is None:
            raise ValueError("lockout_s only applies with rate_limit_per_minute set")
        return self


def create_app(
    tables: Mapping[str, pl.DataFrame],
    *,
    settings: ServerSettings | None = None,
    oracle: pl.DataFrame | None = None,
) -> Starlette:
    """The stand-in API over ``tables`` (V2 path -> frame with that endpoint's V2 fields).

    Endpoints without a table answer ``200 {"data": []}``. ``app.state.stats`` records every
    request; ``app.state.today`` and ``app.state.window`` are the effective plan window.
    """
    api = _StandInApi(tables, settings or ServerSettings(), oracle)
    app = Starlette(
        routes=[
            Route(STATS_PATH, api.stats_endpoint, methods=["GET"]),
            Route(CLOCK_PATH, api.clock_endpoint, methods=["GET", "PUT", "DELETE"]),
            Route(ORACLE_PATH, api.oracle_endpoint, methods=["GET"]),
            Route(API_PREFIX + "/{path:path}", api.handle, methods=_ALL_METHODS),
            Route("/{path:path}", api.handle_unknown, methods=_ALL_METHODS),
        ],
        middleware=[Middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)],
    )
    app.state.settings = api.settings
    app.state.stats = api.stats
    app.state.today = api.today
    app.state.window = api.window
    return app


def _error(status: int, message: str) -> JSONResponse:
    # No Retry-After on 429, like the API: clients must back off on their own.
    return JSONResponse({"message": message}, status_code=status)


class _StandInApi:
    def __init__(
        self,
        tables: Mapping[str, pl.DataFrame],
        settings: ServerSettings,
        oracle: pl.DataFrame | None = None,
    ) -> None:
        self.oracle = oracle
        unknown = sorted(set(tables) - set(ENDPOINTS))
        if unknown:
            raise ValueError(
                f"unknown J-Quants V2 endpoint(s) {unknown}; known: {sorted(ENDPOINTS)}"
            )
        self.settings = settings
        self.clock = None if settings.clock is None else tokyo_time(settings.clock)
        self.tables = {
            path: EndpointTable(endpoint, _prepare(endpoint, tables.get(path)))
            for path, endpoint in ENDPOINTS.items()
        }
        self.today = settings.today or self._last_data_date() or dt.date.today()
        self.window: PlanWindow = plan_window(settings.plan, self.today)
        self.stats = RequestStats()
        self.faults = FaultInjector(settings.faults)
        self.limiter = (
            SlidingWindowLimiter(
                {
                    "default": settings.rate_limit_per_minute,
                    "fins": min(settings.rate_limit_per_minute, FINS_REQUESTS_PER_MINUTE),
                },
                lockout_s=settings.lockout_s,
            )
            if settings.rate_limit_per_minute is not None
            else None
        )

    def _last_data_date(self) -> dt.date | None:
        dates = [
            t.last_date
            for p, t in self.tables.items()
            if p not in _NOT_DEFINING_TODAY and t.last_date is not None
        ]
        return max(dates, default=None)

    async def stats_endpoint(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats.to_json())

    async def clock_endpoint(self, request: Request) -> JSONResponse:
        """GET: the server's clock; PUT ``{"clock": "<ISO datetime>"}``: set it; DELETE: clear."""
        if not self._key_is_valid(request.headers.get("x-api-key")):
            return _error(403, INVALID_KEY_MESSAGE)
        if request.method == "PUT":
            try:
                body = await request.json()
                self.clock = parse_clock(str(body["clock"]))
            except (ValueError, KeyError, TypeError) as exc:
                return _error(400, f"expected a JSON body {{\"clock\": \"<ISO datetime>\"}}: {exc}")
        elif request.method == "DELETE":
            self.clock = None
        return JSONResponse({"clock": None if self.clock is None else self.clock.isoformat()})

    async def oracle_endpoint(self, request: Request) -> Response:
        """Oracle rows (date, code, oracle_<h>d) with ``from`` <= date <= ``to``; 404 without."""
        if request.headers.get("x-api-key") != self.settings.api_key.get_secret_value():
            return _error(403, INVALID_KEY_MESSAGE)
        if self.oracle is None:
            return _error(404, "this server has no oracle (not a synthetic market)")
        try:
            first = dt.date.fromisoformat(request.query_params["from"])
            last = dt.date.fromisoformat(request.query_params["to"])
        except (KeyError, ValueError):
            return _error(400, "oracle requires from=YYYY-MM-DD and to=YYYY-MM-DD")
        rows = self.oracle.filter(pl.col("date").is_between(first, last))
        return Response(rows.write_json(), media_type="application/json")

    async def handle_unknown(self, request: Request) -> Response:
        path = request.path_params["path"]
        response = _error(403, f"Unknown path or method: {request.method} /{path}")
        self.stats.record(path, normalize_params(request.query_params.multi_items()), 403)
        return response

    async def handle(self, request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        response = await self._answer(request, path)
        self.stats.record(
            path, normalize_params(request.query_params.multi_items()), response.status_code
        )
        return response

    async def _answer(self, request: Request, path: str) -> Response:
        faults = self.settings.faults
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        endpoint = ENDPOINTS.get(path)
        if endpoint is None or request.method != "GET":
            # The API gateway answers 403 (not 404/405) for a wrong path or method.
            return _error(403, f"Unknown path or method: {request.method} {API_PREFIX}/{path}")
        decision = self.faults.decide(path)
        if decision.status is not None:
            return _error(decision.status, _ERROR_MESSAGES[decision.status])
        if not self._key_is_valid(request.headers.get("x-api-key")):
            return _error(403, INVALID_KEY_MESSAGE)
        if self.limiter is not None and not self.limiter.admit(endpoint.rate_bucket):
            return _error(429, _ERROR_MESSAGES[429])
        if not self.settings.plan.covers(endpoint.plan):
            return _error(
                403,
                f"Your subscription plan ({self.settings.plan.value}) does not cover this API: "
                f"{API_PREFIX}/{path} requires the {endpoint.plan.value} plan or above.",
            )
        items = list(request.query_params.multi_items())
        try:
            as_of = self._as_of(request)
            # Inline, not in a worker thread: selection is an index lookup and encoding is
            # GIL-bound Python, so a thread hop would only add latency to every request.
            body = self._page_body(endpoint, items, as_of)
        except ApiError as exc:
            return _error(exc.status, exc.message)
        if decision.truncate:
            body = body[: len(body) // 2]
        return Response(body, media_type="application/json")

    def _key_is_valid(self, given: str | None) -> bool:
        expected = self.settings.api_key.get_secret_value().encode()
        return given is not None and secrets.compare_digest(given.encode(), expected)

    def _as_of(self, request: Request) -> dt.datetime | None:
        header = request.headers.get(CLOCK_HEADER)
        if header is None:
            return self.clock
        try:
            return parse_clock(header)
        except ValueError as exc:
            raise ApiError(400, f"{CLOCK_HEADER}: {exc}") from None

    def _page_body(
        self, endpoint: Endpoint, items: list[tuple[str, str]], as_of: dt.datetime | None
    ) -> bytes:
        # On the simulated clock the plan window (the Free plan's 12-week delay) moves with it.
        window = (
            self.window
            if as_of is None or self.settings.today is not None
            else plan_window(self.settings.plan, as_of.date())
        )
        query = parse_query(endpoint, items, window)
        if query.published_after is not None and not self.settings.plan.covers(Plan.PREMIUM):
            raise ApiError(403, "The cursor parameter is available on the Premium plan only.")
        table = self.tables[endpoint.path]
        rows = table.select(query, window, as_of)
        query_hash = _query_hash(query)
        offset = 0
        if query.pagination_key is not None:
            offset = _decode_page_key(query.pagination_key, query_hash, rows.height)
        size = self.settings.page_size
        page = rows.slice(offset, size)
        body: dict[str, object] = {"data": frame_to_rows(endpoint, page, self.settings.plan)}
        if offset + size < rows.height:
            body["pagination_key"] = _encode_page_key(offset + size, query_hash)
        elif "cursor" in endpoint.params and self.settings.plan.covers(Plan.PREMIUM):
            # The cursor comes on the last page: where the next incremental call starts.
            watermark = table.watermark(as_of)
            if watermark is not None:
                body["cursor"] = encode_cursor(watermark)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _prepare(endpoint: Endpoint, frame: pl.DataFrame | None) -> pl.DataFrame:
    """A served table: registry columns and dtypes (Premium), NaN as null (JSON has no NaN)."""
    if frame is None:
        return pl.DataFrame(schema=endpoint.schema(Plan.PREMIUM))
    check_columns(endpoint, frame, where=f"table for endpoint {endpoint.path!r}")
    typed = coerce_frame(endpoint, frame, Plan.PREMIUM)
    floats = [name for name, dtype in typed.schema.items() if dtype.is_float()]
    return typed.with_columns(pl.col(floats).fill_nan(None)) if floats else typed


# Pagination keys are opaque to clients: base64 of "<offset>.<query hash>". The hash ties a
# key to its query, so reusing a key with different parameters is a 400, as on the API.
def _query_hash(query: Query) -> str:
    text = json.dumps([query.endpoint.path, query.normalized], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_page_key(offset: int, query_hash: str) -> str:
    return base64.urlsafe_b64encode(f"{offset}.{query_hash}".encode()).decode().rstrip("=")


def _decode_page_key(key: str, query_hash: str, total: int) -> int:
    try:
        text = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
        offset_text, _, key_hash = text.partition(".")
        offset = int(offset_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(400, "Invalid pagination_key.") from None
    if key_hash != query_hash:
        raise ApiError(
            400, "The pagination_key does not belong to this query; repeat the same parameters."
        )
    if not 0 < offset < total:
        raise ApiError(400, "Invalid pagination_key: the result it points into has changed.")
    return offset


@dataclass(frozen=True)
class ServerHandle:
    """A running stand-in server: where it listens and what it has been asked."""

    app: Starlette
    host: str
    port: int

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The V2 base URL to give a client (``JQUANTS_BASE_URL``)."""
        return self.root_url + API_PREFIX

    @property
    def stats(self) -> RequestStats:
        return self.app.state.stats


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (port 0: any free port). Binding here, before uvicorn starts,
    makes the port known at once and lets connections queue until the server accepts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def uvicorn_server(app: Starlette, *, access_log: bool = False) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="info" if access_log else "warning",
        access_log=access_log,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


@contextmanager
def serve_in_thread(
    app: Starlette, host: str = "127.0.0.1", port: int = 0, *, startup_timeout_s: float = 10.0
) -> Iterator[ServerHandle]:
    """Run ``app`` with uvicorn in a background thread for the duration of the block."""
    sock = bind_socket(host, port)
    server = uvicorn_server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="jquants-stand-in", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("stand-in server thread exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"stand-in server did not start within {startup_timeout_s} s")
            time.sleep(0.01)
        yield ServerHandle(app, host, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout_s)
        sock.close()
