"""The synthetic sandbox market: registry schemas, realism invariants, publication lags and
the oracle (exactness of its inputs, no look-ahead, RankIC)."""

from __future__ import annotations

import datetime as dt
import json
import math
import time

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from scipy import stats

from atft_pipeline import calendar
from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.jquants.reference import SECTOR33
from atft_pipeline.sandbox.market import (
    HORIZONS,
    MarketConfig,
    daily_rank_ic,
    generate_market,
    mean_rank_ic,
)
from atft_pipeline.sandbox.market.prices import EarningsInputs
from atft_pipeline.sandbox.market.signals import SURPRISE_SCALE, earnings_surprises
from atft_pipeline.sandbox.market.ticks import limit_prices, stochastic_round, tick_size
from atft_pipeline.sandbox.market.timeline import SEGMENT_MIGRATION, Timeline

# 1.5 years: spans the 2022-04-04 segment migration and the 2023-04 start of flow corrections.
SMALL = {"n_stocks": 60, "start": dt.date(2022, 1, 4), "end": dt.date(2023, 6, 30)}
OLD_SEGMENTS = {"0101", "0102", "0104", "0106", "0107"}
NEW_SEGMENTS = {"0111", "0112", "0113"}
INVESTORS = (
    "Prop",
    "Brk",
    "Tot",
    "Ind",
    "Frgn",
    "SecCo",
    "InvTr",
    "BusCo",
    "OthCo",
    "InsCo",
    "Bank",
    "TrstBnk",
    "OthFin",
)
CLIENTS = INVESTORS[3:]


@pytest.fixture(scope="module")
def market():
    return generate_market(MarketConfig(seed=7, **SMALL))


def _session_shift(day: dt.date, n: int) -> dt.date:
    return calendar.shift_trading_days(day, n)


