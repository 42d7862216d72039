"""Financial-statement features: growth, profitability, guidance and valuation at t.

Point in time (DESIGN §6):

- A disclosure is known from its ``DiscDate`` when disclosed by 18:00 (an after-close
  ``DiscTime`` is still "on" that date), else from the next day: the 24:30 update that
  carries it comes after the evening's nightly run (``common.statement_available``). Only documents whose ``DocType`` contains ``FinancialStatements`` carry results;
  ``EarnForecastRevision`` / ``DividendForecastRevision`` documents carry guidance only.
- The statement in force at t is the latest version of the most recent fiscal period
  (``CurPerEn``) disclosed by t. A restatement (a newer ``DiscDate`` for the same ``CurFYSt`` /
  ``CurPerType``) replaces the old figures only from its own ``DiscDate`` — also when the
  restated period is the prior-year quarter a YoY growth compares against.
- Everything is evaluated on *state dates* (each code's distinct disclosure dates); every
  lookup is an as-of join on ``DiscDate <= state date``, and the states are as-of joined to the
  daily panel, so no row dated t can see a disclosure dated after t.

Units:

- J-Quants results are cumulative year to date (3Q = nine months). Quarterly values are
  de-cumulated against the previous quarter of the same fiscal year; trailing-twelve-month
  (TTM) values are ``YTD + prior FY − prior-year YTD``.
- Per-share figures (EPS, BPS, FEPS, FDivAnn) and share counts are in the share units of their
  disclosure date, while the raw close ``C`` at t is in the units of t. A split between the
  two would bias PER/PBR/yields by the split ratio, so every per-share figure is carried in
  *base units* (``value × exp(−L(DiscDate))``, share counts ``× exp(L(DiscDate))``), where
  ``L`` is the cumulative log ``AdjFactor`` of the stock (``split_panel``), and brought to the
  units of t with ``exp(L(t))``. Only factors between the disclosure and t matter, so the
  correction is exact as long as the family's lookback covers the disclosure. Caveat: a
  company that already restates its EPS for a split effective after the period end but before
  the disclosure is treated like any other disclosure (its figures are taken to be in the
  units of the disclosure date, which is what they are).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.common import log_split_at, narrow, raw_source, split_panel

_FS_PERIODS = ("1Q", "2Q", "3Q", "FY")
_PREVIOUS_PERIOD = {"2Q": "1Q", "3Q": "2Q", "FY": "3Q"}
_QUARTER_NUMBER = {"1Q": 1, "2Q": 2, "3Q": 3, "FY": 4}
_DAYS_PER_YEAR = 365.25
# (our name, current-year field, next-year field in FY documents, per-share figure)
_FORECASTS = (
    ("fsales", "FSales", "NxFSales", False),
    ("fop", "FOP", "NxFOP", False),
    ("fnp", "FNP", "NxFNp", False),
    ("feps_b", "FEPS", "NxFEPS", True),
    ("fdiv_b", "FDivAnn", "NxFDivAnn", True),
)
_DIVIDEND_FORECASTS = ("fdiv_b",)
_RESULT_COLUMNS = (
    "per_end",
    "sales",
    "op",
    "np",
    "eps_b",
    "bps_b",
    "ta",
    "eq",
    "eq_ratio",
    "cfo",
    "shares_b",
    "sheq",
)


# Shareholders' equity (equity less non-controlling interests) and the reported ROE (percent),
# consolidated and parent-only ("NC"); the reported ROEs come with full-year statements.
_EQUITY_FIELDS = ("ShEq", "NCShEq", "ROE", "NCROE")


def growth(current: pl.Expr, prior: pl.Expr) -> pl.Expr:
    """(current − prior) / |prior|: sign-correct growth when the base is negative."""
    return common.safe_div(current - prior, prior.abs())


def _positive_div(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """num / den where den > 0 (ratios against a negative base are meaningless)."""
    return pl.when(den > 0).then(num / den).otherwise(None)


def _documents(inputs: FeatureInputs, levels: pl.LazyFrame) -> pl.LazyFrame:
    fields = [
        "DiscDate",
        "DiscTime",
        "Code",
        "DiscNo",
        "DocType",
        "CurPerType",
        "CurPerEn",
        "CurFYSt",
        "NxtFYSt",
        "Sales",
        "OP",
        "NP",
        "EPS",
        "TA",
        "Eq",
        "EqAR",
        "BPS",
        "CFO",
        "ShOutFY",
        "TrShFY",
        *_EQUITY_FIELDS,
        *dict.fromkeys(f for _, cur, nxt, _ in _FORECASTS for f in (cur, nxt)),
    ]
    docs = (
        raw_source(inputs, "statements", "raw_statements", fields)
        .with_columns(common.statement_available().alias("known"))
        .rename({"Code": "code"})
        .filter(pl.col("known").is_not_null() & pl.col("code").is_not_null())
    )
    # per-share figures are in the share units of the disclosure date, not of the known date
    return (
        log_split_at(docs, "DiscDate", levels)
        .drop("DiscDate")
        .sort("code", "known", "DiscTime", "DiscNo", maintain_order=True)
    )


def _is_statement() -> pl.Expr:
    return (
        pl.col("DocType").str.contains("FinancialStatements")
        & pl.col("CurPerType").is_in(list(_FS_PERIODS))
        & pl.col("CurFYSt").is_not_null()
        & pl.col("CurPerEn").is_not_null()
    )


def _statement_versions(docs: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (code, fiscal year, period, DiscDate): the results of that version."""
    to_base = (-pl.col("log_split")).exp()
    return (
        docs.filter(_is_statement())
        .select(
            "code",
            "known",
            pl.col("CurFYSt").alias("fy"),
            pl.col("CurPerType").alias("per"),
            pl.col("CurPerEn").alias("per_end"),
            pl.col("Sales").alias("sales"),
            pl.col("OP").alias("op"),
            pl.col("NP").alias("np"),
            (pl.col("EPS") * to_base).alias("eps_b"),
            (pl.col("BPS") * to_base).alias("bps_b"),
            pl.col("TA").alias("ta"),
            pl.col("Eq").alias("eq"),
            pl.coalesce(pl.col("EqAR"), common.safe_div(pl.col("Eq"), pl.col("TA"))).alias(
                "eq_ratio"
            ),
            pl.col("CFO").alias("cfo"),
            # Shares outstanding net of treasury stock (a blank treasury count means none).
            ((pl.col("ShOutFY") - pl.col("TrShFY").fill_null(0.0)) / to_base).alias("shares_b"),
            pl.col("ShEq").alias("sheq"),
            pl.col("NCShEq").alias("nc_sheq"),
            (pl.col("ROE") / 100.0).alias("roe_reported"),
            (pl.col("NCROE") / 100.0).alias("nc_roe_reported"),
        )
        .unique(subset=["code", "fy", "per", "known"], keep="last", maintain_order=True)
    )


