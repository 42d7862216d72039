"""Fault injection for the stand-in server: the failure modes a J-Quants client must survive.

Latency, random 5xx answers, 429 storms, truncated JSON bodies and endpoints that always
fail. Decisions come from one seeded RNG so a failing test run can be replayed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atft_pipeline.jquants.endpoints import ENDPOINTS


class FaultSettings(BaseModel):
    """Which faults to inject. The defaults inject nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_s: float = Field(0.0, ge=0.0, description="added to every API request")
    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of requests answered 5xx")
    storm_requests: int = Field(0, ge=0, description="the first N requests are answered 429")
    storm_s: float = Field(
        0.0, ge=0.0, description="every request in the first S seconds after the first one is 429"
    )
    truncate_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of 200 answers whose JSON body is cut short"
    )
    fail_endpoints: frozenset[str] = Field(
        frozenset(), description="V2 paths that always answer 500"
    )
    forbid_endpoints: frozenset[str] = Field(
        frozenset(), description="V2 paths that always answer 403 (access denied)"
    )
    seed: int = 0

    @field_validator("fail_endpoints", "forbid_endpoints")
    @classmethod
    def _known_paths(cls, paths: frozenset[str]) -> frozenset[str]:
        normalized = frozenset(p.strip("/").removeprefix("v2/") for p in paths)
        unknown = sorted(normalized - set(ENDPOINTS))
        if unknown:
            raise ValueError(f"unknown endpoint(s) {unknown}; known: {sorted(ENDPOINTS)}")
        return normalized


# Spec keys accepted by ``parse_faults`` -> FaultSettings field.
_SPEC_KEYS = {
    "latency": "latency_s",
    "error_rate": "error_rate",
    "storm": "storm_requests",
    "storm_s": "storm_s",
    "truncate_rate": "truncate_rate",
    "fail": "fail_endpoints",
    "forbid": "forbid_endpoints",
    "seed": "seed",
}


def parse_faults(spec: str) -> FaultSettings:
    """Parse a command-line fault spec.

    ``"latency=0.05,error_rate=0.1,storm=5,storm_s=2,truncate_rate=0.02,fail=markets/short-ratio,seed=7"``;
    ``fail=`` (500) and ``forbid=`` (403) may be repeated. An empty spec injects nothing.
    """
    values: dict[str, object] = {}
    paths: dict[str, set[str]] = {"fail": set(), "forbid": set()}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise ValueError(f"fault spec item {item!r} must look like key=value")
        if key not in _SPEC_KEYS:
            raise ValueError(f"unknown fault {key!r} in {spec!r}; known: {sorted(_SPEC_KEYS)}")
        if key in paths:
            paths[key].add(value)
        elif _SPEC_KEYS[key] in values:
            raise ValueError(f"fault {key!r} given twice in {spec!r}")
        else:
            values[_SPEC_KEYS[key]] = value
    for key, given in paths.items():
        if given:
            values[_SPEC_KEYS[key]] = frozenset(given)
    try:
        return FaultSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid fault spec {spec!r}: {problems}") from None


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request before (status) and after (truncate) answering it."""

    status: int | None = None  # answer with this status instead of serving the request
    truncate: bool = False


_SERVER_ERRORS = (500, 502, 503)  # a client must retry every 5xx, not only 500


class FaultInjector:
    """Draws the per-request faults from ``FaultSettings`` (thread-safe, seeded)."""

    def __init__(
        self, settings: FaultSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._rng = random.Random(settings.seed)
        self._lock = threading.Lock()
        self._seen = 0
        self._first_at: float | None = None

    def decide(self, endpoint_path: str) -> FaultDecision:
        s = self.settings
        with self._lock:
            now = self._clock()
            self._seen += 1
            if self._first_at is None:
                self._first_at = now
            if self._seen <= s.storm_requests or now - self._first_at < s.storm_s:
                return FaultDecision(status=429)
            if endpoint_path in s.fail_endpoints:
                return FaultDecision(status=500)
            if endpoint_path in s.forbid_endpoints:
                return FaultDecision(status=403)
            # Always draw both numbers so the sequence of decisions depends only on the seed
            # and the request count, not on which faults are switched on.
            error_draw, truncate_draw = self._rng.random(), self._rng.random()
            if error_draw < s.error_rate:
                return FaultDecision(status=self._rng.choice(_SERVER_ERRORS))
            return FaultDecision(truncate=truncate_draw < s.truncate_rate)