def _traded(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.filter(pl.col("C").is_not_null())


# --- configuration and schemas ------------------------------------------------------------


def test_config_is_validated_and_frozen():
    with pytest.raises(ValidationError, match="extra"):
        MarketConfig(unknown_knob=1)
    with pytest.raises(ValidationError, match="at least"):
        MarketConfig(start=dt.date(2023, 1, 4), end=dt.date(2023, 2, 1))
    with pytest.raises(ValidationError, match="dates must lie"):
        MarketConfig(end=dt.date(2029, 6, 29))
    with pytest.raises(ValidationError):
        MarketConfig(n_stocks=5)
    config = MarketConfig()
    with pytest.raises(ValidationError):
        config.seed = 8  # frozen
    assert (config.seed, config.n_stocks, config.start, config.end) == (
        7,
        300,
        dt.date(2021, 1, 4),
        dt.date(2023, 12, 29),
    )


def test_every_endpoint_has_exactly_the_registry_schema(market):
    assert set(market.tables) == set(ENDPOINTS)
    for path, frame in market.tables.items():
        assert frame.schema == ENDPOINTS[path].schema(Plan.PREMIUM), path
        assert frame.height > 0, path
        floats = [c for c, t in frame.schema.items() if t == pl.Float64]
        if floats:  # missing numbers are nulls, never NaN / inf
            bad = frame.select(pl.any_horizontal(~pl.col(floats).is_finite()).sum()).item()
            assert bad == 0, path


def test_tables_are_sorted_by_date(market):
    for path, column in [
        ("equities/bars/daily", "Date"),
        ("fins/summary", "DiscDate"),
        ("markets/margin-alert", "PubDate"),
        ("equities/master", "Date"),
        ("equities/investor-types", "PubDate"),
        ("derivatives/bars/daily/options/225", "Date"),
    ]:
        assert market.tables[path][column].is_sorted(), path
    bars = market.tables["equities/bars/daily"]
    assert bars.select(pl.struct("Date", "Code").is_unique().all()).item()


def test_same_seed_is_bit_identical_and_other_seeds_differ(market):
    again = generate_market(MarketConfig(seed=7, **SMALL))
    for path, frame in market.tables.items():
        assert frame.equals(again.tables[path]), path
    assert market.oracle.equals(again.oracle)
    other = generate_market(MarketConfig(seed=8, **SMALL))
    for path in (
        "equities/bars/daily",
        "fins/summary",
        "markets/margin-interest",
        "equities/investor-types",
        "derivatives/bars/daily/options/225",
    ):
        assert not market.tables[path].equals(other.tables[path]), path
    assert not market.oracle.equals(other.oracle)


# --- universe and master --------------------------------------------------------------------


def test_codes_sectors_and_segment_migration(market):
    master = market.tables["equities/master"]
    codes = master["Code"].unique()
    assert codes.len() == 60
    assert codes.str.contains(r"^\d{4}0$").all()
    assert set(master["S33"]) <= set(SECTOR33) and master["S33"].n_unique() == 33
    assert (
        master["S17"] == master["S33"].replace_strict({k: v[2] for k, v in SECTOR33.items()})
    ).all()
    before = master.filter(pl.col("Date") < SEGMENT_MIGRATION)
    after = master.filter(pl.col("Date") >= SEGMENT_MIGRATION)
    assert set(before["Mkt"]) <= OLD_SEGMENTS and set(after["Mkt"]) <= NEW_SEGMENTS
    assert (
        master.filter(pl.col("Date") == SEGMENT_MIGRATION).height
        == before.filter(pl.col("Date") == before["Date"].max()).height
    )
    assert set(master["Mrgn"]) <= {"1", "2", "3"}
    reclassified = master.group_by("Code").agg(pl.col("S33").n_unique()).filter(pl.col("S33") > 1)
    assert reclassified.height >= 2


def test_master_snapshot_matches_listings_and_bars(market):
    master, bars = market.tables["equities/master"], market.tables["equities/bars/daily"]
    span = bars.group_by("Code").agg(
        pl.col("Date").min().alias("first"), pl.col("Date").max().alias("last"), pl.len()
    )
    days = market.hidden.timeline.days
    sessions = {d: i for i, d in enumerate(days)}
    # A listed issue has a bar row (possibly null) on every session between listing and delisting.
    for code, first, last, n in span.iter_rows():
        assert n == sessions[last] - sessions[first] + 1, code
    ipos = span.filter(pl.col("first") > days[0])
    delisted = span.filter(pl.col("last") < days[-1])
    assert ipos.height >= 2 and delisted.height >= 2
    first_master = master.group_by("Code").agg(
        pl.col("Date").min().alias("m_first"), pl.col("Date").max().alias("m_last")
    )
    joined = span.join(first_master, on="Code")
    assert (joined["m_first"] == joined["first"]).all()
    assert (joined["m_last"] <= joined["last"]).all()
    # The API's snapshot: each code's latest row dated <= D, for the codes trading on D.
    day = days[200]
    snapshot = master.filter(pl.col("Date") <= day).sort("Date").group_by("Code").last()
    trading = bars.filter(pl.col("Date") == day)["Code"]
    assert set(trading) <= set(snapshot["Code"])


def test_markets_calendar_covers_range_and_next_year(market):
    cal = market.tables["markets/calendar"]
    assert cal["Date"][0] == SMALL["start"] and cal["Date"][-1] == dt.date(2024, 12, 31)
    assert (cal["Date"].diff().drop_nulls() == dt.timedelta(days=1)).all()
    open_days = cal.filter(pl.col("HolDiv") == "1")["Date"].to_list()
    assert open_days == calendar.trading_days(cal["Date"][0], cal["Date"][-1])
    bars_days = market.tables["equities/bars/daily"]["Date"].unique().sort().to_list()
    assert bars_days == calendar.trading_days(SMALL["start"], SMALL["end"])


# --- prices ---------------------------------------------------------------------------------


def test_ohlc_sessions_volumes_and_tick_grid(market):
    bars = market.tables["equities/bars/daily"]
    traded = _traded(bars)
    checks = traded.select(
        expr.alias(f"check_{i}")
        for i, expr in enumerate(
            [
                (
                    (pl.col("L") <= pl.min_horizontal("O", "C"))
                    & (pl.col("H") >= pl.max_horizontal("O", "C"))
                ).all(),
                (
                    (pl.col("ML") <= pl.min_horizontal("MO", "MC"))
                    & (pl.col("MH") >= pl.max_horizontal("MO", "MC"))
                ).all(),
                (
                    (pl.col("AL") <= pl.min_horizontal("AO", "AC"))
                    & (pl.col("AH") >= pl.max_horizontal("AO", "AC"))
                ).all(),
                (pl.max_horizontal("MH", "AH") == pl.col("H")).all(),
                (pl.min_horizontal("ML", "AL") == pl.col("L")).all(),
                ((pl.col("MO") == pl.col("O")) & (pl.col("AC") == pl.col("C"))).all(),
                (
                    (pl.col("Vo") > 0)
                    & (pl.col("Va") > 0)
                    & (pl.col("MVo") > 0)
                    & (pl.col("AVo") > 0)
                ).all(),
                (pl.col("MVo") + pl.col("AVo") == pl.col("Vo")).all(),
                (pl.col("MVa") + pl.col("AVa") == pl.col("Va")).all(),
                (pl.col("Vo") % 100 == 0).all(),
                (pl.col("UL") == (pl.col("MUL") | pl.col("AUL"))).all(),
                (pl.col("LL") == (pl.col("MLL") | pl.col("ALL"))).all(),
            ]
        )
    ).row(0)
    assert all(checks), checks
    close = traded["C"].to_numpy()
    assert np.all(np.abs(close / tick_size(close) - np.round(close / tick_size(close))) < 1e-9)
    halted = bars.filter(pl.col("C").is_null())
    assert halted.height > 0
    price_cols = [
        c
        for c in bars.columns
        if c not in ("Date", "Code", "AdjFactor") and bars.schema[c] == pl.Float64
    ]
    assert halted.select(pl.all_horizontal(pl.col(price_cols).is_null()).all()).item()
    assert not halted.select(pl.any_horizontal("UL", "LL", "MUL", "AUL").any()).item()
    assert (halted["AdjFactor"] == 1.0).all()


def test_daily_price_limits(market):
    bars = (
        market.tables["equities/bars/daily"]
        .sort("Code", "Date")
        .with_columns(pl.col("C").shift(1).over("Code").alias("prev"))
    )
    rows = bars.filter(pl.col("C").is_not_null() & pl.col("prev").is_not_null())
    base = (rows["prev"] * rows["AdjFactor"]).to_numpy()
    upper, lower = limit_prices(base)
    assert np.all(rows["H"].to_numpy() <= upper) and np.all(rows["L"].to_numpy() >= lower)
    assert np.array_equal(rows["UL"].to_numpy(), rows["H"].to_numpy() >= upper)
    assert np.array_equal(rows["LL"].to_numpy(), rows["L"].to_numpy() <= lower)


def test_split_adjustment_is_continuous(market):
    bars = market.tables["equities/bars/daily"].sort("Code", "Date")
    splits = market.hidden.actions.splits
    assert sum(s.factor < 1 for s in splits) >= 2 and sum(s.factor > 1 for s in splits) >= 1
    codes = market.hidden.universe.codes
    days = market.hidden.timeline.days
    for split in splits:
        rows = bars.filter(pl.col("Code") == codes[split.stock])
        ex = rows.filter(pl.col("Date") == days[split.day]).row(0, named=True)
        prev = rows.filter(pl.col("Date") == days[split.day - 1]).row(0, named=True)
        assert ex["AdjFactor"] == pytest.approx(split.factor)
        if prev["C"] is None:
            continue
        true_return = ex["C"] / (prev["C"] * split.factor) - 1
        assert abs(true_return) < 0.35  # an ordinary day, not the split
        assert ex["AdjC"] / prev["AdjC"] - 1 == pytest.approx(true_return, rel=1e-9, abs=1e-12)
        assert abs(ex["C"] / prev["C"] - 1) > 0.3  # the raw price jumps
    traded = _traded(bars)
    # Adjusted value traded equals raw value traded; the last rows are unadjusted.
    assert np.allclose(
        (traded["AdjC"] * traded["AdjVo"]).to_numpy(),
        (traded["C"] * traded["Vo"]).to_numpy(),
        rtol=1e-9,
    )
    last = traded.group_by("Code").agg(pl.all().sort_by("Date").last())
    assert (last["AdjC"] == last["C"]).all()


def test_topix_tracks_cap_weighted_stocks(market):
    topix = market.tables["indices/bars/daily/topix"]
    assert topix.height == len(market.hidden.timeline)
    assert topix.select(
        (
            (pl.col("H") >= pl.max_horizontal("O", "C"))
            & (pl.col("L") <= pl.min_horizontal("O", "C"))
        ).all()
    ).item()
    bars = market.tables["equities/bars/daily"].sort("Code", "Date")
    ew = (
        bars.with_columns((pl.col("AdjC") / pl.col("AdjC").shift(1).over("Code") - 1).alias("r"))
        .group_by("Date")
        .agg(pl.col("r").mean())
        .sort("Date")
    )
    index_return = topix["C"].pct_change()
    assert np.corrcoef(index_return[1:].to_numpy(), ew["r"][1:].to_numpy())[0, 1] > 0.8
    vol = index_return.std() * math.sqrt(245)
    assert 0.08 < vol < 0.4


def test_stochastic_rounding_and_price_tables():
    rng = np.random.default_rng(0)
    x = np.full(200_000, 1234.3)
    rounded = stochastic_round(x, rng.random(x.size))
    assert set(np.unique(rounded)) == {1234.0, 1235.0}
    assert rounded.mean() == pytest.approx(1234.3, abs=0.005)
    assert list(tick_size(np.array([3000.0, 3000.5, 5000.0, 30000.0, 30001.0]))) == [
        1,
        5,
        5,
        10,
        50,
    ]
    upper, lower = limit_prices(np.array([99.0, 100.0, 1000.0, 3000.0]))
    assert list(upper) == [129.0, 150.0, 1300.0, 3700.0]
    assert list(lower) == [69.0, 50.0, 700.0, 2300.0]


# --- statements -----------------------------------------------------------------------------


def test_statements_look_like_fins_summary(market):
    fins = market.tables["fins/summary"]
    statements = fins.filter(pl.col("DocType").str.contains("FinancialStatements"))
    assert (
        statements["DocType"]
        .str.contains(
            r"^(1Q|2Q|3Q|FY)FinancialStatements_(Consolidated|NonConsolidated)_(JP|IFRS|US)$"
        )
        .all()
    )
    assert set(statements["CurPerType"]) == {"1Q", "2Q", "3Q", "FY"}
    assert statements["OP"].is_not_null().all() and statements["Sales"].is_not_null().all()
    assert (
        statements.select(
            (pl.col("CurFYSt") <= pl.col("CurPerEn")) & (pl.col("CurPerEn") <= pl.col("CurFYEn"))
        )
        .to_series()
        .all()
    )
    fy = statements.filter(pl.col("CurPerType") == "FY")
    assert fy["NxFOP"].is_not_null().all() and fy["FOP"].is_null().all()
    assert (fy["NxtFYSt"] == fy["CurFYEn"] + dt.timedelta(days=1)).all()
    quarterly = statements.filter(pl.col("CurPerType") != "FY")
    assert quarterly["FOP"].is_not_null().all() and quarterly["NxFOP"].is_null().all()
    # Year-to-date figures: within one fiscal year, 2Q sales exceed 1Q sales.
    ytd = (
        quarterly.filter(pl.col("CurPerType").is_in(["1Q", "2Q"]))
        .sort("DiscDate")
        .group_by("Code", "CurFYSt", "CurPerType")
        .agg(pl.col("Sales").first())
        .pivot("CurPerType", index=["Code", "CurFYSt"], values="Sales")
        .drop_nulls()
    )
    assert (ytd["2Q"] > ytd["1Q"]).mean() > 0.95
    revisions = fins.filter(pl.col("DocType") == "EarnForecastRevision")
    assert (
        revisions.height > 0
        and revisions["FOP"].is_not_null().all()
        and revisions["OP"].is_null().all()
    )
    assert fins["DiscNo"].is_unique().all() and fins["DiscNo"].is_sorted()
    assert (fins["DiscNo"].str.slice(0, 8) == fins["DiscDate"].dt.strftime("%Y%m%d")).all()
    assert (fins["DiscTime"] >= "15:00:00").mean() > 0.4  # most results come after the close
    nc = fins.select([c for c in fins.columns if c.startswith(("NC", "FNC", "NxFNC"))])
    assert nc.select(pl.all().is_null().mean()).to_numpy().min() > 0.7


def test_earnings_surprise_rule_on_handmade_rows():
    def row(no, doc, period, fy_start, op=None, fop=None, nxfop=None, nxt=None):
        return {
            "DiscDate": dt.date(2023, 1, 1) + dt.timedelta(days=no),
            "DiscTime": "15:00:00",
            "Code": "13010",
            "DiscNo": f"2023010{no}100001",
            "DocType": doc,
            "CurPerType": period,
            "CurFYSt": fy_start,
            "NxtFYSt": nxt,
            "OP": op,
            "FOP": fop,
            "NxFOP": nxfop,
        }

    fy22, fy23 = dt.date(2022, 4, 1), dt.date(2023, 4, 1)
    fins = pl.DataFrame(
        [
            row(
                1,
                "FYFinancialStatements_Consolidated_JP",
                "FY",
                fy22,
                op=100.0,
                nxfop=120.0,
                nxt=fy23,
            ),
            row(2, "1QFinancialStatements_Consolidated_JP", "1Q", fy23, op=33.0, fop=120.0),
            row(3, "EarnForecastRevision", "FY", fy23, fop=108.0),
            row(4, "2QFinancialStatements_Consolidated_JP", "2Q", fy23, op=54.0, fop=108.0),
            row(
                5,
                "1QFinancialStatements_Consolidated_JP",
                "1Q",
                dt.date(2024, 4, 1),
                op=10.0,
                fop=50.0,
            ),
        ],
        schema_overrides={
            "NxtFYSt": pl.Date,
            "OP": pl.Float64,
            "FOP": pl.Float64,
            "NxFOP": pl.Float64,
        },
    )
    z = dict(earnings_surprises(fins).select("DiscNo", "z").iter_rows())
    assert "20230101100001" not in z  # no earlier guidance for its year
    assert z["20230102100001"] == pytest.approx((33 - 30) / 30 / SURPRISE_SCALE)
    assert z["20230103100001"] == pytest.approx(-1.0)  # (108 - 120) / 120 / 0.1
    assert z["20230104100001"] == pytest.approx(0.0)  # 54 == 0.5 * 108
    assert "20230105100001" not in z  # guidance for another fiscal year does not count


def test_after_close_disclosures_move_prices_the_next_session():
    timeline = Timeline.between(dt.date(2024, 10, 28), dt.date(2024, 11, 15))
    dates = [
        dt.date(2024, 10, 30),
        dt.date(2024, 10, 31),
        dt.date(2024, 11, 6),
        dt.date(2024, 11, 7),
    ]
    times = ["15:00:00", "14:59:00", "15:15:00", "15:30:00"]
    fins = pl.DataFrame(
        {
            "DiscNo": [f"{i}" for i in range(4)],
            "DiscDate": dates,
            "DiscTime": times,
            "Code": ["13010", "13020", "13010", "13020"],
        }
    )
    news = pl.DataFrame({"DiscNo": [f"{i}" for i in range(4)], "news": [1.0, 2.0, 3.0, 4.0]})
    from atft_pipeline.sandbox.market import prices

    reaction = prices._by_session(  # the mapping EarningsInputs uses
        timeline,
        fins["DiscDate"],
        pl.Series([0, 1, 0, 1]),
        news["news"],
        np.array(
            [t >= prices.close_time(d) for d, t in zip(dates, times, strict=True)], dtype=np.int64
        ),
    )
    session = {d: i for i, d in enumerate(timeline.days)}
    assert reaction[session[dt.date(2024, 10, 31)]][1].tolist() == [1.0, 2.0]  # 15:00 -> next day
    assert reaction[session[dt.date(2024, 11, 6)]][1].tolist() == [3.0]  # close is 15:30 now
    assert reaction[session[dt.date(2024, 11, 8)]][1].tolist() == [4.0]
    assert EarningsInputs.__doc__


def test_earnings_calendar_lists_march_and_september_reports(market):
    ec = market.tables["equities/earnings-calendar"]
    assert set(ec["FY"]) <= {"3月31日", "9月30日"} and ec.height > 0
    assert set(ec["FQ"]) <= {"第1四半期", "第2四半期", "第3四半期", "本決算"}
    reports = (
        market.tables["fins/summary"]
        .filter(pl.col("DocType").str.contains("FinancialStatements"))
        .select(pl.col("DiscDate").alias("Date"), "Code")
        .unique()
    )
    assert ec.join(reports, on=["Date", "Code"], how="anti").height == 0


# --- positioning and flows ------------------------------------------------------------------


def test_weekly_margin_publication_lag(market):
    margin = market.tables["markets/margin-interest"]
    timeline = market.hidden.timeline
    week_ends = {timeline.days[i] for i in timeline.week_ends}
    assert set(margin["Date"]) <= week_ends
    for side in ("Long", "Shrt"):
        assert (margin[f"{side}NegVol"] + margin[f"{side}StdVol"] == margin[f"{side}Vol"]).all()
    assert (margin.filter(pl.col("IssType") == "1")["ShrtStdVol"] == 0).all()
    published = [_session_shift(d, 2) for d in margin["Date"].unique().to_list()]
    assert max(published) <= SMALL["end"]  # only weeks published by the end are present
    last_week = max(week_ends)
    assert (last_week in set(margin["Date"])) == (_session_shift(last_week, 2) <= SMALL["end"])

    # The oracle reads a week only from its publication session (application + 2 sessions).
    application = sorted(margin["Date"].unique())[20]
    t = _session_shift(application, 1)  # the week is not yet public at t
    publication = _session_shift(application, 2)
    tables = dict(market.tables)
    scale = pl.Series(np.random.default_rng(2).uniform(0.3, 3.0, margin.height))
    tables["markets/margin-interest"] = margin.with_columns(
        pl.when(pl.col("Date") == application)
        .then(pl.col("LongVol") * scale)
        .otherwise(pl.col("LongVol"))
        .alias("LongVol")
    )
    replayed = market.replay_oracle(tables)
    assert _rows(replayed, t).equals(_rows(market.oracle, t))
    assert not _rows(replayed, publication).equals(_rows(market.oracle, publication))


def test_margin_alerts(market):
    alerts = market.tables["markets/margin-alert"]
    sessions = market.hidden.timeline.days
    index = {d: i for i, d in enumerate(sessions)}
    lag = np.array(
        [index[p] - index[a] for p, a in alerts.select("PubDate", "AppDate").iter_rows()]
    )
    assert set(lag) <= {1, 2} and (lag == 1).mean() > 0.95
    for side in ("Shrt", "Long"):
        assert (alerts[f"{side}NegOut"] + alerts[f"{side}StdOut"] == alerts[f"{side}Out"]).all()
    assert alerts["PubReason.DailyPublication"].all()
    assert set(alerts["TSEMrgnRegCls"]) <= {"001", "002", "003", "004", "005", "006", "101", "102"}
    bars = market.tables["equities/bars/daily"]
    assert 0.005 < alerts.height / bars.height < 0.15


def test_short_selling_tables(market):
    ratio = market.tables["markets/short-ratio"]
    assert set(ratio["S33"]) <= set(SECTOR33)
    assert ratio.select(pl.struct("Date", "S33").is_unique().all()).item()
    total = ratio["SellExShortVa"] + ratio["ShrtWithResVa"] + ratio["ShrtNoResVa"]
    short_share = (ratio["ShrtWithResVa"] + ratio["ShrtNoResVa"]) / total
    assert 0.3 < short_share.mean() < 0.5 and (short_share >= 0.19).all()

    reports = market.tables["markets/short-sale-report"]
    index = {d: i for i, d in enumerate(market.hidden.timeline.days)}
    lag = [index[d] - index[c] for d, c in reports.select("DiscDate", "CalcDate").iter_rows()]
    assert set(lag) <= {1, 2}
    above = reports["ShrtPosToSO"] >= 0.005
    assert (above | (reports["PrevRptRatio"] >= 0.005)).all()  # else a falling-below report
    # a ratio of shares outstanding: the raw check (ShrtPosToSO <= 1) never fires on the sandbox
    assert reports["ShrtPosToSO"].max() <= 0.15
    assert (reports["ShrtPosUnits"] == (reports["ShrtPosShares"] / 100).floor()).all()
    follow = reports.filter(pl.col("PrevRptDate").is_not_null())
    assert (follow["PrevRptDate"] < follow["CalcDate"]).all()


def test_investor_types_invariants(market):
    flows = market.tables["equities/investor-types"]
    for who in INVESTORS:
        assert (flows[f"{who}Tot"] == flows[f"{who}Sell"] + flows[f"{who}Buy"]).all(), who
        assert (flows[f"{who}Bal"] == flows[f"{who}Buy"] - flows[f"{who}Sell"]).all(), who
    for side in ("Sell", "Buy"):
        assert (flows[f"Brk{side}"] == sum(flows[f"{c}{side}"] for c in CLIENTS)).all()
        assert (flows[f"Tot{side}"] == flows[f"Prop{side}"] + flows[f"Brk{side}"]).all()
    values = flows.select(pl.exclude("PubDate", "StDate", "EnDate", "Section"))
    assert values.select(pl.all().round(0) == pl.all()).to_numpy().all()  # thousand yen
    before = flows.filter(pl.col("StDate") < SEGMENT_MIGRATION)
    after = flows.filter(pl.col("StDate") >= SEGMENT_MIGRATION)
    assert set(before["Section"]) <= {"TSE1st", "TSE2nd", "TSEMothers", "TSEJASDAQ", "TokyoNagoya"}
    assert set(after["Section"]) <= {"TSEPrime", "TSEStandard", "TSEGrowth", "TokyoNagoya"}
    first = flows.sort("PubDate").group_by("Section", "StDate", "EnDate").first()
    assert all(p == _session_shift(e, 4) for p, e in first.select("PubDate", "EnDate").iter_rows())
    corrected = (
        flows.group_by("Section", "StDate", "EnDate")
        .agg(pl.col("PubDate").n_unique().alias("n"), pl.col("PubDate").max().alias("latest"))
        .filter(pl.col("n") > 1)
    )
    assert corrected.height >= 1 and (corrected["latest"] >= dt.date(2023, 4, 3)).all()


def test_index_option_chains(market):
    options = market.tables["derivatives/bars/daily/options/225"]
    day = options.filter(pl.col("Date") == options["Date"][100])
    assert day["CM"].n_unique() == 3 and set(day["PCDiv"]) == {"1", "2"}
    assert day["UnderPx"].n_unique() == 1 and (day["Strike"] % 125 == 0).all()
    assert options["Code"].str.contains(r"^1[34]\d{7}$").all()
    assert options.select(pl.struct("Date", "Code", "EmMrgnTrgDiv").is_unique().all()).item()
    for cm, sqd, ltd in options.select("CM", "SQD", "LTD").unique().iter_rows():
        year, month = map(int, cm.split("-"))
        first = dt.date(year, month, 1)
        friday = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 7)
        assert sqd == (friday if calendar.is_trading_day(friday) else _session_shift(friday, -1))
        assert ltd == _session_shift(sqd, -1)
    assert (options["LTD"] >= options["Date"]).all()
    assert (options["Settle"] >= 1).all() and (options["IV"] > 0).all()
    untraded = options.filter(pl.col("Vo") == 0)
    assert untraded.height > 0 and (untraded["C"] == 0).all()
    # Put-call parity on theoretical prices: C - P = (F - K) e^{-rT} = S - K e^{-rT}.
    pairs = day.pivot("PCDiv", index=["CM", "Strike", "SQD", "UnderPx", "IR"], values="Theo")
    tenor = (pairs["SQD"] - options["Date"][100]).dt.total_days() / 365
    parity = pairs["UnderPx"] - pairs["Strike"] * np.exp(-pairs["IR"] / 100 * tenor)
    assert np.allclose(pairs["2"] - pairs["1"], parity, atol=0.01)


