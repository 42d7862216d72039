"""The sandbox market served in-process: the one way the pipeline starts a stand-in server.

``serve_sandbox_market`` is a context manager (``atft demo`` holds it around its run);
``start_embedded_sandbox`` starts one for settings without a base URL and keeps it for the
life of the process (a step process of a run starts its own; generation is deterministic, so
all of them serve the same market). Nothing starts a server implicitly.
"""

from __future__ import annotations

import atexit
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from pydantic import SecretStr

from atft_pipeline.settings import SANDBOX_API_KEY, SANDBOX_END, SANDBOX_START, Settings

if TYPE_CHECKING:  # the market and the server pull in numpy, starlette and uvicorn
    from atft_pipeline.sandbox.market import MarketConfig
    from atft_pipeline.sandbox.server import ServerHandle

SANDBOX_SEED = 7
SANDBOX_STOCKS = 300
# The last 45 sessions (where a nightly simulation of the sandbox runs) hold planted splits,
# late filings and restatements, and the margin-interest switch to daily rows.
SANDBOX_EVENTS_FROM = dt.date(2023, 10, 26)
SANDBOX_MARGIN_DAILY_FROM = dt.date(2023, 11, 20)

_lock = threading.Lock()
_servers: dict[tuple[int, int], str] = {}
_exit_stack = ExitStack()
atexit.register(_exit_stack.close)


@contextmanager
def serve_sandbox_market(
    seed: int = SANDBOX_SEED, n_stocks: int = SANDBOX_STOCKS, port: int = 0
) -> Iterator[ServerHandle]:
    """Generate the sandbox market (``SANDBOX_START``..``SANDBOX_END``) and serve it, with its
    oracle, on a loopback port (0: a free one) until the block exits."""
    from atft_pipeline.sandbox.market import generate_market
    from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread

    market = generate_market(sandbox_market_config(seed, n_stocks))
    app = create_app(market.tables, settings=ServerSettings(), oracle=market.oracle)
    with serve_in_thread(app, port=port) as handle:
        yield handle


def sandbox_market_config(seed: int = SANDBOX_SEED, n_stocks: int = SANDBOX_STOCKS) -> MarketConfig:
    """The market ``atft demo`` and nightly simulations serve (``docs/sandbox.md``)."""
    from atft_pipeline.sandbox.market import MarketConfig

    return MarketConfig(
        seed=seed,
        n_stocks=n_stocks,
        start=SANDBOX_START,
        end=SANDBOX_END,
        event_window_start=SANDBOX_EVENTS_FROM,
        margin_interest_daily_from=SANDBOX_MARGIN_DAILY_FROM,
    )


def sandbox_settings(settings: Settings, base_url: str) -> Settings:
    """``settings`` pointed at a sandbox server on ``base_url``."""
    return settings.model_copy(update={"api_key": SecretStr(SANDBOX_API_KEY), "base_url": base_url})


def start_embedded_sandbox(
    settings: Settings, seed: int = SANDBOX_SEED, n_stocks: int = SANDBOX_STOCKS
) -> Settings:
    """Serve the sandbox market in this process (once per market) and return ``settings``
    pointed at it."""
    with _lock:
        if (seed, n_stocks) not in _servers:
            handle = _exit_stack.enter_context(serve_sandbox_market(seed, n_stocks))
            _servers[seed, n_stocks] = handle.base_url
        return sandbox_settings(settings, _servers[seed, n_stocks])
