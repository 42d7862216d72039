"""The embedded sandbox: one in-process stand-in server per market, started on first use.

Used when no API key and no base URL are configured. The server runs in a daemon thread on a
free loopback port and lives as long as the process; every step process of a run that needs
the API starts its own (generation is deterministic, so all of them serve the same market).
"""

from __future__ import annotations

import atexit
import datetime as dt
import threading
from contextlib import ExitStack

_lock = threading.Lock()
_servers: dict[tuple, str] = {}
_exit_stack = ExitStack()
atexit.register(_exit_stack.close)


def embedded_sandbox_url(*, seed: int, n_stocks: int, start: dt.date, end: dt.date) -> str:
    """Base URL (``http://127.0.0.1:<port>/v2``) of the sandbox server for this market."""
    key = (seed, n_stocks, start, end)
    with _lock:
        if key not in _servers:
            from atft_pipeline.sandbox.market import MarketConfig, generate_market
            from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread

            market = generate_market(MarketConfig(seed=seed, n_stocks=n_stocks, start=start, end=end))
            app = create_app(market.tables, settings=ServerSettings(), oracle=market.oracle)
            handle = _exit_stack.enter_context(serve_in_thread(app))
            _servers[key] = handle.base_url
        return _servers[key]