# --- oracle ---------------------------------------------------------------------------------


def _rows(frame: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    return frame.filter(pl.col("date") == day)


def test_oracle_frame_covers_every_bar(market):
    oracle = market.oracle
    assert oracle.columns == ["date", "code"] + [f"oracle_{h}d" for h in HORIZONS]
    bars = market.tables["equities/bars/daily"].select(
        pl.col("Date").alias("date"), pl.col("Code").alias("code")
    )
    assert oracle.select("date", "code").equals(bars)
    assert oracle.null_count().sum_horizontal().item() == 0


def test_oracle_is_recomputed_exactly_from_published_tables(market):
    assert market.replay_oracle().equals(market.oracle)


def test_oracle_uses_no_information_after_t(market):
    t = market.hidden.timeline.days[150]
    rng = np.random.default_rng(1)
    bars = market.tables["equities/bars/daily"]
    future = pl.col("Date") > t
    perturbed = dict(market.tables)
    perturbed["equities/bars/daily"] = bars.with_columns(
        pl.when(future)
        .then(pl.col("C") * pl.Series(rng.uniform(0.5, 1.5, bars.height)))
        .otherwise(pl.col("C"))
        .alias("C")
    )
    fins = market.tables["fins/summary"]
    perturbed["fins/summary"] = fins.with_columns(
        pl.when(pl.col("DiscDate") > t).then(pl.col(c) * 3).otherwise(pl.col(c)).alias(c)
        for c in ("OP", "FOP", "NxFOP")
    )
    margin = market.tables["markets/margin-interest"]
    published_after = pl.Series([_session_shift(d, 2) > t for d in margin["Date"].to_list()])
    perturbed["markets/margin-interest"] = margin.with_columns(
        pl.when(published_after).then(pl.col("LongVol") * 2).otherwise(pl.col("LongVol"))
    )
    replayed = market.replay_oracle(perturbed)
    past = pl.col("date") <= t
    assert replayed.filter(past).equals(market.oracle.filter(past))
    assert not replayed.filter(~past).equals(market.oracle.filter(~past))

    # Only rows public by t, and the oracle stops at t.
    truncated = dict(market.tables)
    truncated["equities/bars/daily"] = bars.filter(~future)
    truncated["fins/summary"] = fins.filter(pl.col("DiscDate") <= t)
    truncated["markets/margin-interest"] = margin.filter(~published_after)
    upto = market.replay_oracle(truncated, through=t)
    assert upto["date"].max() == t
    assert upto.equals(market.oracle.filter(past))

    # The check can fail: changing a close at t changes the oracle at t.
    changed = dict(market.tables)
    changed["equities/bars/daily"] = bars.with_columns(
        pl.when(pl.col("Date") == t).then(pl.col("C") * 1.1).otherwise(pl.col("C")).alias("C")
    )
    assert not _rows(market.replay_oracle(changed), t).equals(_rows(market.oracle, t))


@pytest.mark.slow
def test_oracle_rankic_is_positive_and_stable_across_seeds(market):
    results = [market.oracle_rankic()] + [
        generate_market(MarketConfig(seed=s, **SMALL)).oracle_rankic() for s in (11, 12)
    ]
    for ric in results:
        assert set(ric) == set(HORIZONS)
        assert 0.03 <= ric[1] <= 0.25, ric
        assert all(0.0 < ric[h] < 0.3 for h in HORIZONS), ric


def test_random_predictor_scores_about_zero(market):
    targets = market.targets
    rng = np.random.default_rng(3)
    noise = targets.with_columns(pl.Series("random", rng.standard_normal(targets.height)))
    for h in HORIZONS:
        assert abs(mean_rank_ic(noise, "random", f"target_{h}d")) < 0.02
    # The realized targets follow DESIGN section 6 (entry at the close of t+1).
    bars = market.tables["equities/bars/daily"]
    code = bars["Code"][0]
    adj = bars.filter(pl.col("Code") == code).sort("Date")["AdjC"].to_numpy()
    mine = targets.filter(pl.col("code") == code).sort("date")["target_5d"].to_numpy()
    assert mine[0] == pytest.approx(adj[6] / adj[1] - 1)


def test_rank_ic_helper_matches_scipy():
    rng = np.random.default_rng(5)
    n = 400
    frame = pl.DataFrame(
        {
            "date": np.repeat(np.arange(8), n // 8),
            "prediction": np.round(rng.standard_normal(n), 1),  # ties
            "target": np.where(rng.random(n) < 0.05, np.nan, rng.standard_normal(n)),
        }
    ).with_columns(
        pl.when(pl.int_range(pl.len()) % 37 == 0)
        .then(None)
        .otherwise(pl.col("prediction"))
        .alias("prediction")
    )
    daily = daily_rank_ic(frame, "prediction", "target")
    expected = []
    for d, part in frame.group_by("date", maintain_order=True):
        ok = part.filter(pl.col("prediction").is_not_null() & pl.col("target").is_not_nan())
        rho = stats.spearmanr(ok["prediction"], ok["target"]).statistic
        expected.append(rho)
        assert daily.filter(pl.col("date") == d[0])["rank_ic"].item() == pytest.approx(
            rho, abs=1e-12
        )
    assert mean_rank_ic(frame, "prediction", "target") == pytest.approx(
        np.mean(expected), abs=1e-12
    )


def test_summary_is_json_ready(market):
    summary = market.summary()
    json.dumps(summary)
    assert summary["n_stocks"] == 60 and summary["trading_days"] == len(market.hidden.timeline)
    assert set(summary["rows"]) == set(ENDPOINTS)
    assert set(summary["oracle_rankic"]) == {f"{h}d" for h in HORIZONS}
    assert summary["signals"]["earnings"]["strength"] == MarketConfig().earnings_strength


@pytest.mark.slow
def test_default_market_size_speed_and_signal():
    started = time.perf_counter()
    market = generate_market(MarketConfig())
    elapsed = time.perf_counter() - started
    assert elapsed < 60, elapsed  # ~5 s on 2 cores; generous for loaded CI machines
    assert market.tables["equities/master"]["Code"].n_unique() == 300
    fins = market.tables["fins/summary"]
    reports = fins.filter(pl.col("DocType").str.contains("FinancialStatements"))
    restated = reports.group_by("Code", "DocType", "CurPerEn").agg(
        pl.len(), pl.col("OP").n_unique()
    )
    assert restated.filter((pl.col("len") > 1) & (pl.col("OP") > 1)).height >= 1
    ric = market.oracle_rankic()
    assert 0.05 <= ric[1] <= 0.15, ric
    assert all(0.05 <= ric[h] <= 0.2 for h in HORIZONS), ric


def test_default_market_short_positions_stay_a_fraction_of_shares_outstanding():
    """Over the demo's three years an unbounded walk reported positions above 100% of the shares
    outstanding (173 reports on 138 days), tripping the raw warning check on the sandbox."""
    reports = generate_market(MarketConfig()).tables["markets/short-sale-report"]
    assert reports.height > 1000
    assert 0.05 < reports["ShrtPosToSO"].max() <= 0.15
