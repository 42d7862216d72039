"""Statements and margin feature families: values against brute-force recomputation on
hand-built cases and point-in-time behaviour (restatements, publication lags, corrections).

The contract every family shares (columns, leakage, lookback, empty sources) is in
``test_family_contract.py``."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import polars as pl
import pytest
from scipy import stats

from atft_pipeline import calendar
from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.features import margin_daily, margin_weekly, statements
from atft_pipeline.features.registry import compute_family
from tests.helpers import (
    BARS,
    FINS,
    assert_contract,
    bars_rows,
    close_enough,
    run,
    table,
    value,
)

D = dt.date
WEEKLY = "markets/margin-interest"
ALERT = "markets/margin-alert"
FAMILIES = (statements.FAMILY, margin_weekly.FAMILY, margin_daily.FAMILY)


# --------------------------------------------------------------------------------------
# Hand-built bars: one or more codes, a price path and optional split (AdjFactor) days.


# --------------------------------------------------------------------------------------
# statements: a brute-force reimplementation evaluated date by date in plain Python.


@dataclass
class Doc:
    disc: dt.date
    doc_type: str
    per: str | None = None
    fy: dt.date | None = None
    per_end: dt.date | None = None
    nxt_fy: dt.date | None = None
    time: str = "15:00:00"
    values: dict | None = None

    def get(self, name):
        return (self.values or {}).get(name)

    @property
    def is_fs(self) -> bool:
        return "FinancialStatements" in self.doc_type

    @property
    def known(self) -> dt.date:
        """The fins/summary update carrying it: 18:00 of its day, else 24:30 (next day)."""
        early = self.time is not None and self.time[:5] <= "18:00"
        return self.disc if early else self.disc + dt.timedelta(days=1)

    @property
    def order(self):
        return (self.known, self.time, self.no)

    no: str = ""


def fs_doc(disc, per, fy_year, time="15:00:00", **values) -> Doc:
    fy = D(fy_year, 4, 1)
    ends = {
        "1Q": D(fy_year, 6, 30),
        "2Q": D(fy_year, 9, 30),
        "3Q": D(fy_year, 12, 31),
        "FY": D(fy_year + 1, 3, 31),
    }
    nxt = D(fy_year + 1, 4, 1) if per == "FY" else None
    return Doc(
        disc, f"{per}FinancialStatements_Consolidated_JP", per, fy, ends[per], nxt, time, values
    )


def statement_docs() -> list[Doc]:
    """Two fiscal years of a March-year-end company with every complication at once."""
    f20 = {"FSales": 420.0, "FOP": 40.0, "FNP": 25.0, "FEPS": 25.0, "FDivAnn": 10.0}
    base = {"Eq": 500.0, "TA": 1000.0, "BPS": 500.0, "ShOutFY": 110.0, "TrShFY": 10.0}
    docs = [
        fs_doc(D(2020, 8, 7), "1Q", 2020, Sales=100.0, OP=10.0, NP=6.0, EPS=6.0, **f20, **base),
        fs_doc(
            D(2020, 11, 6),
            "2Q",
            2020,
            Sales=210.0,
            OP=22.0,
            NP=13.0,
            EPS=13.0,
            CFO=15.0,
            **f20,
            **base,
        ),
        fs_doc(D(2021, 2, 5), "3Q", 2020, Sales=320.0, OP=31.0, NP=19.0, EPS=19.0, **f20, **base),
        fs_doc(
            D(2021, 5, 14),
            "FY",
            2020,
            Sales=430.0,
            OP=45.0,
            NP=27.0,
            EPS=27.0,
            CFO=35.0,
            NxFSales=460.0,
            NxFOP=48.0,
            NxFNp=30.0,
            NxFEPS=30.0,
            NxFDivAnn=12.0,
            **base,
        ),
        fs_doc(
            D(2021, 8, 6),
            "1Q",
            2021,
            Sales=110.0,
            OP=12.0,
            NP=7.0,
            EPS=7.0,
            FSales=460.0,
            FOP=48.0,
            FNP=30.0,
            FEPS=30.0,
            FDivAnn=12.0,
            Eq=520.0,
            TA=1040.0,
            ShOutFY=112.0,
            TrShFY=10.0,
        ),  # no BPS in this 1Q
        # Earnings revision: OP/NP/EPS revised, sales blank (unchanged), dividends untouched.
        Doc(
            D(2021, 9, 15),
            "EarnForecastRevision",
            "FY",
            D(2021, 4, 1),
            D(2022, 3, 31),
            None,
            "13:00:00",
            {"FOP": 55.0, "FNP": 33.0, "FEPS": 33.0},
        ),
        fs_doc(
            D(2021, 11, 5),
            "2Q",
            2021,
            time="15:30:00",
            Sales=225.0,
            OP=27.0,
            NP=16.0,
            EPS=16.0,
            CFO=20.0,
            FSales=470.0,
            FOP=55.0,
            FNP=33.0,
            FEPS=33.0,
            FDivAnn=12.0,
            Eq=530.0,
            TA=1050.0,
            BPS=530.0,
            ShOutFY=112.0,
            TrShFY=12.0,
        ),
        # Restatement of the prior fiscal year's FY figures (affects TTM and guided growth).
        fs_doc(
            D(2021, 12, 1),
            "FY",
            2020,
            Sales=440.0,
            OP=46.0,
            NP=28.0,
            EPS=28.0,
            CFO=36.0,
            NxFSales=460.0,
            NxFOP=48.0,
            NxFNp=30.0,
            NxFEPS=30.0,
            NxFDivAnn=12.0,
            **base,
        ),
        fs_doc(
            D(2022, 2, 4),
            "3Q",
            2021,
            Sales=340.0,
            OP=40.0,
            NP=24.0,
            EPS=24.0,
            FSales=470.0,
            FOP=55.0,
            FNP=33.0,
            FEPS=33.0,
            FDivAnn=12.0,
            Eq=540.0,
            TA=1060.0,
            ShOutFY=112.0,
            TrShFY=12.0,
        ),
        # Restatement of the current period.
        fs_doc(
            D(2022, 3, 1),
            "3Q",
            2021,
            Sales=345.0,
            OP=41.0,
            NP=25.0,
            EPS=25.0,
            FSales=470.0,
            FOP=55.0,
            FNP=33.0,
            FEPS=33.0,
            FDivAnn=12.0,
            Eq=540.0,
            TA=1060.0,
            ShOutFY=112.0,
            TrShFY=12.0,
        ),
        Doc(
            D(2022, 3, 10),
            "DividendForecastRevision",
            "FY",
            D(2021, 4, 1),
            D(2022, 3, 31),
            None,
            "15:00:00",
            {"FDivAnn": 14.0},
        ),
        fs_doc(
            D(2022, 5, 13),
            "FY",
            2021,
            Sales=460.0,
            OP=52.0,
            NP=31.0,
            EPS=31.0,
            CFO=40.0,
            NxFSales=500.0,
            NxFOP=60.0,
            NxFNp=36.0,
            NxFEPS=36.0,
            NxFDivAnn=15.0,
            Eq=560.0,
            TA=1100.0,
            BPS=560.0,
            ShOutFY=112.0,
            TrShFY=12.0,
        ),
        # A 1:2 split takes effect on 2022-06-01: later per-share figures are half.
        fs_doc(
            D(2022, 8, 5),
            "1Q",
            2022,
            Sales=120.0,
            OP=14.0,
            NP=8.0,
            EPS=4.0,
            FSales=500.0,
            FOP=60.0,
            FNP=36.0,
            FEPS=18.0,
            FDivAnn=7.5,
            Eq=570.0,
            TA=1120.0,
            BPS=285.0,
            ShOutFY=224.0,
            TrShFY=24.0,
        ),
        fs_doc(
            D(2022, 11, 4),
            "2Q",
            2022,
            Sales=250.0,
            OP=30.0,
            NP=17.0,
            EPS=8.5,
            CFO=22.0,
            FSales=510.0,
            FOP=58.0,
            FNP=35.0,
            FEPS=17.5,
            FDivAnn=7.5,
            Eq=580.0,
            TA=1130.0,
            BPS=290.0,
            ShOutFY=224.0,
            TrShFY=24.0,
        ),
    ]
    for i, doc in enumerate(docs):
        doc.no = f"{doc.disc:%Y%m%d}{i:04d}"
        if doc.is_fs:
            _add_equity_fields(doc, i)
    # after 18:00: the 24:30 update brings it, so it is known from the next day
    docs[3].time = "19:00:00"
    return docs


def _add_equity_fields(doc: Doc, i: int) -> None:
    """ShEq on every statement (a little below Eq, moving with the quarter); the reported ROE
    (percent) on full-year statements; parent-only equity and ROE on all but the first FY."""
    values = doc.values
    values["ShEq"] = values["Eq"] * 0.9 + 3.0 * i
    if doc.per == "FY":
        values["ROE"] = round(100 * values["NP"] / values["ShEq"], 2)
        if i > 4:
            values["NCShEq"] = values["ShEq"] * 0.6
            values["NCROE"] = 3.25


def statement_table(code: str, docs: list[Doc]) -> pl.DataFrame:
    rows = []
    for doc in docs:
        rows.append(
            {
                "DiscDate": doc.disc,
                "DiscTime": doc.time,
                "Code": code,
                "DiscNo": doc.no,
                "DocType": doc.doc_type,
                "CurPerType": doc.per,
                "CurFYSt": doc.fy,
                "CurPerSt": doc.fy,
                "CurPerEn": doc.per_end,
                "CurFYEn": doc.fy.replace(year=doc.fy.year + 1) - dt.timedelta(days=1)
                if doc.fy
                else None,
                "NxtFYSt": doc.nxt_fy,
                **(doc.values or {}),
            }
        )
    return table(FINS, rows)


def growth(cur, prior):
    if cur is None or prior is None or abs(prior) < 1e-12:
        return None
    return (cur - prior) / abs(prior)


def pos_div(num, den):
    return None if num is None or den is None or den <= 0 else num / den


def expected_statements(docs: list[Doc], bars: pl.DataFrame, t: dt.date) -> dict:
    """Every statements feature of one code at t, from first principles."""
    factors = {r["Date"]: r["AdjFactor"] for r in bars.iter_rows(named=True)}
    close = bars.filter(pl.col("Date") == t)["C"].item()

    def to_t(day):  # per-share multiplier from the units of `day` to the units of t
        return math.prod(f for d, f in factors.items() if day < d <= t)

    known = [d for d in docs if d.known <= t]
    fs = [d for d in known if d.is_fs]
    out: dict = {}
    if not fs:
        return out

    def latest(fy, per, pool=fs):
        cands = [d for d in pool if d.fy == fy and d.per == per]
        return max(cands, key=lambda d: d.order) if cands else None

    def frontier(pool):
        top = max(d.per_end for d in pool)
        key = max((d for d in pool if d.per_end == top), key=lambda d: d.order)
        return latest(key.fy, key.per, pool)

    cur = frontier(fs)
    prior_fy = cur.fy.replace(year=cur.fy.year - 1)
    prev_per = {"2Q": "1Q", "3Q": "2Q", "FY": "3Q"}.get(cur.per)
    py = latest(prior_fy, cur.per)
    pq = latest(cur.fy, prev_per) if prev_per else None
    pyq = latest(prior_fy, prev_per) if prev_per else None
    pfy = latest(prior_fy, "FY")

    def g(doc, name):
        return doc.get(name) if doc else None

    def quarterly(doc, prev, name):
        if doc is None:
            return None
        if doc.per == "1Q":
            return doc.get(name)
        return (
            None
            if prev is None or doc.get(name) is None or prev.get(name) is None
            else doc.get(name) - prev.get(name)
        )

    def ttm(name, per_share=False):
        s = (lambda d: to_t(d.disc)) if per_share else (lambda d: 1.0)
        if cur.per == "FY":
            return cur.get(name) * s(cur)
        if pfy is None or py is None:
            return None
        return cur.get(name) * s(cur) + pfy.get(name) * s(pfy) - py.get(name) * s(py)

    for name, col in (("sales", "Sales"), ("op", "OP"), ("np", "NP")):
        out[f"stmt_{name}_yoy"] = growth(g(cur, col), g(py, col))
        out[f"stmt_{name}_q_yoy"] = growth(quarterly(cur, pq, col), quarterly(py, pyq, col))
    out["stmt_eps_yoy"] = (
        growth(cur.get("EPS") * to_t(cur.disc), py.get("EPS") * to_t(py.disc)) if py else None
    )
    margin = cur.get("OP") / cur.get("Sales")
    out["stmt_op_margin"] = margin
    out["stmt_np_margin"] = cur.get("NP") / cur.get("Sales")
    q_op, q_sales = quarterly(cur, pq, "OP"), quarterly(cur, pq, "Sales")
    out["stmt_op_margin_q"] = None if q_op is None or q_sales is None else q_op / q_sales
    out["stmt_op_margin_yoy_chg"] = margin - py.get("OP") / py.get("Sales") if py else None
    annual = 365.25 / ((cur.per_end - cur.fy).days + 1)
    out["stmt_roe"] = pos_div(cur.get("NP") * annual, cur.get("Eq"))
    out["stmt_roa"] = pos_div(cur.get("NP") * annual, cur.get("TA"))
    out["stmt_equity_ratio"] = cur.get("EqAR") or (cur.get("Eq") / cur.get("TA"))
    out["stmt_roe_sheq"] = pos_div(cur.get("NP") * annual, cur.get("ShEq"))
    out["stmt_sheq_ratio"] = pos_div(cur.get("ShEq"), cur.get("TA"))
    out["stmt_noncontrolling_share"] = 1.0 - cur.get("ShEq") / cur.get("Eq")
    out["stmt_sheq_yoy"] = growth(cur.get("ShEq"), g(py, "ShEq"))
    with_roe = [d for d in fs if d.get("ROE") is not None]
    if with_roe:
        out["stmt_roe_reported"] = frontier(with_roe).get("ROE") / 100
    with_parent = [d for d in fs if d.get("NCShEq") is not None]
    if with_parent:
        p = frontier(with_parent)
        out["stmt_nc_roe_reported"] = p.get("NCROE") / 100
        out["stmt_parent_equity_share"] = p.get("NCShEq") / p.get("ShEq")
    out["stmt_fiscal_quarter"] = {"1Q": 1.0, "2Q": 2.0, "3Q": 3.0, "FY": 4.0}[cur.per]
    out["stmt_days_since_disc"] = float((t - cur.known).days)

    # Guidance: per fiscal year, carried-forward values per field with their source date.
    fields = {
        "fsales": ("FSales", "NxFSales"),
        "fop": ("FOP", "NxFOP"),
        "fnp": ("FNP", "NxFNp"),
        "feps": ("FEPS", "NxFEPS"),
        "fdiv": ("FDivAnn", "NxFDivAnn"),
    }
    events: dict[dt.date, list] = {}
    for doc in sorted(known, key=lambda d: d.order):
        is_div, is_earn = (
            "DividendForecastRevision" in doc.doc_type,
            "EarnForecastRevision" in doc.doc_type,
        )
        if not (doc.is_fs or is_div or is_earn):
            continue
        fy = doc.nxt_fy if doc.is_fs and doc.per == "FY" else doc.fy
        chain = events.setdefault(fy, [])
        state = dict(chain[-1][1]) if chain else {f: (None, None) for f in fields}
        for f, (cur_col, nxt_col) in fields.items():
            v = doc.get(nxt_col if doc.is_fs and doc.per == "FY" else cur_col)
            speaks = is_div if f == "fdiv" else is_earn
            if doc.is_fs or (speaks and v is not None):
                state[f] = (v, doc.disc)
        if chain and chain[-1][0] == doc.known:
            chain[-1] = (doc.known, state)
        else:
            chain.append((doc.known, state))

    def at_t(entry):
        v, src = entry
        return None if v is None else v * to_t(src)

    same = events.get(cur.fy)
    if same:
        s = same[-1][1]
        out["stmt_sales_progress"] = pos_div(cur.get("Sales"), s["fsales"][0])
        out["stmt_op_progress"] = pos_div(cur.get("OP"), s["fop"][0])
        out["stmt_np_progress"] = pos_div(cur.get("NP"), s["fnp"][0])
    front_fy = max(events)
    chain = events[front_fy]
    now = chain[-1][1]
    prev = chain[-2][1] if len(chain) > 1 else None
    for f in ("fsales", "fop", "fnp"):
        out[f"stmt_{f}_rev"] = growth(now[f][0], prev[f][0]) if prev else None
    out["stmt_feps_rev"] = growth(at_t(now["feps"]), at_t(prev["feps"])) if prev else None
    first_fop = next(s["fop"][0] for _, s in chain if s["fop"][0] is not None)
    out["stmt_fop_rev_fy"] = growth(now["fop"][0], first_fop)
    last_fy = latest(front_fy.replace(year=front_fy.year - 1), "FY")
    out["stmt_fop_growth"] = growth(now["fop"][0], g(last_fy, "OP"))
    out["stmt_days_since_forecast"] = float((t - chain[-1][0]).days)
    feps, fdiv = at_t(now["feps"]), at_t(now["fdiv"])
    out["stmt_div_yield_fwd"] = None if fdiv is None else fdiv / close
    out["stmt_per_fwd"] = pos_div(close, feps)
    out["stmt_earnings_yield_fwd"] = None if feps is None else feps / close
    eps_ttm = ttm("EPS", per_share=True)
    out["stmt_per_ttm"] = pos_div(close, eps_ttm)
    out["stmt_earnings_yield_ttm"] = None if eps_ttm is None else eps_ttm / close
    with_bps = [d for d in fs if d.get("BPS") is not None]
    if with_bps:
        b = frontier(with_bps)
        out["stmt_pbr"] = pos_div(close, b.get("BPS") * to_t(b.disc))
    shares_t = (cur.get("ShOutFY") - cur.get("TrShFY")) / to_t(cur.disc)
    out["stmt_sales_to_price"] = pos_div(ttm("Sales"), close * shares_t)
    out["stmt_book_to_market"] = pos_div(cur.get("ShEq"), close * shares_t)
    if py:
        py_shares_in_cur_units = (py.get("ShOutFY") - py.get("TrShFY")) / math.prod(
            f for d, f in factors.items() if py.disc < d <= cur.disc
        )
        out["stmt_shares_chg_yoy"] = growth(
            cur.get("ShOutFY") - cur.get("TrShFY"), py_shares_in_cur_units
        )
    with_cfo = [d for d in fs if d.get("CFO") is not None]
    if with_cfo:
        c = frontier(with_cfo)
        out["stmt_accruals"] = (c.get("NP") - c.get("CFO")) / c.get("TA")
    return out


@pytest.fixture(scope="module")
def statement_case():
    days = calendar.trading_days("2020-06-01", "2022-12-30")
    bars = table(
        BARS, bars_rows("11110", days, {D(2022, 6, 1): 0.5}) + bars_rows("22220", days, seed=1)
    )
    docs = statement_docs()
    tables = {BARS: bars, FINS: statement_table("11110", docs)}
    return (
        days,
        bars.filter(pl.col("Code") == "11110"),
        docs,
        tables,
        run(statements.FAMILY, tables, days),
    )


@pytest.mark.slow
def test_statements_match_brute_force_on_every_day(statement_case):
    days, bars, docs, _, out = statement_case
    assert_contract(out, statements.FAMILY)
    checked = 0
    for t in days:
        want = expected_statements(docs, bars, t)
        row = out.filter((pl.col("date") == t) & (pl.col("code") == "11110")).row(0, named=True)
        for column in statements.FAMILY.columns:
            assert close_enough(row[column], want.get(column)), (
                t,
                column,
                row[column],
                want.get(column),
            )
            checked += want.get(column) is not None
    assert checked > 20 * len(days)  # most features are defined on most days
    # A code without disclosures has no statement features (null, never 0).
    other = out.filter(pl.col("code") == "22220").drop("date", "code")
    assert other.null_count().row(0) == (other.height,) * other.width


def test_restatement_replaces_figures_only_from_its_own_disclosure(statement_case):
    _, _, _, _, out = statement_case
    before, on = D(2022, 2, 28), D(2022, 3, 1)  # 3Q FY2021 restated on 2022-03-01
    # YTD 3Q OP vs prior year: 40 -> 41 against 31.
    assert value(out, before, "11110", "stmt_op_yoy") == pytest.approx((40 - 31) / 31, rel=1e-6)
    assert value(out, on, "11110", "stmt_op_yoy") == pytest.approx((41 - 31) / 31, rel=1e-6)
    # The restated prior-year FY (2021-12-01) changes TTM sales from that day on only:
    # before: 225 + 430 - 210; from: 225 + 440 - 210 (2Q FY2021 is current).
    closes = dict(zip(statement_case[1]["Date"], statement_case[1]["C"], strict=True))
    for day, ttm_sales in ((D(2021, 11, 30), 225 + 430 - 210), (D(2021, 12, 1), 225 + 440 - 210)):
        # sales / market cap, 100 shares net of treasury
        assert value(out, day, "11110", "stmt_sales_to_price") * closes[day] * 100 == pytest.approx(
            ttm_sales, rel=1e-5
        )
    # ... and never makes the old period "current": the fiscal quarter stays 2.
    assert value(out, D(2021, 12, 1), "11110", "stmt_fiscal_quarter") == 2.0


def test_yoy_growth_compares_the_same_fiscal_quarter_of_the_prior_year(statement_case):
    _, _, _, _, out = statement_case
    # 1Q FY2022 (disclosed 2022-08-05): sales 120 vs 1Q FY2021 110; EPS 4.0 after a 1:2 split
    # vs 7.0 before it -> 8.0 vs 7.0 in common units.
    assert value(out, D(2022, 8, 5), "11110", "stmt_sales_yoy") == pytest.approx(10 / 110, rel=1e-6)
    assert value(out, D(2022, 8, 5), "11110", "stmt_eps_yoy") == pytest.approx(1 / 7, rel=1e-6)
    # 2Q FY2022: quarterly sales 130 vs 115 a year earlier.
    assert value(out, D(2022, 11, 4), "11110", "stmt_sales_q_yoy") == pytest.approx(
        15 / 115, rel=1e-6
    )
    # Before any prior-year quarter exists, YoY is null (not 0).
    assert value(out, D(2020, 12, 1), "11110", "stmt_sales_yoy") is None


def test_per_share_valuation_is_scaled_across_a_split(statement_case):
    _, bars, _, _, out = statement_case
    closes = dict(zip(bars["Date"], bars["C"], strict=True))
    # FY2021 statement (2022-05-13): BPS 560, FY2022 forecast EPS 36, dividend 15 in pre-split
    # units; from the 2022-06-01 ex-date they are worth half per (new) share.
    for day, scale in ((D(2022, 5, 31), 1.0), (D(2022, 6, 1), 0.5), (D(2022, 7, 1), 0.5)):
        assert value(out, day, "11110", "stmt_pbr") == pytest.approx(
            closes[day] / (560 * scale), rel=1e-5
        )
        assert value(out, day, "11110", "stmt_per_fwd") == pytest.approx(
            closes[day] / (36 * scale), rel=1e-5
        )
        assert value(out, day, "11110", "stmt_div_yield_fwd") == pytest.approx(
            15 * scale / closes[day], rel=1e-5
        )
    # The raw close halves on the ex-date; the split-consistent PBR does not jump.
    jump = value(out, D(2022, 6, 1), "11110", "stmt_pbr") / value(
        out, D(2022, 5, 31), "11110", "stmt_pbr"
    )
    assert jump == pytest.approx(closes[D(2022, 6, 1)] / closes[D(2022, 5, 31)] * 2, rel=1e-5)
    assert 0.8 < jump < 1.25


def test_forecast_revisions_include_revision_documents(statement_case):
    _, _, _, _, out = statement_case
    # EarnForecastRevision on 2021-09-15: OP 48 -> 55, sales unchanged (blank carried).
    assert value(out, D(2021, 9, 14), "11110", "stmt_fop_rev") == 0.0  # 1Q repeated the forecast
    assert value(out, D(2021, 9, 15), "11110", "stmt_fop_rev") == pytest.approx(7 / 48, rel=1e-6)
    assert value(out, D(2021, 9, 15), "11110", "stmt_fsales_rev") == pytest.approx(0.0)
    assert value(out, D(2021, 9, 15), "11110", "stmt_days_since_forecast") == 0.0
    # DividendForecastRevision on 2022-03-10 moves only the dividend yield.
    closes = dict(zip(statement_case[1]["Date"], statement_case[1]["C"], strict=True))
    assert value(out, D(2022, 3, 10), "11110", "stmt_div_yield_fwd") == pytest.approx(
        14 / closes[D(2022, 3, 10)], rel=1e-5
    )
    assert value(out, D(2022, 3, 9), "11110", "stmt_div_yield_fwd") == pytest.approx(
        12 / closes[D(2022, 3, 9)], rel=1e-5
    )


# --------------------------------------------------------------------------------------
# weekly margin


def weekly_rows(code: str, fridays: list[dt.date], seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for day in fridays:
        long, short = float(rng.integers(10_000, 60_000)), float(rng.integers(1_000, 30_000))
        rows.append(
            {
                "Date": day,
                "Code": code,
                "LongVol": long,
                "ShrtVol": short,
                "LongNegVol": round(long * rng.uniform(0.1, 0.5)),
                "ShrtNegVol": round(short * rng.uniform(0.1, 0.5)),
                "LongStdVol": None,
                "ShrtStdVol": None,
                "IssType": "2" if seed % 2 else "1",
            }
        )
    return rows


@pytest.fixture(scope="module")
def weekly_case():
    days = calendar.trading_days("2021-01-04", "2022-09-30")
    codes = ["11110", "22220", "33330", "44440"]
    splits = {"22220": {D(2021, 11, 1): 0.5}}
    bars = table(
        BARS, [r for i, c in enumerate(codes) for r in bars_rows(c, days, splits.get(c), seed=i)]
    )
    fridays = [
        d
        for d in (days[0] + dt.timedelta(days=k) for k in range((days[-1] - days[0]).days))
        if d.weekday() == 4
    ]
    rows = [r for i, c in enumerate(codes) for r in weekly_rows(c, fridays, seed=i)]
    # The split doubles the share count of 22220's balances from the first week after it.
    rows = [
        {**r, "LongVol": r["LongVol"] * 2, "ShrtVol": r["ShrtVol"] * 2}
        if r["Code"] == "22220" and r["Date"] >= D(2021, 11, 1)
        else r
        for r in rows
    ]
    # 44440 stops being reported in June 2022 (stale afterwards).
    rows = [r for r in rows if not (r["Code"] == "44440" and r["Date"] > D(2022, 6, 3))]
    tables = {BARS: bars, WEEKLY: table(WEEKLY, rows)}
    return days, bars, table(WEEKLY, rows), run(margin_weekly.FAMILY, tables, days)


def expected_weekly(days, bars: pl.DataFrame, weekly: pl.DataFrame) -> dict[tuple, dict]:
    """(date, code) -> features (before ranks) by direct evaluation per day and code."""
    index = {d: i for i, d in enumerate(days)}
    out: dict[tuple, dict] = {}
    for code in bars["Code"].unique():
        b = bars.filter(pl.col("Code") == code).sort("Date")
        level = np.cumsum(np.log(b["AdjFactor"].to_numpy()))
        vol_base = b["Vo"].to_numpy() * np.exp(level)
        bdates = b["Date"].to_list()
        w = weekly.filter(pl.col("Code") == code).sort("Date").to_dicts()
        for r in w:
            last_session = max(d for d in days if d <= r["Date"])
            r["published"] = (
                days[index[last_session] + 2] if index[last_session] + 2 < len(days) else None
            )
            k = bdates.index(last_session)
            r["adv"] = vol_base[k - 19 : k + 1].mean() if k >= 19 else None
            r["long_b"] = r["LongVol"] * math.exp(level[k])
            r["short_b"] = r["ShrtVol"] * math.exp(level[k])
        for t in days:
            visible = [
                i for i, r in enumerate(w) if r["published"] is not None and r["published"] <= t
            ]
            if not visible or (t - w[visible[-1]]["published"]).days > 28:
                out[(t, code)] = {"mrgw_iss_margin": 0.0, "mrgw_iss_loan": 0.0}
                continue
            i = visible[-1]
            r = w[i]
            adv = r["adv"]
            per_adv = partial(ratio_or_none, den=adv)
            z = partial(last_zscore, end=i + 1)

            longs = [x["long_b"] for x in w]
            shorts = [x["short_b"] for x in w]
            ratios = [s / lg for s, lg in zip(shorts, longs, strict=True)]
            out[(t, code)] = {
                "mrgw_long_to_adv": per_adv(r["long_b"]),
                "mrgw_short_to_adv": per_adv(r["short_b"]),
                "mrgw_net_to_adv": per_adv(r["long_b"] - r["short_b"]),
                "mrgw_short_long_ratio": r["ShrtVol"] / r["LongVol"],
                "mrgw_long_chg_1w": per_adv(longs[i] - longs[i - 1]) if i >= 1 else None,
                "mrgw_short_chg_1w": per_adv(shorts[i] - shorts[i - 1]) if i >= 1 else None,
                "mrgw_long_chg_4w": per_adv(longs[i] - longs[i - 4]) if i >= 4 else None,
                "mrgw_short_chg_4w": per_adv(shorts[i] - shorts[i - 4]) if i >= 4 else None,
                "mrgw_long_logchg_1w": math.log(longs[i] / longs[i - 1]) if i >= 1 else None,
                "mrgw_short_logchg_1w": math.log(shorts[i] / shorts[i - 1]) if i >= 1 else None,
                "mrgw_long_z26": z(longs, 26),
                "mrgw_short_z26": z(shorts, 26),
                "mrgw_long_z52": z(longs, 52),
                "mrgw_short_z52": z(shorts, 52),
                "mrgw_ratio_z52": z(ratios, 52),
                "mrgw_long_neg_share": r["LongNegVol"] / r["LongVol"],
                "mrgw_short_neg_share": r["ShrtNegVol"] / r["ShrtVol"],
                "mrgw_iss_margin": float(r["IssType"] == "1"),
                "mrgw_iss_loan": float(r["IssType"] == "2"),
                "mrgw_weeks_since_pub": (t - r["published"]).days / 7,
            }
    return out


def ratio_or_none(num, den):
    return None if den is None else num / den


def last_zscore(series, n, end):
    """z-score of series[end - 1] within series[end - n:end] (ddof 1); None if too short."""
    if end < n:
        return None
    return float(stats.zscore(np.array(series[end - n : end]), ddof=1)[-1])


@pytest.mark.slow
def test_weekly_margin_matches_brute_force(weekly_case):
    days, bars, weekly, out = weekly_case
    assert_contract(out, margin_weekly.FAMILY)
    want = expected_weekly(days, bars, weekly)
    ranked = {r: s for s, r, _ in margin_weekly._RANKED}
    for row in out.iter_rows(named=True):
        expected = want[(row["date"], row["code"])]
        for column in margin_weekly.FAMILY.columns:
            if column in ranked:
                continue
            assert close_enough(row[column], expected.get(column), rel=1e-5), (
                row["date"],
                row["code"],
                column,
            )
    # Ranks: scipy's average ranks scaled to [0, 1] among the codes with a value that day.
    for day in days[300::37]:
        frame = out.filter(pl.col("date") == day)
        for rank_col, source in ranked.items():
            values = frame[source].to_numpy()
            have = ~np.isnan(values.astype(float))
            if have.sum() < 2:
                continue
            r = (stats.rankdata(values[have]) - 1) / (have.sum() - 1)
            assert np.allclose(frame[rank_col].to_numpy()[have], r, atol=1e-6)


def test_weekly_margin_is_visible_exactly_from_its_publication_session(weekly_case):
    _, _, weekly, out = weekly_case
    # Application date Fri 2021-07-16; Mon 2021-07-19 is a session, so it is published on
    # Tue 2021-07-20. Fri 2021-09-17 precedes the Mon 2021-09-20 holiday: published Wed 09-22.
    for app, before, published in (
        (D(2021, 7, 16), D(2021, 7, 19), D(2021, 7, 20)),
        (D(2021, 9, 17), D(2021, 9, 21), D(2021, 9, 22)),
    ):
        long = weekly.filter((pl.col("Date") == app) & (pl.col("Code") == "11110"))[
            "LongVol"
        ].item()
        short = weekly.filter((pl.col("Date") == app) & (pl.col("Code") == "11110"))[
            "ShrtVol"
        ].item()
        assert value(out, published, "11110", "mrgw_short_long_ratio") == pytest.approx(
            short / long, rel=1e-6
        )
        assert value(out, before, "11110", "mrgw_short_long_ratio") != pytest.approx(
            short / long, rel=1e-6
        )
        assert value(out, published, "11110", "mrgw_weeks_since_pub") == 0.0


def test_weekly_margin_changes_are_split_consistent_and_stale_series_go_null(weekly_case):
    _, _, weekly, out = weekly_case
    # Across 22220's split the reported balance doubles; in base units the change is the
    # economic change only (the brute-force test checks the value; here: no spurious jump).
    w = weekly.filter(pl.col("Code") == "22220").sort("Date")
    k = w["Date"].search_sorted(D(2021, 11, 1))
    economic = w["LongVol"][k] / 2 - w["LongVol"][k - 1]
    published = calendar.shift_trading_days(w["Date"][k], 2)
    adv_change = value(out, published, "22220", "mrgw_long_chg_1w")
    assert np.sign(adv_change) == np.sign(economic)
    assert value(out, published, "22220", "mrgw_long_logchg_1w") == pytest.approx(
        math.log(w["LongVol"][k] / 2 / w["LongVol"][k - 1]), rel=1e-5
    )
    # 44440's last week is 2022-06-03 (published 06-07): current for 28 days, then null.
    assert value(out, D(2022, 7, 5), "44440", "mrgw_long_to_adv") is not None
    assert value(out, D(2022, 7, 6), "44440", "mrgw_long_to_adv") is None
    assert value(out, D(2022, 7, 6), "44440", "mrgw_iss_loan") == 0.0


@pytest.fixture(scope="module")
def regime_switch_case():
    """One code: weekly rows up to the switch, then daily rows (application date = each
    session, PubDate = the next session); the weekly-only feed of the same weeks beside it."""
    days = calendar.trading_days("2021-01-04", "2022-09-30")
    switch = D(2022, 6, 1)
    bars = table(BARS, bars_rows("11110", days, seed=5))
    fridays = [d for d in days if d.weekday() == 4 and d < switch]
    weekly = weekly_rows("11110", fridays, seed=5)
    daily = [
        {**r, "PubDate": days[days.index(r["Date"]) + 1]}
        for r in weekly_rows("11110", [d for d in days[:-1] if d >= switch], seed=6)
    ]
    both = {BARS: bars, WEEKLY: table(WEEKLY, weekly + daily)}
    weekly_only = {BARS: bars, WEEKLY: table(WEEKLY, weekly)}
    return (
        days,
        switch,
        bars,
        table(WEEKLY, weekly + daily),
        run(margin_weekly.FAMILY, both, days),
        run(margin_weekly.FAMILY, weekly_only, days),
    )


def test_margin_interest_regime_switch_keeps_weekly_definitions(regime_switch_case):
    """After the switch each session shows the row published that day (PubDate), and the
    weekly statistics compare with the previous calendar week's last application date."""
    days, switch, bars, rows, out, weekly_only = regime_switch_case
    before = [d for d in days if d < switch]
    assert out.filter(pl.col("date").is_in(before)).equals(
        weekly_only.filter(pl.col("date").is_in(before))
    )
    vol = bars.sort("Date")["Vo"].to_numpy()
    bar_days = bars.sort("Date")["Date"].to_list()
    rows = rows.sort("Date").to_dicts()
    apps = [r["Date"] for r in rows]
    checked = 0
    for t in [d for d in days if d > switch]:
        i = max(k for k, r in enumerate(rows) if (r["PubDate"] or D(1900, 1, 1)) <= t)
        r = rows[i]
        assert r["PubDate"] == t  # the row published at t is the latest one
        k = bar_days.index(r["Date"])
        adv = vol[k - 19 : k + 1].mean()
        week = r["Date"] - dt.timedelta(days=r["Date"].weekday())
        # the last application date of each earlier calendar week, oldest first
        ends = [
            j for j, a in enumerate(apps[:i]) if a < week and (j + 1 == i or
            apps[j + 1] - dt.timedelta(days=apps[j + 1].weekday())
            != a - dt.timedelta(days=a.weekday()))
        ]
        longs = [rows[j]["LongVol"] for j in ends] + [r["LongVol"]]
        shorts = [rows[j]["ShrtVol"] for j in ends] + [r["ShrtVol"]]
        want = {
            "mrgw_long_to_adv": r["LongVol"] / adv,
            "mrgw_long_chg_1w": (longs[-1] - longs[-2]) / adv,
            "mrgw_short_chg_4w": (shorts[-1] - shorts[-5]) / adv,
            "mrgw_short_logchg_1w": math.log(shorts[-1] / shorts[-2]),
            "mrgw_long_z26": last_zscore(longs, 26, len(longs)),
            "mrgw_short_z52": last_zscore(shorts, 52, len(shorts)),
            "mrgw_weeks_since_pub": 0.0,
        }
        for column, expected in want.items():
            assert close_enough(value(out, t, "11110", column), expected, rel=1e-5), (t, column)
            checked += 1
    assert checked > 7 * 80


