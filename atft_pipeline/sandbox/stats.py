"""Request counters of the stand-in server, for tests that assert how a client used the API."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from atft_pipeline.sandbox.query import normalize_params


@dataclass(frozen=True)
class RequestRecord:
    endpoint: str  # V2 path without the /v2/ prefix (or the unknown path as requested)
    params: tuple[tuple[str, str], ...]  # normalized, without pagination_key
    status: int

    def matches(self, endpoint: str | None, status: int | None, params: dict[str, str]) -> bool:
        if endpoint is not None and self.endpoint != endpoint:
            return False
        if status is not None and self.status != status:
            return False
        mine = dict(self.params)
        return all(mine.get(k) == v for k, v in params.items())


class RequestStats:
    """Every request the server answered, in arrival order (thread-safe).

    The server runs in its own thread (or process, see ``GET /_sandbox/stats``); tests read
    these counters to check, e.g., that a raw partition was fetched exactly once.
    """

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def record(self, endpoint: str, params: dict[str, str], status: int) -> None:
        with self._lock:
            self._records.append(RequestRecord(endpoint, tuple(params.items()), status))

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    @property
    def total(self) -> int:
        with self._lock:
            return len(self._records)

    def count(
        self, endpoint: str | None = None, *, status: int | None = None, **params: str
    ) -> int:
        """Requests (pages included) to ``endpoint`` whose query includes ``params``.

        Dates may be given as YYYYMMDD or YYYY-MM-DD; use ``**{"from": ...}`` for ``from``.
        """
        wanted = normalize_params(params.items())
        return sum(r.matches(endpoint, status, wanted) for r in self.records)

    def endpoints_called(self, status: int | None = None) -> set[str]:
        return {r.endpoint for r in self.records if status is None or r.status == status}

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    def to_json(self) -> dict[str, Any]:
        records = self.records
        by_endpoint: dict[str, Counter[str]] = {}
        for r in records:
            by_endpoint.setdefault(r.endpoint, Counter())[str(r.status)] += 1
        return {
            "total": len(records),
            "by_endpoint": {e: dict(sorted(c.items())) for e, c in sorted(by_endpoint.items())},
            "requests": [
                {"endpoint": r.endpoint, "params": dict(r.params), "status": r.status}
                for r in records
            ],
        }