def _forecast_events(docs: pl.LazyFrame) -> pl.LazyFrame:
    """Full-year guidance per (code, fiscal year, DiscDate), with its revision.

    Statements give the current year's forecast (``F*``), except FY statements whose ``F*``
    year is over: they give the next year's (``NxF*``, keyed by ``NxtFYSt``). Revision documents
    restate the current year's forecast. A field a document does not speak to (dividends in an
    earnings revision, a blank in a revision) carries the previous value of the same fiscal
    year forward; a blank in a statement means "no forecast" and is kept blank — it is encoded
    as NaN so that the forward fill, which only fills nulls, leaves it alone.
    """
    is_fs = _is_statement()
    is_fy_doc = is_fs & (pl.col("CurPerType") == "FY")
    is_earn = pl.col("DocType").str.contains("EarnForecastRevision")
    is_div = pl.col("DocType").str.contains("DividendForecastRevision")
    order = ["known", "DiscTime", "DiscNo"]
    to_base = (-pl.col("log_split")).exp()

    values = []
    for name, cur, nxt, per_share in _FORECASTS:
        value = pl.when(is_fy_doc).then(pl.col(nxt)).otherwise(pl.col(cur))
        if per_share:
            value = value * to_base
        revision_doc = is_div if name in _DIVIDEND_FORECASTS else is_earn
        spoken = (
            pl.when(is_fs)
            .then(value.fill_null(float("nan")))
            .when(revision_doc)
            .then(value)
            .otherwise(None)
        )
        filled = spoken.forward_fill().over(["code", "fy"], order_by=order)
        values.append(filled.fill_nan(None).alias(name))

    events = (
        docs.filter(is_fs | is_earn | is_div)
        .with_columns(
            pl.when(is_fy_doc).then(pl.col("NxtFYSt")).otherwise(pl.col("CurFYSt")).alias("fy")
        )
        .filter(pl.col("fy").is_not_null())
        .with_columns(values)
        .sort("code", "fy", *order, maintain_order=True)
        .unique(subset=["code", "fy", "known"], keep="last", maintain_order=True)
    )
    in_year = {"partition_by": ["code", "fy"], "order_by": "known"}
    return events.select(
        "code",
        "known",
        "fy",
        *[name for name, *_ in _FORECASTS],
        *[
            growth(pl.col(n), pl.col(n).shift(1)).over(**in_year).alias(f"{n}_rev")
            for n in ("fsales", "fop", "fnp", "feps_b")
        ],
        growth(pl.col("fop"), pl.col("fop").drop_nulls().first())
        .over(**in_year)
        .alias("fop_rev_fy"),
    )


