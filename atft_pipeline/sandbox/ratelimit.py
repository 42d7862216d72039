"""The stand-in server's rate limit: J-Quants' per-minute caps, answered with a bare 429.

The API counts requests per minute per plan, with a separate 60/min cap on fins/summary and
fins/details, sends no ``Retry-After``, and blocks a client completely for a while after
heavy overage. ``SlidingWindowLimiter`` reproduces that with a sliding 60-second window per
bucket and an optional lockout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from atft_pipeline.jquants.ratelimit import SlidingWindow


class SlidingWindowLimiter:
    """Admit at most ``limits[bucket]`` requests in any 60 s window.

    A request counts against the ``default`` bucket and, when it names another bucket, that
    one as well. Rejected requests are not counted (they consume no quota). With
    ``lockout_s`` set, a rejection starts a lockout during which every request is rejected.
    """

    def __init__(
        self,
        limits: dict[str, int],
        *,
        lockout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if "default" not in limits:
            raise ValueError("rate limits need a 'default' bucket")
        self._lockout_s = lockout_s
        self._clock = clock
        # The same window the client paces itself with; here a full window means "reject".
        self._windows = {b: SlidingWindow(limit) for b, limit in limits.items()}
        self._locked_until = float("-inf")
        self._lock = threading.Lock()

    def admit(self, bucket: str = "default") -> bool:
        buckets = ["default"] + ([bucket] if bucket != "default" and bucket in self._windows else [])
        with self._lock:
            now = self._clock()
            if now < self._locked_until:
                return False
            if any(self._windows[b].wait_time(now) > 0 for b in buckets):
                if self._lockout_s is not None:
                    self._locked_until = now + self._lockout_s
                return False
            for b in buckets:
                self._windows[b].record(now)
            return True