# --------------------------------------------------------------------------------------
# daily margin alerts


@pytest.fixture(scope="module")
def alert_case():
    days = calendar.trading_days("2022-01-04", "2022-12-30")
    codes = ["11110", "22220"]
    bars = table(BARS, [r for i, c in enumerate(codes) for r in bars_rows(c, days, seed=i)])
    rng = np.random.default_rng(3)
    under = np.zeros(len(days), bool)
    for start in (30, 95, 100, 180):  # alert episodes of 5..12 sessions
        under[start : start + int(rng.integers(5, 13))] = True
    rows = []
    for j in np.flatnonzero(under):
        rows.append(
            {
                "PubDate": days[j],
                "Code": "11110",
                "AppDate": days[j - 1],
                "PubReason.DailyPublication": True,
                "PubReason.Restricted": bool(j % 3 == 0),
                "PubReason.Monitoring": False,
                "PubReason.RestrictedByJSF": False,
                "PubReason.PrecautionByJSF": bool(j % 5 == 0),
                "PubReason.UnclearOrSecOnAlert": False,
                "ShrtOut": float(rng.integers(1_000, 9_000)),
                "ShrtOutChg": float(rng.integers(-500, 500)),
                "ShrtOutRatio": float(rng.uniform(0.1, 2.0)),
                "LongOut": float(rng.integers(1_000, 9_000)),
                "LongOutChg": float(rng.integers(-500, 500)),
                "LongOutRatio": None,  # "*" on the wire
                "SLRatio": float(rng.uniform(10, 90)),
                "ShrtNegOut": 300.0,
                "LongNegOut": 700.0,
                "TSEMrgnRegCls": "004" if j % 2 else ("102" if j % 3 == 0 else "002"),
            }
        )
    # A correction for an old application date published on a day not otherwise under alert.
    correction = {**rows[0], "PubDate": days[60], "ShrtOut": 1.0}
    # A publication dated on a non-session (Sunday) counts from the next session.
    sunday = {**rows[0], "PubDate": D(2022, 12, 4), "AppDate": D(2022, 12, 2), "ShrtOut": 4321.0}
    tables = {BARS: bars, ALERT: table(ALERT, [*rows, correction, sunday])}
    return days, bars, under, rows, run(margin_daily.FAMILY, tables, days)


