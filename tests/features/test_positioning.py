"""Short-selling, investor-flow and index-option feature families: values against
brute-force recomputation on hand-built cases and point-in-time behaviour (sector changes,
corrections, publication lags).

The contract every family shares (columns, leakage, lookback, empty sources) is in
``test_family_contract.py``."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from tests.helpers import (
    BARS,
    assert_contract,
    bars_rows,
    close_enough,
    run,
    table,
    value,
)

from atft_pipeline import calendar
from atft_pipeline.features import flow, options, short_selling

D = dt.date
MASTER = "equities/master"
SHORT = "markets/short-ratio"
REPORTS = "markets/short-sale-report"
INVESTORS = "equities/investor-types"
OPTIONS = "derivatives/bars/daily/options/225"
TOPIX = "indices/bars/daily/topix"
FAMILIES = (short_selling.FAMILY, flow.FAMILY, options.FAMILY)


def rolling_z(series: list[float], n: int) -> float | None:
    if len(series) < n or any(v is None for v in series[-n:]):
        return None
    return float(stats.zscore(np.array(series[-n:]), ddof=1)[-1])


# --------------------------------------------------------------------------------------
# short selling


SECTORS = ("0050", "3050", "3650")


def master_rows(assignments: dict[str, list[tuple[dt.date, dict]]]) -> list[dict]:
    return [
        {"Date": day, "Code": code, **fields}
        for code, rows in assignments.items()
        for day, fields in rows
    ]


def short_ratio_rows(days, seed=0, missing=()):
    rng = np.random.default_rng(seed)
    rows = []
    for day in days:
        for sector in SECTORS:
            if (day, sector) in missing:
                continue
            total = rng.uniform(1e9, 3e9)
            share = rng.uniform(0.3, 0.5)
            restricted = rng.uniform(0.8, 0.9)
            rows.append(
                {
                    "Date": day,
                    "S33": sector,
                    "SellExShortVa": total * (1 - share),
                    "ShrtWithResVa": total * share * restricted,
                    "ShrtNoResVa": total * share * (1 - restricted),
                }
            )
    return rows


def report(disc, code, holder, ratio, fund=None):
    return {
        "DiscDate": disc,
        "CalcDate": disc - dt.timedelta(days=1),
        "Code": code,
        "SSName": holder,
        "FundName": fund,
        "ShrtPosToSO": ratio,
        "ShrtPosShares": ratio * 1e6,
    }


REPORT_ROWS = [
    report(D(2021, 3, 1), "11110", "Aokawa", 0.0062),
    report(D(2021, 3, 1), "11110", "Kestrel", 0.0051, fund="Master Fund"),
    report(
        D(2021, 3, 1), "11110", "Kestrel", 0.0070, fund="Other Fund"
    ),  # another fund: own position
    report(D(2021, 4, 12), "11110", "Aokawa", 0.0075),  # supersedes 0.62%
    report(
        D(2021, 5, 10), "11110", "Kestrel", 0.0048, fund="Master Fund"
    ),  # falls below 0.5%: closed
    report(D(2021, 5, 15), "11110", "Northgate", 0.0090),  # Saturday disclosure: counts from Monday
    report(
        D(2021, 7, 1), "22220", "Aokawa", 0.0055
    ),  # never reported again: expires after 365 days
    report(D(2022, 2, 1), "11110", "Aokawa", 0.0050),  # exactly 0.5% is still a position
]


@pytest.fixture(scope="module")
def short_case():
    days = calendar.trading_days("2021-01-04", "2022-09-30")
    codes = ["11110", "22220", "33330"]
    bars = table(BARS, [r for i, c in enumerate(codes) for r in bars_rows(c, days, seed=i)])
    master = table(
        MASTER,
        master_rows(
            {
                "11110": [(D(2020, 12, 30), {"S33": "3050"}), (D(2021, 10, 1), {"S33": "3650"})],
                "22220": [(D(2021, 1, 4), {"S33": "3650"})],
                "33330": [(D(2021, 1, 4), {"S33": "0050"}), (D(2022, 9, 1), {"S33": "9999"})],
            }
        ),
    )
    missing = {(D(2021, 6, 15), "3050")}
    tables = {
        BARS: bars,
        MASTER: master,
        SHORT: table(SHORT, short_ratio_rows(days, missing=missing)),
        REPORTS: table(REPORTS, REPORT_ROWS),
    }
    return days, tables, run(short_selling.FAMILY, tables, days)


def expected_short(days, tables) -> dict[tuple, dict]:
    master = tables[MASTER].sort("Date").to_dicts()
    sr = tables[SHORT].to_dicts()
    by_sector: dict[str, list[dict]] = {}
    for r in sorted(sr, key=lambda r: r["Date"]):
        by_sector.setdefault(r["S33"], []).append(r)
    market: dict[dt.date, tuple[float, float]] = {}
    for r in sr:
        s, tot = market.get(r["Date"], (0.0, 0.0))
        short = r["ShrtWithResVa"] + r["ShrtNoResVa"]
        market[r["Date"]] = (s + short, tot + short + r["SellExShortVa"])
    mkt_days = sorted(market)
    mkt_ratio = [market[d][0] / market[d][1] for d in mkt_days]

    def ratio(r):
        short = r["ShrtWithResVa"] + r["ShrtNoResVa"]
        return short / (short + r["SellExShortVa"])

    reports = sorted(tables[REPORTS].to_dicts(), key=lambda r: r["DiscDate"])
    out = {}
    for code in tables[BARS]["Code"].unique().to_list():
        history = []
        for j, t in enumerate(days):
            e: dict = {}
            sector = None
            for m in master:
                if m["Code"] == code and m["Date"] <= t:
                    sector = m["S33"]
            series = [r for r in by_sector.get(sector, []) if r["Date"] <= t]
            if series and series[-1]["Date"] == t:
                rs = [ratio(r) for r in series]
                e["shrt_sec_ratio"] = rs[-1]
                e["shrt_sec_ratio_ma5"] = float(np.mean(rs[-5:])) if len(rs) >= 5 else None
                e["shrt_sec_ratio_ma20"] = float(np.mean(rs[-20:])) if len(rs) >= 20 else None
                e["shrt_sec_ratio_z60"] = rolling_z(rs, 60)
                e["shrt_sec_ratio_chg20"] = rs[-1] - rs[-21] if len(rs) >= 21 else None
                last = series[-1]
                e["shrt_sec_restricted_share"] = last["ShrtWithResVa"] / (
                    last["ShrtWithResVa"] + last["ShrtNoResVa"]
                )
            if t in market:
                k = mkt_days.index(t)
                e["shrt_mkt_ratio"] = mkt_ratio[k]
                e["shrt_mkt_ratio_ma20"] = (
                    float(np.mean(mkt_ratio[k - 19 : k + 1])) if k >= 19 else None
                )
                e["shrt_mkt_ratio_z60"] = rolling_z(mkt_ratio[: k + 1], 60)
                if "shrt_sec_ratio" in e:
                    e["shrt_sec_ratio_rel"] = e["shrt_sec_ratio"] - e["shrt_mkt_ratio"]
            latest: dict[tuple, dict] = {}
            known = [r for r in reports if r["Code"] == code and r["DiscDate"] <= t]
            for r in known:
                latest[(r["SSName"], r.get("DICName") or "", r.get("FundName") or "")] = r
            open_ = [
                r["ShrtPosToSO"]
                for r in latest.values()
                if r["ShrtPosToSO"] >= 0.005 and (t - r["DiscDate"]).days < 365
            ]
            e["shrt_pos_sum"] = float(sum(open_))
            e["shrt_pos_holders"] = float(len(open_))
            history.append((e["shrt_pos_sum"], len(known)))
            if j >= 20:
                e["shrt_pos_sum_chg20"] = e["shrt_pos_sum"] - history[j - 20][0]
                e["shrt_pos_reports_20d"] = float(len(known) - history[j - 20][1])
            if known and (t - known[-1]["DiscDate"]).days <= 365:
                e["shrt_pos_days_since_report"] = float((t - known[-1]["DiscDate"]).days)
            out[(t, code)] = e
    return out


@pytest.mark.slow
def test_short_selling_matches_brute_force(short_case):
    days, tables, out = short_case
    assert_contract(out, short_selling.FAMILY)
    want = expected_short(days, tables)
    columns = [c for c in short_selling.FAMILY.columns if c != "shrt_pos_sum_rank"]
    for row in out.iter_rows(named=True):
        e = want[(row["date"], row["code"])]
        for column in columns:
            assert close_enough(row[column], e.get(column), rel=1e-5), (
                row["date"],
                row["code"],
                column,
                row[column],
                e.get(column),
            )
    for day in days[::50]:
        frame = out.filter(pl.col("date") == day)
        r = (stats.rankdata(frame["shrt_pos_sum"].to_numpy()) - 1) / (frame.height - 1)
        assert np.allclose(frame["shrt_pos_sum_rank"].to_numpy(), r)


def test_short_ratio_follows_the_point_in_time_sector(short_case):
    _, tables, out = short_case
    sr = tables[SHORT]

    def ratio(day, sector):
        r = sr.filter((pl.col("Date") == day) & (pl.col("S33") == sector)).row(0, named=True)
        short = r["ShrtWithResVa"] + r["ShrtNoResVa"]
        return short / (short + r["SellExShortVa"])

    # 11110 moves from Foods (3050) to Electric Appliances (3650) on 2021-10-01, not before.
    assert value(out, D(2021, 9, 30), "11110", "shrt_sec_ratio") == pytest.approx(
        ratio(D(2021, 9, 30), "3050"), rel=1e-6
    )
    assert value(out, D(2021, 10, 1), "11110", "shrt_sec_ratio") == pytest.approx(
        ratio(D(2021, 10, 1), "3650"), rel=1e-6
    )
    # A sector without a row that day has no ratio (null, not stale).
    assert value(out, D(2021, 6, 15), "11110", "shrt_sec_ratio") is None
    # Sector 9999 (no short-ratio series) from 2022-09-01.
    assert value(out, D(2022, 9, 1), "33330", "shrt_sec_ratio") is None


def test_large_short_positions_latest_report_per_holder(short_case):
    _, _, out = short_case
    # 2021-03-01: 0.62% + 0.51% + 0.70% (two funds of one holder count separately).
    assert value(out, D(2021, 3, 1), "11110", "shrt_pos_sum") == pytest.approx(0.0183, abs=1e-9)
    assert value(out, D(2021, 3, 1), "11110", "shrt_pos_holders") == 3.0
    assert value(out, D(2021, 2, 26), "11110", "shrt_pos_sum") == 0.0
    # 2021-04-12: Aokawa's 0.75% supersedes its 0.62%.
    assert value(out, D(2021, 4, 12), "11110", "shrt_pos_sum") == pytest.approx(0.0196, abs=1e-9)
    # 2021-05-10: Kestrel master fund below 0.5% -> closed.
    assert value(out, D(2021, 5, 10), "11110", "shrt_pos_sum") == pytest.approx(0.0145, abs=1e-9)
    assert value(out, D(2021, 5, 10), "11110", "shrt_pos_holders") == 2.0
    # Saturday 2021-05-15 disclosure is in force from Monday 05-17.
    assert value(out, D(2021, 5, 14), "11110", "shrt_pos_holders") == 2.0
    assert value(out, D(2021, 5, 17), "11110", "shrt_pos_holders") == 3.0
    assert value(out, D(2021, 5, 17), "11110", "shrt_pos_days_since_report") == 2.0
    # 22220's only report (2021-07-01) expires after 365 days; the sum returns exactly to 0.
    assert value(out, D(2022, 6, 30), "22220", "shrt_pos_sum") == pytest.approx(0.0055, rel=1e-6)
    assert value(out, D(2022, 7, 1), "22220", "shrt_pos_sum") == 0.0
    assert value(out, D(2022, 7, 1), "22220", "shrt_pos_days_since_report") == 365.0
    assert value(out, D(2022, 7, 4), "22220", "shrt_pos_days_since_report") is None


# --------------------------------------------------------------------------------------
# investor flows


FLOW_TYPES = ("Frgn", "Ind", "TrstBnk", "InvTr", "Prop")


def week_row(pub, start, end, section, rng, scale=1.0):
    row = {
        "PubDate": pub,
        "StDate": start,
        "EnDate": end,
        "Section": section,
        "TotTot": float(rng.uniform(8e6, 1.2e7)) * scale,
        "FrgnTot": float(rng.uniform(4e6, 6e6)) * scale,
    }
    for p in FLOW_TYPES:
        row[f"{p}Bal"] = float(rng.normal(0, 2e5)) * scale
    return row


def investor_rows(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    monday = D(2020, 1, 6)
    while monday < D(2022, 12, 26):
        end = monday + dt.timedelta(days=4)
        pub = calendar.trading_days(end + dt.timedelta(days=1), end + dt.timedelta(days=21))[3]
        new = monday >= flow.MARKET_RESTRUCTURING
        for section, scale in (
            (("TSEPrime", 1.0), ("TSEGrowth", 0.1), ("TokyoNagoya", 1.2))
            if new
            else (("TSE1st", 1.0), ("TSEMothers", 0.1), ("TokyoNagoya", 1.2))
        ):
            rows.append(week_row(pub, monday, end, section, rng, scale))
        monday += dt.timedelta(days=7)
    return rows


@pytest.fixture(scope="module")
def flow_case():
    days = calendar.trading_days("2021-01-04", "2022-12-28")
    codes = ["11110", "22220", "33330"]
    bars = table(BARS, [r for i, c in enumerate(codes) for r in bars_rows(c, days, seed=i)])
    master = table(
        MASTER,
        master_rows(
            {
                "11110": [(D(2020, 12, 1), {"Mkt": "0101"}), (D(2022, 4, 4), {"Mkt": "0111"})],
                "22220": [(D(2020, 12, 1), {"Mkt": "0104"}), (D(2022, 4, 4), {"Mkt": "0113"})],
                "33330": [(D(2020, 12, 1), {"Mkt": "0109"})],  # "Others": no section series
            }
        ),
    )
    rows = investor_rows()
    rng = np.random.default_rng(9)
    # Corrections: the week of 2021-06-07 (TSE1st) republished on 2021-07-05 with new numbers.
    target = next(r for r in rows if r["StDate"] == D(2021, 6, 7) and r["Section"] == "TSE1st")
    correction = {
        **week_row(D(2021, 7, 5), target["StDate"], target["EnDate"], "TSE1st", rng),
        "PubDate": D(2021, 7, 5),
    }
    rows.append(correction)
    tables = {BARS: bars, MASTER: master, INVESTORS: table(INVESTORS, rows)}
    return days, tables, run(flow.FAMILY, tables, days)


TIER = {"TSE1st": "prime", "TSEPrime": "prime", "TSEMothers": "growth", "TSEGrowth": "growth"}


def expected_flow(days, tables) -> dict[tuple, dict]:
    rows = tables[INVESTORS].to_dicts()
    per_tier: dict[tuple, dict] = {}
    for tier in ("prime", "growth"):
        for t in days:
            versions = {}
            first = {}
            for r in sorted(
                (r for r in rows if TIER.get(r["Section"]) == tier and r["PubDate"] <= t),
                key=lambda r: r["PubDate"],
            ):
                versions[(r["StDate"], r["EnDate"])] = r
                first.setdefault((r["StDate"], r["EnDate"]), r["PubDate"])
            if not versions:
                continue
            weeks = sorted(versions, key=lambda k: k[1])
            newest = versions[weeks[-1]]
            age = (t - first[weeks[-1]]).days
            if age > 28:
                continue
            e = {
                "flow_weeks_since_pub": age / 7,
                "flow_frgn_share": newest["FrgnTot"] / newest["TotTot"],
            }
            for p in FLOW_TYPES:
                stem = p.lower()
                ratios = [versions[w][f"{p}Bal"] / versions[w]["TotTot"] for w in weeks]
                e[f"flow_{stem}_net"] = ratios[-1]
                last4 = [versions[w] for w in weeks[-4:]]
                e[f"flow_{stem}_net_4w"] = (
                    sum(r[f"{p}Bal"] for r in last4) / sum(r["TotTot"] for r in last4)
                    if len(last4) == 4
                    else None
                )
                e[f"flow_{stem}_net_z52"] = rolling_z(ratios, 52)
            per_tier[(t, tier)] = e
    master = tables[MASTER].sort("Date").to_dicts()
    before = {"0101": "prime", "0111": "prime", "0104": "growth", "0113": "growth"}
    out = {}
    for code in tables[BARS]["Code"].unique().to_list():
        for t in days:
            mkt = [m["Mkt"] for m in master if m["Code"] == code and m["Date"] <= t][-1]
            e = dict(per_tier.get((t, before.get(mkt)), {}))
            prime = per_tier.get((t, "prime"), {})
            e["flow_mkt_frgn_net"] = prime.get("flow_frgn_net")
            e["flow_mkt_frgn_net_4w"] = prime.get("flow_frgn_net_4w")
            e["flow_mkt_ind_net_4w"] = prime.get("flow_ind_net_4w")
            out[(t, code)] = e
    return out


@pytest.mark.slow
def test_flow_matches_brute_force(flow_case):
    days, tables, out = flow_case
    assert_contract(out, flow.FAMILY)
    want = expected_flow(days, tables)
    checked = 0
    for row in out.iter_rows(named=True):
        e = want[(row["date"], row["code"])]
        for column in flow.FAMILY.columns:
            assert close_enough(row[column], e.get(column), rel=1e-5), (
                row["date"],
                row["code"],
                column,
                row[column],
                e.get(column),
            )
            checked += e.get(column) is not None
    assert checked > out.height * 10


def test_investor_type_correction_supersedes_only_from_its_publication(flow_case):
    _, tables, out = flow_case
    inv = tables[INVESTORS].filter(pl.col("Section") == "TSE1st")

    def four_week(day):  # latest version of each week published by `day`, newest 4 weeks
        known = (
            inv.filter(pl.col("PubDate") <= day)
            .sort("PubDate")
            .unique(["StDate", "EnDate"], keep="last", maintain_order=True)
            .sort("EnDate")
            .tail(4)
        )
        return known["FrgnBal"].sum() / known["TotTot"].sum()

    # The week of 2021-06-07 is corrected on 2021-07-05, while it is still inside the 4-week
    # window (no new week is published that day): the sum changes exactly from 07-05.
    before, on = D(2021, 7, 2), D(2021, 7, 5)
    assert four_week(before) != pytest.approx(four_week(on), rel=1e-6)
    for day in (before, on):
        assert value(out, day, "11110", "flow_frgn_net_4w") == pytest.approx(
            four_week(day), rel=1e-5
        )
    assert value(out, before, "11110", "flow_frgn_net_z52") != value(
        out, on, "11110", "flow_frgn_net_z52"
    )
    # The newest week did not change: its publication age keeps counting.
    assert value(out, on, "11110", "flow_frgn_net") == value(out, before, "11110", "flow_frgn_net")


def test_flow_sections_map_across_the_market_restructuring(flow_case):
    _, tables, out = flow_case
    inv = tables[INVESTORS]

    def newest_ratio(section, day):
        known = inv.filter((pl.col("Section") == section) & (pl.col("PubDate") <= day)).sort(
            "EnDate", "PubDate"
        )
        r = known.row(-1, named=True)
        return r["IndBal"] / r["TotTot"]

    for day, prime, growth in (
        (D(2022, 3, 30), "TSE1st", "TSEMothers"),
        (D(2022, 5, 20), "TSEPrime", "TSEGrowth"),
    ):
        assert value(out, day, "11110", "flow_ind_net") == pytest.approx(
            newest_ratio(prime, day), rel=1e-5
        )
        assert value(out, day, "22220", "flow_ind_net") == pytest.approx(
            newest_ratio(growth, day), rel=1e-5
        )
        # Market-wide flow (prime tier) is broadcast to every stock, also one without a section.
        assert value(out, day, "33330", "flow_mkt_frgn_net") == value(
            out, day, "11110", "flow_frgn_net"
        )
        assert value(out, day, "33330", "flow_frgn_net") is None


# --------------------------------------------------------------------------------------
# index options


def option_rows(days, seed=0):
    """A chain per day: 3 monthly-ish expiries, strikes every 250 around the underlying, a
    smile with put skew; plus emergency-margin rows ("001") that must be ignored."""
    rng = np.random.default_rng(seed)
    rows = []
    expiries = [D(2022, m, 10) for m in range(1, 13)] + [D(2023, m, 10) for m in range(1, 4)]
    level = 27000.0
    for day in days:
        level *= math.exp(rng.normal(0, 0.012))
        base = 0.18 + 0.04 * rng.random()
        for ltd in [e for e in expiries if e > day][:3]:
            tau = (ltd - day).days / 365
            for k in range(-8, 9):
                strike = round(level / 250) * 250 + 250 * k
                for pc in ("1", "2"):
                    m = strike / level - 1
                    iv = (
                        base
                        - 0.5 * m
                        + 2.0 * m * m
                        + 0.01 * math.sqrt(tau)
                        + (0.004 if pc == "1" else 0.0)
                    )
                    rows.append(
                        {
                            "Date": day,
                            "Code": f"{pc}{ltd:%y%m}{strike}",
                            "PCDiv": pc,
                            "Strike": float(strike),
                            "LTD": ltd,
                            "UnderPx": level,
                            "IV": 100 * iv,
                            "Vo": float(rng.integers(0, 500)),
                            "OI": float(rng.integers(100, 5000)),
                            "EmMrgnTrgDiv": "002",
                            "CM": f"{ltd:%Y-%m}",
                        }
                    )
                    if rng.random() < 0.01:
                        rows.append({**rows[-1], "EmMrgnTrgDiv": "001", "IV": 999.0, "Vo": 1e6})
    return rows


@pytest.fixture(scope="module")
def option_case():
    days = calendar.trading_days("2022-01-04", "2022-09-30")
    option_days = [d for d in days if d != D(2022, 5, 19)]  # a missing options day
    bars = table(BARS, bars_rows("11110", days) + bars_rows("22220", days, seed=1))
    rng = np.random.default_rng(4)
    topix = table(
        TOPIX,
        [
            {"Date": d, "C": 1900 * math.exp(0.01 * rng.normal() + j * 1e-4)}
            for j, d in enumerate(days)
        ],
    )
    tables = {BARS: bars, OPTIONS: table(OPTIONS, option_rows(option_days)), TOPIX: topix}
    return days, option_days, tables, run(options.FAMILY, tables, days)


def atm_iv(rows: list[dict], ltd: dt.date):
    """(ATM IV, the expiry's rows, its underlying): strike nearest the mean UnderPx."""
    sub = [r for r in rows if r["LTD"] == ltd]
    under = np.mean([r["UnderPx"] for r in sub])
    strike = min({r["Strike"] for r in sub}, key=lambda s: (abs(s - under), s))
    return float(np.mean([r["IV"] / 100 for r in sub if r["Strike"] == strike])), sub, under


def nearest_iv(sub: list[dict], under: float, pc: str, target: float) -> float:
    cands = [r for r in sub if r["PCDiv"] == pc]
    best = min(cands, key=lambda r: (abs(r["Strike"] / under - target), r["Strike"]))
    return best["IV"] / 100


def expected_options(option_days, tables) -> dict[dt.date, dict]:
    chain = tables[OPTIONS].filter(pl.col("EmMrgnTrgDiv") == "002")
    topix = tables[TOPIX].sort("Date")
    closes = topix["C"].to_numpy()
    tdays = topix["Date"].to_list()
    per_day = {}
    ivs: list[float | None] = []
    volumes: list[float] = []
    for d in option_days:
        rows = chain.filter(pl.col("Date") == d).to_dicts()
        ltds = sorted({r["LTD"] for r in rows if np.busday_count(d, r["LTD"]) >= 5})

        e = {}
        front = next_iv = None
        if ltds:
            front, sub, under = atm_iv(rows, ltds[0])
            put95 = nearest_iv(sub, under, "1", 0.95)
            e["opt_skew_25d"] = put95 - nearest_iv(sub, under, "2", 1.05)
            e["opt_put_skew"] = put95 - front
            e["opt_days_to_expiry"] = float(np.busday_count(d, ltds[0]))
        if len(ltds) > 1:
            next_iv = atm_iv(rows, ltds[1])[0]
            e["opt_term_slope"] = next_iv - front
        e["opt_atm_iv"] = front
        puts = [r for r in rows if r["PCDiv"] == "1"]
        calls = [r for r in rows if r["PCDiv"] == "2"]
        e["opt_put_call_vol_ratio"] = sum(r["Vo"] for r in puts) / sum(r["Vo"] for r in calls)
        e["opt_put_call_oi_ratio"] = sum(r["OI"] for r in puts) / sum(r["OI"] for r in calls)
        ivs.append(front)
        volumes.append(sum(r["Vo"] for r in rows))
        n = len(ivs) - 1
        e["opt_atm_iv_chg_1d"] = ivs[n] - ivs[n - 1] if n >= 1 else None
        e["opt_atm_iv_chg_5d"] = ivs[n] - ivs[n - 5] if n >= 5 else None
        e["opt_atm_iv_z60"] = rolling_z(ivs, 60)
        e["opt_volume_ratio_20"] = (
            volumes[-1] / np.mean(volumes[-20:]) if len(volumes) >= 20 else None
        )
        j = tdays.index(d)
        if j >= 20:
            rv = np.std(np.diff(np.log(closes[j - 20 : j + 1])), ddof=1) * math.sqrt(245)
            e["opt_vrp"] = front - rv
        per_day[d] = e
    return per_day


def test_options_match_brute_force_with_a_one_session_publication_lag(option_case):
    days, option_days, tables, out = option_case
    assert_contract(out, options.FAMILY)
    want = expected_options(option_days, tables)
    for j, t in enumerate(days):
        previous = [d for d in option_days if d < t]
        e = want[previous[-1]] if previous else {}
        row = out.filter((pl.col("date") == t) & (pl.col("code") == "22220")).row(0, named=True)
        for column in options.FAMILY.columns:
            assert close_enough(row[column], e.get(column), rel=1e-5), (
                t,
                column,
                row[column],
                e.get(column),
            )
    # Market-level: identical for every stock.
    wide = out.pivot(on="code", index="date", values="opt_atm_iv")
    assert wide["11110"].equals(wide["22220"])
    # The first session has no options day before it.
    assert out.filter(pl.col("date") == days[0])["opt_atm_iv"].null_count() == 2


def test_options_front_expiry_skips_expiries_within_five_business_days(option_case):
    out = option_case[-1]
    # On 2022-03-04 the 2022-03-10 expiry is 4 business days away: the front is April's.
    day_after = calendar.shift_trading_days(D(2022, 3, 4), 1)
    assert value(out, day_after, "11110", "opt_days_to_expiry") == float(
        np.busday_count(D(2022, 3, 4), D(2022, 4, 10))
    )
    assert np.busday_count(D(2022, 3, 4), D(2022, 3, 10)) == 4