def _frontier(table: pl.LazyFrame, end: str, keys: Mapping[str, str]) -> pl.LazyFrame:
    """``code, known`` + ``keys`` of the most advanced period disclosed by each ``known``.

    A row is on the frontier when its ``end`` is the largest seen so far for its code; a
    later restatement of an older period is not, so it never becomes "current".
    """
    running_max = pl.col(end).cum_max().over("code", order_by=["known", end])
    return (
        table.filter(pl.col(end) >= running_max)
        .sort("code", "known", end, maintain_order=True)
        .unique(subset=["code", "known"], keep="last", maintain_order=True)
        .select("code", "known", *[pl.col(src).alias(dst) for src, dst in keys.items()])
    )


def _attach_frontier(states: pl.LazyFrame, frontier: pl.LazyFrame) -> pl.LazyFrame:
    return (
        states.sort("s")
        .join_asof(
            frontier.rename({"known": "_front_known"}).sort("_front_known"),
            left_on="s",
            right_on="_front_known",
            by="code",
            check_sortedness=False,
        )
        .drop("_front_known")
    )


def _lookup(
    states: pl.LazyFrame,
    table: pl.LazyFrame,
    keys: Mapping[str, pl.Expr],
    prefix: str,
    columns: Iterable[str],
) -> pl.LazyFrame:
    """Attach the latest ``table`` row known on each state date whose ``keys`` match.

    ``keys`` maps a ``table`` column to the state expression it must equal (a null key never
    matches). The matched row's columns come back as ``prefix + name``, with its ``known``
    date as ``prefix + "known"``.
    """
    tmp = {column: f"_key_{column}" for column in keys}
    left = states.with_columns(**{tmp[c]: expr for c, expr in keys.items()})
    right = table.select(
        "code",
        *[pl.col(c).alias(tmp[c]) for c in keys],
        pl.col("known").alias(f"{prefix}known"),
        *[pl.col(c).alias(prefix + c) for c in columns],
    )
    return (
        left.sort("s")
        .join_asof(
            right.sort(f"{prefix}known"),
            left_on="s",
            right_on=f"{prefix}known",
            by=["code", *tmp.values()],
            check_sortedness=False,
        )
        .drop(*tmp.values())
    )


def _states(docs: pl.LazyFrame) -> pl.LazyFrame:
    """Per (code, disclosure date): every figure the features need, as known on that date."""
    versions = _statement_versions(docs)
    forecasts = _forecast_events(docs)
    states = (
        pl.concat([versions.select("code", "known"), forecasts.select("code", "known")])
        .unique()
        .rename({"known": "s"})
    )
    fy, per = pl.col("fy"), pl.col("per")
    prior_fy = fy.dt.offset_by("-1y")
    prior_per = per.replace_strict(_PREVIOUS_PERIOD, default=None, return_dtype=pl.String)
    flows = ["sales", "op", "np"]

    states = _attach_frontier(states, _frontier(versions, "per_end", {"fy": "fy", "per": "per"}))
    states = _lookup(states, versions, {"fy": fy, "per": per}, "c_", _RESULT_COLUMNS)
    states = _lookup(states, versions, {"fy": prior_fy, "per": per}, "py_", _RESULT_COLUMNS)
    states = _lookup(states, versions, {"fy": fy, "per": prior_per}, "pq_", flows)
    states = _lookup(states, versions, {"fy": prior_fy, "per": prior_per}, "pyq_", flows)
    states = _lookup(
        states, versions, {"fy": prior_fy, "per": pl.lit("FY")}, "pfy_", [*flows, "eps_b"]
    )
    # Guidance for the fiscal year of the current statement (progress, FY surprise) ...
    states = _lookup(states, forecasts, {"fy": fy}, "g_", ["fsales", "fop", "fnp"])
    # ... and for the fiscal year in progress (valuation, revisions, guided growth).
    states = _attach_frontier(states, _frontier(forecasts, "fy", {"fy": "front_fy"}))
    forecast_columns = [
        c for c in forecasts.collect_schema().names() if c not in ("code", "known", "fy")
    ]
    states = _lookup(states, forecasts, {"fy": pl.col("front_fy")}, "f_", forecast_columns)
    states = _lookup(
        states,
        versions,
        {"fy": pl.col("front_fy").dt.offset_by("-1y"), "per": pl.lit("FY")},
        "fa_",
        ["op"],
    )
    # Operating cash flow and book value per share are often left out of 1Q/3Q statements:
    # accruals and PBR use the most recent period that reported them.
    states = _latest_reporting(states, versions, "cfo", "cf_", ["np", "cfo", "ta"])
    # ROE is reported with full-year statements only, parent-only equity by parents of groups.
    states = _latest_reporting(states, versions, "roe_reported", "re_", ["roe_reported"])
    states = _latest_reporting(
        states, versions, "nc_sheq", "pc_", ["nc_sheq", "nc_roe_reported", "sheq"]
    )
    return _latest_reporting(states, versions, "bps_b", "bv_", ["bps_b"])


