"""Moving a stand-in server's simulated clock, and the moments a simulated night spans."""

from __future__ import annotations

import datetime as dt

import httpx
from pydantic import SecretStr

from atft_pipeline.sandbox.server import API_PREFIX, CLOCK_PATH

# A night runs from noon to the next noon (Tokyo time): the evening runs of its day, then the
# early-morning runs for that day's session (options at 04:30, statements catch-up at 04:45)
# and, on Saturdays, the weekly retrain at 09:00.
NIGHT_STARTS = dt.time(12, 0)


def night_span(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The [start, end) moments (naive Tokyo time) of the night that begins on ``day``."""
    start = dt.datetime.combine(day, NIGHT_STARTS)
    return start, start + dt.timedelta(days=1)


class ServerClock:
    """The simulated clock of the stand-in server at ``base_url`` (``…/v2``), set through its
    admin endpoint, so every client of that server sees the API as known at that moment."""

    def __init__(self, base_url: str, api_key: SecretStr | None, timeout_s: float = 30.0) -> None:
        root = base_url.rstrip("/").removesuffix(API_PREFIX)
        self.url = root + CLOCK_PATH
        self.timeout_s = timeout_s
        self._headers = {"x-api-key": api_key.get_secret_value()} if api_key is not None else {}

    def set(self, moment: dt.datetime) -> None:
        """Serve the API as known at ``moment`` (naive = Tokyo time)."""
        response = httpx.put(self.url, json={"clock": moment.isoformat()}, headers=self._headers, timeout=self.timeout_s)
        if response.status_code != 200:
            raise RuntimeError(
                f"cannot set the stand-in's clock at {self.url} to {moment}: HTTP "
                f"{response.status_code} {response.text[:200]} (is it a stand-in server?)"
            )

    def clear(self) -> None:
        httpx.delete(self.url, headers=self._headers, timeout=self.timeout_s).raise_for_status()
