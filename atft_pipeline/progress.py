"""Progress of long loops as log records a front end can show while they run.

A progress record is an ordinary INFO record of a library logger carrying two attributes:
``progress_key`` (what is progressing: successive records with the same key replace each
other on screen) and ``progress_keep`` (whether the last record of a key is worth a line
of its own in a log or pipe, as a training phase's last epoch is; a partition counter is not,
since its stage's own line already says how many partitions it did).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

PROGRESS_KEY = "progress_key"
PROGRESS_KEEP = "progress_keep"

log = logging.getLogger(__name__)


def progress_extra(key: str, *, keep: bool) -> dict[str, object]:
    """The ``extra`` that makes a log call a progress record."""
    return {PROGRESS_KEY: key, PROGRESS_KEEP: keep}


def progress_of(record: logging.LogRecord) -> tuple[str, bool] | None:
    """``(key, keep)`` of a progress record; ``None`` for any other record."""
    key = getattr(record, PROGRESS_KEY, None)
    return None if key is None else (key, bool(getattr(record, PROGRESS_KEEP, False)))


class Counter:
    """Counts ``done`` of ``total`` items and logs ``"<what> <done>/<total>"`` at most once per
    ``every_s`` seconds, and always when the count reaches the total — so a loop of 20,000 quick
    items costs a handful of records, and a slow one shows every step."""

    def __init__(
        self,
        what: str,
        total: int,
        *,
        every_s: float = 0.5,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.every_s = what, total, every_s
        self.logger, self.clock = logger, clock
        self.done = 0
        self._last: float | None = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        due = self._last is None or now - self._last >= self.every_s
        if due or self.done >= self.total:
            self._last = now
            self.logger.info(
                "%s %d/%d", self.what, self.done, self.total,
                extra=progress_extra(self.what, keep=False),
            )