def test_margin_alert_flags_history_and_quantities(alert_case):
    days, bars, under, rows, out = alert_case
    assert_contract(out, margin_daily.FAMILY)
    mine = out.filter(pl.col("code") == "11110").sort("date")
    alert = mine["mrgd_alert"].to_numpy()
    expected_alert = under.astype(float)
    monday = days.index(D(2022, 12, 5))
    assert not under[monday]
    expected_alert[monday] = 1.0  # the Sunday publication
    assert np.array_equal(alert, expected_alert)  # the correction on days[60] is not an alert
    # History: rolling count over 20 sessions and sessions since the last alert (capped).
    counts = [None if j < 19 else expected_alert[j - 19 : j + 1].sum() for j in range(len(days))]
    assert mine["mrgd_alert_days_20"].to_list() == counts
    last = None
    for j, got in enumerate(mine["mrgd_days_since_alert"].to_list()):
        last = j if expected_alert[j] else last
        since = None if last is None else j - last
        want = since if since is not None and since <= 120 else (120 if j >= 120 else None)
        assert got == want, (days[j], got, want)
    new = [None] + [
        float(expected_alert[j] and not expected_alert[j - 1]) for j in range(1, len(days))
    ]
    assert mine["mrgd_alert_new"].to_list() == new
    # Quantities: from the row published at t, null when not under alert; flags 0 then.
    b = bars.filter(pl.col("Code") == "11110").sort("Date")
    vol = b["Vo"].to_numpy()
    by_pub = {r["PubDate"]: r for r in rows}
    for j, day in enumerate(days):
        row = mine.row(j, named=True)
        if not expected_alert[j]:
            assert row["mrgd_short_out_to_adv"] is None and row["mrgd_sl_ratio"] is None
            assert row["mrgd_restricted"] == 0.0 and row["mrgd_reg_tier"] == 0.0
            assert row["mrgd_reg_supervision"] == 0.0
            continue
        r = by_pub.get(day, {**rows[0], "ShrtOut": 4321.0})
        adv = vol[j - 19 : j + 1].mean() if j >= 19 else None
        assert close_enough(
            row["mrgd_short_out_to_adv"], None if adv is None else r["ShrtOut"] / adv, 1e-5
        )
        assert close_enough(
            row["mrgd_long_chg_to_adv"], None if adv is None else r["LongOutChg"] / adv, 1e-5
        )
        assert close_enough(row["mrgd_sl_ratio"], r["SLRatio"], 1e-6)
        assert row["mrgd_long_out_ratio"] is None  # "*" stays unknown
        assert row["mrgd_short_neg_share"] == pytest.approx(300.0 / r["ShrtOut"], rel=1e-6)
        assert row["mrgd_restricted"] == float(r["PubReason.Restricted"])
        assert row["mrgd_precaution_by_jsf"] == float(r["PubReason.PrecautionByJSF"])
        assert row["mrgd_reg_tier"] == (2.0 if r["TSEMrgnRegCls"] == "004" else 0.0)
        assert row["mrgd_reg_supervision"] == float(r["TSEMrgnRegCls"] == "102")
    # A stock never under alert: flags 0, quantities null, history defined after warm-up.
    other = out.filter(pl.col("code") == "22220")
    assert (other["mrgd_alert"] == 0).all() and other[
        "mrgd_short_out_to_adv"
    ].null_count() == other.height


# --------------------------------------------------------------------------------------
# a source without a column the family reads


def test_missing_source_column_is_a_clear_error():
    days = calendar.trading_days("2022-01-04", "2022-01-31")
    raw = raw_frames_from_tables({BARS: table(BARS, bars_rows("11110", days))})
    raw["raw_weekly_margin_interest"] = raw["raw_weekly_margin_interest"].drop("IssType")
    with pytest.raises(Exception, match="raw_weekly_margin_interest.*IssType"):
        compute_family(margin_weekly.FAMILY, raw, days, days)
