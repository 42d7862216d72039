"""Client-side rate limiting: sliding windows of N requests per minute, one per bucket.

J-Quants counts requests per minute per plan (Free 5, Light 60, Standard 120, Premium 500)
and caps fins/summary and fins/details at 60/min on every plan. A fins request counts toward
both its own bucket and the plan's total, so it takes a slot in each, at the same instant.

A sliding window (rather than a token bucket) is used because it is exactly the API's rule:
never more than N requests in any 60 seconds. The pause after a 429 is the client's own
(``JQuantsClient``), so it also holds where this limiter is off.

Clock and sleep are injectable so tests run on virtual time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from atft_pipeline.jquants.endpoints import FINS_REQUESTS_PER_MINUTE

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_BUCKET = "default"
FINS_BUCKET = "fins"
WINDOW_S = 60.0


class SlidingWindow:
    """At most ``limit`` events in any ``period`` seconds."""

    def __init__(self, limit: int, period: float = WINDOW_S) -> None:
        if limit < 1:
            raise ValueError(f"rate limit must be at least 1 request per window, got {limit}")
        self.limit = limit
        self.period = period
        self._events: deque[float] = deque()

    def wait_time(self, now: float) -> float:
        """Seconds until one more event fits (0 when it fits now)."""
        while self._events and self._events[0] <= now - self.period:
            self._events.popleft()
        if len(self._events) < self.limit:
            return 0.0
        return self._events[0] + self.period - now

    def record(self, now: float) -> None:
        self._events.append(now)


class RateLimiter:
    """Named sliding-window buckets; every request also takes a slot in ``default``."""

    def __init__(
        self,
        requests_per_minute: Mapping[str, int],
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if DEFAULT_BUCKET not in requests_per_minute:
            raise ValueError(f"rate limiter needs a {DEFAULT_BUCKET!r} bucket")
        self._windows = {name: SlidingWindow(n) for name, n in requests_per_minute.items()}
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def for_plan(
        cls,
        requests_per_minute: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> RateLimiter:
        """The plan's total rate, plus the fins endpoints' 60/min cap (never above the total)."""
        buckets = {
            DEFAULT_BUCKET: requests_per_minute,
            FINS_BUCKET: min(requests_per_minute, FINS_REQUESTS_PER_MINUTE),
        }
        return cls(buckets, clock=clock, sleep=sleep)

    def limit(self, bucket: str) -> int:
        return self._windows[bucket].limit

    async def acquire(self, bucket: str = DEFAULT_BUCKET) -> float:
        """Wait until ``bucket`` and ``default`` both have room, take a slot in each.

        Returns the seconds waited. The check and the record happen with no ``await`` between
        them, so concurrent callers on one event loop can never overfill a window.
        """
        try:
            windows = {self._windows[bucket], self._windows[DEFAULT_BUCKET]}
        except KeyError:
            raise KeyError(
                f"unknown rate-limit bucket {bucket!r}; known: {sorted(self._windows)}"
            ) from None
        waited = 0.0
        while True:
            now = self._clock()
            delay = max(w.wait_time(now) for w in windows)
            if delay <= 0:
                for window in windows:
                    window.record(now)
                return waited
            await self._sleep(delay)
            waited += delay
