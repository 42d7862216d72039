"""J-Quants API V2: endpoint registry, wire parsing and the async client."""

from atft_pipeline.jquants.client import (
    DEFAULT_BASE_URL,
    ClientConfig,
    ClientStats,
    CursorResult,
    JQuantsClient,
    build_query,
    fetch,
    fetch_many_sync,
)
from atft_pipeline.jquants.endpoints import (
    ENDPOINTS,
    FINS_REQUESTS_PER_MINUTE,
    Endpoint,
    Field,
    Kind,
    Plan,
    get_endpoint,
)
from atft_pipeline.jquants.errors import (
    AuthError,
    BadRequestError,
    EntitlementError,
    JQuantsError,
    JQuantsHTTPError,
    NetworkError,
    PageLimitError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
)
from atft_pipeline.jquants.parsing import coerce_frame, frame_to_rows, rows_to_frame
from atft_pipeline.jquants.ratelimit import RateLimiter

__all__ = [
    "DEFAULT_BASE_URL",
    "ENDPOINTS",
    "FINS_REQUESTS_PER_MINUTE",
    "AuthError",
    "BadRequestError",
    "ClientConfig",
    "ClientStats",
    "CursorResult",
    "Endpoint",
    "EntitlementError",
    "Field",
    "JQuantsClient",
    "JQuantsError",
    "JQuantsHTTPError",
    "Kind",
    "NetworkError",
    "PageLimitError",
    "Plan",
    "RateLimitError",
    "RateLimiter",
    "ResponseFormatError",
    "ServerError",
    "build_query",
    "coerce_frame",
    "fetch",
    "fetch_many_sync",
    "frame_to_rows",
    "get_endpoint",
    "rows_to_frame",
]
