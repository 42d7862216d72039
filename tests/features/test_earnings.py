"""Earnings family: a hand-built disclosure history (intraday / after-close / holiday releases,
the 15:30 close from 2024-11-05, a correction, forecast revisions, a missing time) checked
date by date against a plain-Python oracle, with leakage and a nightly run on that history.

The contract every family shares (columns, leakage, lookback, empty sources) is in
``test_family_contract.py``."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

from atft_pipeline import calendar
from atft_pipeline.features import earnings
from atft_pipeline.jquants.endpoints import ENDPOINTS
from tests.helpers import (
    BARS,
    FINS,
    TOPIX,
    assert_contract,
    perturb_after,
    run,
    until,
)

FAMILY = earnings.FAMILY
D = dt.date
DAYS = calendar.trading_days("2023-01-04", "2024-12-30")
SESSIONS = calendar.trading_days("2023-01-04", "2026-12-30")  # the oracle looks ahead too
REVISIONS = ("EarnForecastRevision", "REITEarnForecastRevision")


@dataclass(frozen=True)
class Doc:
    code: str
    disc: dt.date
    time: str | None
    doc: str
    per: str | None = None
    per_end: dt.date | None = None

    @property
    def is_report(self) -> bool:
        return "FinancialStatements" in self.doc


def fs(code, disc, time, per, per_end):
    return Doc(code, disc, time, f"{per}FinancialStatements_Consolidated_JP", per, per_end)


DOCS = [
    fs("11110", D(2023, 2, 3), "15:00:00", "3Q", D(2022, 12, 31)),  # at the close: next session
    fs("11110", D(2023, 5, 12), "13:00:00", "FY", D(2023, 3, 31)),  # intraday: same session
    # after 18:00: the 24:30 update brings it, known from the next day
    Doc("11110", D(2023, 7, 20), "19:30:00", "EarnForecastRevision", "2Q", D(2023, 9, 30)),
    fs("11110", D(2023, 8, 4), "15:00:00", "1Q", D(2023, 6, 30)),
    fs("11110", D(2023, 8, 10), "17:00:00", "1Q", D(2023, 6, 30)),  # correction: not a report
    fs("11110", D(2023, 11, 3), "12:00:00", "2Q", D(2023, 9, 30)),  # Culture Day holiday
    fs("11110", D(2024, 2, 2), "15:00:00", "3Q", D(2023, 12, 31)),
    fs("11110", D(2024, 5, 10), "15:30:00", "FY", D(2024, 3, 31)),
    Doc("11110", D(2024, 5, 10), "15:30:00", "EarnForecastRevision", "FY", D(2025, 3, 31)),
    fs("11110", D(2024, 8, 2), "15:00:00", "1Q", D(2024, 6, 30)),
    Doc("11110", D(2024, 10, 30), "15:10:00", "DividendForecastRevision", "FY", D(2025, 3, 31)),
    fs("11110", D(2024, 11, 8), "15:10:00", "2Q", D(2024, 9, 30)),  # before the new 15:30 close
    # unknown time: after the close, and known from the next day
    fs("22220", D(2023, 3, 10), None, "3Q", D(2023, 1, 31)),
    fs("22220", D(2023, 6, 9), "14:00", "FY", D(2023, 4, 30)),  # HH:MM
    fs("22220", D(2024, 6, 14), "15:00:00", "FY", D(2024, 4, 30)),  # a skipped year of quarters
]


def tables_for(docs=DOCS, codes=("11110", "22220", "33330"), seed=0):
    rng = np.random.default_rng(seed)
    bars = []
    for code in codes:
        price = 1000.0
        for i, day in enumerate(DAYS):
            price *= math.exp(rng.normal(0.0, 0.02))
            halted = code == "22220" and i == 110
            close = None if halted else price
            bars.append({"Date": day, "Code": code, "C": close, "AdjC": close, "Vo": 1e4,
                         "AdjVo": 1e4, "AdjFactor": 1.0})
    topix = [{"Date": d, "C": 2000.0 * math.exp(0.01 * math.sin(i / 7) + 0.0002 * i)}
             for i, d in enumerate(DAYS)]
    fins = [{"Code": d.code, "DiscDate": d.disc, "DiscTime": d.time, "DocType": d.doc,
             "CurPerType": d.per, "CurPerEn": d.per_end, "DiscNo": f"{i:014d}"}
            for i, d in enumerate(docs)]
    return {
        BARS: pl.DataFrame(bars, schema=ENDPOINTS[BARS].schema()),
        TOPIX: pl.DataFrame(topix, schema=ENDPOINTS[TOPIX].schema()),
        FINS: pl.DataFrame(fins, schema=ENDPOINTS[FINS].schema()),
    }


# --------------------------------------------------------------------------------------
# oracle: plain Python, one date at a time


def sessions_between(a: dt.date, b: dt.date) -> int:
    """Sessions in [a, b) (negative when b < a), counted on the XTKS session list."""
    if b >= a:
        return sum(1 for s in SESSIONS if a <= s < b)
    return -sum(1 for s in SESSIONS if b <= s < a)


def reaction_index(doc: Doc) -> int:
    close = dt.time(15, 30) if doc.disc >= D(2024, 11, 5) else dt.time(15, 0)
    parsed = None if doc.time is None else dt.time.fromisoformat(doc.time)
    intraday = parsed is not None and parsed < close
    first = doc.disc if intraday else doc.disc + dt.timedelta(days=1)
    return next(i for i, s in enumerate(DAYS) if s >= first) if first <= DAYS[-1] else len(DAYS)


def known_on(doc: Doc) -> dt.date:
    """The fins/summary update that carries it: 18:00 of its day, else 24:30 (the next day)."""
    early = doc.time is not None and doc.time[:5] <= "18:00"
    return doc.disc if early else doc.disc + dt.timedelta(days=1)


def first_reports(known: list[Doc]) -> list[Doc]:
    seen, out = set(), []
    for doc in sorted(known, key=lambda d: (known_on(d), d.time or "99")):
        key = (doc.per, doc.per_end)
        if doc.is_report and key not in seen:
            seen.add(key)
            out.append(doc)
    return out


def oracle(docs, closes: dict[dt.date, float | None], tpx: dict[dt.date, float], t_index: int):
    t = DAYS[t_index]
    known = [d for d in docs if known_on(d) <= t]
    empty = {name: None for name in FAMILY.columns}
    empty["earn_report_count_250d"] = 0.0 if t_index >= 250 else None
    if not known:
        return empty

    def last_close(i):  # last known close on or before session i
        for j in range(i, -1, -1):
            if closes[DAYS[j]] is not None:
                return closes[DAYS[j]]
        return None

    out = dict(empty)
    latest = max(known_on(d) for d in known)
    day_docs = [d for d in known if known_on(d) == latest]
    out["earn_days_since_disclosure"] = sessions_between(latest, t)
    out["earn_latest_is_revision"] = int(any(d.doc in REVISIONS for d in day_docs))
    react = min(reaction_index(d) for d in day_docs)
    if react <= t_index and react >= 1 and closes[DAYS[react]] is not None:
        ret = closes[DAYS[react]] / last_close(react - 1) - 1
        out["earn_announcement_ret"] = ret
        out["earn_announcement_excess_ret"] = ret - (tpx[DAYS[react]] / tpx[DAYS[react - 1]] - 1)
    revisions = [known_on(d) for d in known if d.doc in REVISIONS]
    if revisions:
        out["earn_days_since_revision"] = sessions_between(max(revisions), t)
    reports = first_reports(known)
    if reports:
        last = reports[-1]
        out["earn_days_since_report"] = sessions_between(known_on(last), t)
        gap = 91
        if len(reports) >= 5 and reports[-5].per == last.per:
            seasonal = (known_on(reports[-4]) - known_on(reports[-5])).days
            gap = seasonal if 30 <= seasonal <= 190 else 91
        expected = known_on(last) + dt.timedelta(days=gap)
        out["earn_days_to_next_report"] = sessions_between(t, expected)
        out["earn_window"] = int(abs(out["earn_days_to_next_report"]) <= 3)
        base = reaction_index(last) - 1
        if closes[t] is not None and base >= 0:
            ret = closes[t] / last_close(base) - 1
            out["earn_ret_since_report"] = ret
            out["earn_excess_ret_since_report"] = ret - (tpx[t] / tpx[DAYS[base]] - 1)
    if t_index >= 250:
        start = DAYS[t_index - 250]
        out["earn_report_count_250d"] = float(
            sum(1 for r in reports if start < known_on(r) <= t)
        )
    return out


@pytest.fixture(scope="module")
def hand_built():
    tables = tables_for()
    return tables, run(FAMILY, tables, DAYS, DAYS)


def test_contract(hand_built):
    tables, out = hand_built
    assert_contract(out, FAMILY, tables, DAYS)
    assert len(FAMILY.columns) == 11


@pytest.mark.parametrize("code", ["11110", "22220", "33330"])
def test_every_date_matches_the_oracle(hand_built, code):
    tables, out = hand_built
    bars = tables[BARS].filter(pl.col("Code") == code)
    closes = dict(zip(bars["Date"], bars["AdjC"], strict=True))
    tpx = dict(zip(tables[TOPIX]["Date"], tables[TOPIX]["C"], strict=True))
    docs = [d for d in DOCS if d.code == code]
    rows = out.filter(pl.col("code") == code).sort("date")
    assert rows["date"].to_list() == DAYS
    for t_index, row in enumerate(rows.iter_rows(named=True)):
        want = oracle(docs, closes, tpx, t_index)
        for column, expected in want.items():
            got = row[column]
            if expected is None:
                assert got is None, (column, DAYS[t_index], got)
            else:
                where = (column, DAYS[t_index], got, expected)
                assert got == pytest.approx(expected, rel=2e-6, abs=1e-6), where


def test_release_timing(hand_built):
    """Spot checks of the timing rules the oracle encodes."""
    _, out = hand_built

    def at(day, column, code="11110"):
        return out.filter((pl.col("date") == day) & (pl.col("code") == code))[column].item()

    # 15:00 release on Fri 2023-02-03: no reaction until Monday's close
    assert at(D(2023, 2, 3), "earn_announcement_ret") is None
    assert at(D(2023, 2, 3), "earn_ret_since_report") == 0.0
    assert at(D(2023, 2, 6), "earn_announcement_ret") is not None
    # 13:00 release on 2023-05-12: the reaction is that day's close
    same_day = at(D(2023, 5, 12), "earn_ret_since_report")
    assert at(D(2023, 5, 12), "earn_announcement_ret") == pytest.approx(same_day)
    # the 2023-08-10 correction is a disclosure, not a new report
    assert at(D(2023, 8, 10), "earn_days_since_disclosure") == 0
    assert at(D(2023, 8, 10), "earn_days_since_report") == 4
    # 15:10 is after the close in October 2024, during the session from 2024-11-05
    assert at(D(2024, 10, 30), "earn_announcement_ret") is None
    assert at(D(2024, 11, 8), "earn_announcement_ret") is not None
    # a report and a revision on the same day: the latest disclosure day was a revision
    assert at(D(2024, 5, 10), "earn_latest_is_revision") == 1
    assert at(D(2024, 8, 2), "earn_latest_is_revision") == 0
    # the seasonal estimate: 2Q 2024 expected at 2024-08-02 + (2023-11-03 - 2023-08-04)
    expected = D(2024, 8, 2) + (D(2023, 11, 3) - D(2023, 8, 4))
    sessions_ahead = sessions_between(D(2024, 8, 2), expected)
    assert at(D(2024, 8, 2), "earn_days_to_next_report") == sessions_ahead
    assert at(D(2024, 11, 1), "earn_window") == 1


def test_no_leakage_hand_built(hand_built):
    tables, base = hand_built
    for t in (D(2023, 8, 4), D(2024, 5, 9), D(2024, 11, 7)):
        moved = run(FAMILY, perturb_after(tables, t), DAYS, DAYS)
        assert base.filter(pl.col("date") <= t).equals(moved.filter(pl.col("date") <= t)), t
        assert not base.filter(pl.col("date") > t).equals(moved.filter(pl.col("date") > t))


@pytest.mark.parametrize("t", [D(2023, 2, 3), D(2023, 11, 2), D(2024, 10, 30)])
def test_nightly_run_equals_backfill(hand_built, t):
    """A run whose window ends at t (the nightly update) gives the backfill's row for t: an
    after-close release on t must not need the next session to exist."""
    tables, base = hand_built
    nightly = run(FAMILY, until(tables, t), [t], [d for d in DAYS if d <= t])
    assert nightly.equals(base.filter(pl.col("date") == t))


def test_missing_column_is_a_clear_error():
    tables = tables_for()
    tables[FINS] = tables[FINS].drop("DiscTime")
    with pytest.raises(Exception, match="raw_statements.*DiscTime"):
        run(FAMILY, tables, DAYS, DAYS)