def _latest_reporting(
    states: pl.LazyFrame, versions: pl.LazyFrame, column: str, prefix: str, columns: list[str]
) -> pl.LazyFrame:
    """Attach ``columns`` of the latest version of the most recent period reporting ``column``."""
    reporting = versions.filter(pl.col(column).is_not_null())
    keys = {"fy": f"{prefix}fy", "per": f"{prefix}per"}
    states = _attach_frontier(states, _frontier(reporting, "per_end", keys))
    return _lookup(
        states, reporting, {c: pl.col(alias) for c, alias in keys.items()}, prefix, columns
    )


def _state_features(states: pl.LazyFrame) -> pl.LazyFrame:
    per = pl.col("per")
    is_q1 = per == "1Q"

    def c(name: str) -> pl.Expr:
        return pl.col(f"c_{name}")

    def quarterly(prefix: str, prior_prefix: str, name: str) -> pl.Expr:
        ytd = pl.col(f"{prefix}{name}")
        return pl.when(is_q1).then(ytd).otherwise(ytd - pl.col(f"{prior_prefix}{name}"))

    def ttm(name: str) -> pl.Expr:
        return (
            pl.when(per == "FY")
            .then(c(name))
            .otherwise(c(name) + pl.col(f"pfy_{name}") - pl.col(f"py_{name}"))
        )

    annualize = _DAYS_PER_YEAR / ((c("per_end") - pl.col("fy")).dt.total_days() + 1)
    margin = common.safe_div(c("op"), c("sales"))
    prior_margin = common.safe_div(pl.col("py_op"), pl.col("py_sales"))
    return states.select(
        "code",
        "s",
        pl.col("c_known").alias("stmt_known"),
        pl.col("f_known").alias("forecast_known"),
        growth(c("sales"), pl.col("py_sales")).alias("stmt_sales_yoy"),
        growth(c("op"), pl.col("py_op")).alias("stmt_op_yoy"),
        growth(c("np"), pl.col("py_np")).alias("stmt_np_yoy"),
        growth(c("eps_b"), pl.col("py_eps_b")).alias("stmt_eps_yoy"),
        *[
            growth(quarterly("c_", "pq_", n), quarterly("py_", "pyq_", n)).alias(f"stmt_{n}_q_yoy")
            for n in ("sales", "op", "np")
        ],
        margin.alias("stmt_op_margin"),
        common.safe_div(c("np"), c("sales")).alias("stmt_np_margin"),
        common.safe_div(quarterly("c_", "pq_", "op"), quarterly("c_", "pq_", "sales")).alias(
            "stmt_op_margin_q"
        ),
        (margin - prior_margin).alias("stmt_op_margin_yoy_chg"),
        _positive_div(c("np") * annualize, c("eq")).alias("stmt_roe"),
        _positive_div(c("np") * annualize, c("ta")).alias("stmt_roa"),
        _positive_div(c("np") * annualize, c("sheq")).alias("stmt_roe_sheq"),
        pl.col("re_roe_reported").alias("stmt_roe_reported"),
        pl.col("pc_nc_roe_reported").alias("stmt_nc_roe_reported"),
        _positive_div(c("sheq"), c("ta")).alias("stmt_sheq_ratio"),
        pl.when(c("eq") > 0).then(1.0 - c("sheq") / c("eq")).alias("stmt_noncontrolling_share"),
        growth(c("sheq"), pl.col("py_sheq")).alias("stmt_sheq_yoy"),
        _positive_div(pl.col("pc_nc_sheq"), pl.col("pc_sheq")).alias("stmt_parent_equity_share"),
        c("eq_ratio").alias("stmt_equity_ratio"),
        _positive_div(c("sales"), pl.col("g_fsales")).alias("stmt_sales_progress"),
        _positive_div(c("op"), pl.col("g_fop")).alias("stmt_op_progress"),
        _positive_div(c("np"), pl.col("g_fnp")).alias("stmt_np_progress"),
        pl.col("f_fsales_rev").alias("stmt_fsales_rev"),
        pl.col("f_fop_rev").alias("stmt_fop_rev"),
        pl.col("f_fnp_rev").alias("stmt_fnp_rev"),
        pl.col("f_feps_b_rev").alias("stmt_feps_rev"),
        pl.col("f_fop_rev_fy").alias("stmt_fop_rev_fy"),
        growth(pl.col("f_fop"), pl.col("fa_op")).alias("stmt_fop_growth"),
        common.safe_div(pl.col("cf_np") - pl.col("cf_cfo"), pl.col("cf_ta")).alias("stmt_accruals"),
        growth(c("shares_b"), pl.col("py_shares_b")).alias("stmt_shares_chg_yoy"),
        per.replace_strict(_QUARTER_NUMBER, default=None, return_dtype=pl.Float64).alias(
            "stmt_fiscal_quarter"
        ),
        # Per-share and yen amounts priced at t on the daily panel.
        ttm("eps_b").alias("eps_ttm_b"),
        ttm("sales").alias("sales_ttm"),
        pl.col("f_feps_b").alias("feps_b"),
        pl.col("f_fdiv_b").alias("fdiv_b"),
        pl.col("bv_bps_b").alias("bps_b"),
        c("shares_b").alias("shares_b"),
        c("sheq").alias("sheq"),
    )


# Sessions of history behind every statement column (they all share one lookback).
LOOKBACK = 400
# (column, description)
_STATEMENT_FEATURES = (
    ("stmt_sales_yoy", "YTD net sales vs the same period of the prior fiscal year"),
    ("stmt_op_yoy", "YTD operating profit vs the same period of the prior fiscal year"),
    ("stmt_np_yoy", "YTD net profit vs the same period of the prior fiscal year"),
    ("stmt_eps_yoy", "YTD EPS (split-adjusted) vs the same period of the prior fiscal year"),
    ("stmt_sales_q_yoy", "Quarterly (de-cumulated) net sales vs the same quarter a year earlier"),
    ("stmt_op_q_yoy", "Quarterly operating profit vs the same quarter a year earlier"),
    ("stmt_np_q_yoy", "Quarterly net profit vs the same quarter a year earlier"),
    ("stmt_op_margin", "YTD operating profit / net sales"),
    ("stmt_np_margin", "YTD net profit / net sales"),
    ("stmt_op_margin_q", "Quarterly operating profit / quarterly net sales"),
    ("stmt_op_margin_yoy_chg", "YTD operating margin minus the prior-year same-period margin"),
    ("stmt_roe", "Annualized YTD net profit / equity (null when equity <= 0)"),
    ("stmt_roa", "Annualized YTD net profit / total assets"),
    ("stmt_equity_ratio", "Equity-to-asset ratio (EqAR, else Eq / TA)"),
    (
        "stmt_roe_sheq",
        "Annualized YTD net profit / shareholders' equity ShEq (null when ShEq <= 0)",
    ),
    ("stmt_roe_reported", "ROE as reported (ROE / 100), latest full-year statement"),
    (
        "stmt_nc_roe_reported",
        "Parent-only ROE as reported (NCROE / 100), latest full-year statement with it",
    ),
    ("stmt_sheq_ratio", "Shareholders' equity ShEq / total assets"),
    ("stmt_noncontrolling_share", "1 - ShEq / Eq: non-controlling interests' share of equity"),
    ("stmt_sheq_yoy", "Shareholders' equity vs the same period of the prior fiscal year"),
    (
        "stmt_parent_equity_share",
        "Parent-only shareholders' equity NCShEq / consolidated ShEq, latest statement with both",
    ),
    ("stmt_sales_progress", "YTD net sales / full-year sales forecast of the same fiscal year"),
    ("stmt_op_progress", "YTD operating profit / full-year OP forecast of the same fiscal year"),
    ("stmt_np_progress", "YTD net profit / full-year NP forecast of the same fiscal year"),
    (
        "stmt_fsales_rev",
        "Sales forecast change vs the previous disclosure for the fiscal year in progress",
    ),
    (
        "stmt_fop_rev",
        "OP forecast change vs the previous disclosure for the fiscal year in progress",
    ),
    (
        "stmt_fnp_rev",
        "NP forecast change vs the previous disclosure for the fiscal year in progress",
    ),
    (
        "stmt_feps_rev",
        "EPS forecast change vs the previous disclosure for the fiscal year in progress",
    ),
    (
        "stmt_fop_rev_fy",
        "OP forecast change since the first forecast of the fiscal year in progress",
    ),
    ("stmt_fop_growth", "OP forecast of the year in progress vs the last full-year actual OP"),
    ("stmt_div_yield_fwd", "Forecast annual dividend per share / raw close at t"),
    ("stmt_per_fwd", "Raw close / forecast EPS (null when forecast EPS <= 0)"),
    ("stmt_per_ttm", "Raw close / trailing-twelve-month EPS (null when TTM EPS <= 0)"),
    ("stmt_pbr", "Raw close / latest reported book value per share (null when <= 0)"),
    ("stmt_earnings_yield_fwd", "Forecast EPS / raw close"),
    ("stmt_earnings_yield_ttm", "Trailing-twelve-month EPS / raw close"),
    ("stmt_sales_to_price", "Trailing-twelve-month net sales / market capitalization at t"),
    ("stmt_book_to_market", "Shareholders' equity ShEq / market capitalization at t"),
    ("stmt_days_since_disc", "Calendar days since the statement in force became known"),
    (
        "stmt_days_since_forecast",
        "Calendar days since the latest guidance for the year in progress",
    ),
    ("stmt_accruals", "(Net profit - operating cash flow) / total assets, latest period with CFO"),
    (
        "stmt_shares_chg_yoy",
        "Change of shares outstanding net of treasury (split-adjusted) vs a year earlier",
    ),
    ("stmt_fiscal_quarter", "Fiscal quarter of the statement in force (1-3, 4 = full year)"),
)
FEATURES = tuple(FeatureSpec(name, desc, LOOKBACK) for name, desc in _STATEMENT_FEATURES)


def compute(inputs: FeatureInputs) -> pl.LazyFrame:
    panel = split_panel(inputs, "statements", {"C": "raw_close"})
    documents = _documents(inputs, panel.select("date", "code", "log_split"))
    states = narrow(_state_features(_states(documents)))
    close = pl.col("raw_close")
    to_t = pl.col("log_split").exp()  # base units -> units of t (per share)
    eps_ttm, feps = pl.col("eps_ttm_b") * to_t, pl.col("feps_b") * to_t
    market_cap = close * pl.col("shares_b") / to_t
    frame = common.asof_published(panel, states, "s").with_columns(
        _positive_div(pl.col("fdiv_b") * to_t, close).alias("stmt_div_yield_fwd"),
        _positive_div(close, feps).alias("stmt_per_fwd"),
        _positive_div(close, eps_ttm).alias("stmt_per_ttm"),
        _positive_div(close, pl.col("bps_b") * to_t).alias("stmt_pbr"),
        _positive_div(feps, close).alias("stmt_earnings_yield_fwd"),
        _positive_div(eps_ttm, close).alias("stmt_earnings_yield_ttm"),
        _positive_div(pl.col("sales_ttm"), market_cap).alias("stmt_sales_to_price"),
        _positive_div(pl.col("sheq"), market_cap).alias("stmt_book_to_market"),
        (pl.col("date") - pl.col("stmt_known")).dt.total_days().alias("stmt_days_since_disc"),
        (pl.col("date") - pl.col("forecast_known"))
        .dt.total_days()
        .alias("stmt_days_since_forecast"),
    )
    return common.emit(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name="statements",
    sources=("raw_daily_quotes", "raw_statements"),
    lookback=LOOKBACK,
    features=FEATURES,
    compute=compute,
    description=(
        "Latest financial statement and guidance known at t (as of DiscDate, restatements "
        "from their own date): YoY and quarterly growth, margins, returns on equity (computed "
        "and as reported, shareholders' and parent-only equity), forecast progress and "
        "revisions, and split-consistent valuation at the raw close of t."
    ),
)
