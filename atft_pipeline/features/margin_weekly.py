"""Weekly margin-balance features (``raw_weekly_margin_interest``).

Rows carry the application ``Date`` (normally a Friday) and are published two sessions later
(``WEEKLY_MARGIN_PUBLICATION_LAG``); a row dated t sees the latest week *published* on or
before t. Week-over-week statistics are computed on the weekly rows themselves (each uses only
earlier weeks, which were published earlier) and then joined by publication date.

Balances are share counts not adjusted for corporate actions, so they are carried in the
split-consistent base units of ``common.split_panel`` (``shares × exp(L(Date))``) and
compared with the 20-session average raw volume in the same units — "days of volume" held
long or short, which is scale-free and unaffected by splits before or after t.

A stock with no week published in the last ``MAX_STALE_DAYS`` days has no weekly data at t:
its quantities are null and its issue-type flags 0.
"""

from __future__ import annotations

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.common import asof_bar, narrow, raw_source, split_panel
from atft_pipeline.jquants.sources import WEEKLY_MARGIN_PUBLICATION_LAG

ADV_WINDOW = 20
MAX_STALE_DAYS = 28  # four weeks: covers the Golden Week / year-end gaps, not a dead series


def rolling_zscore(expr: pl.Expr, window: int) -> pl.Expr:
    """(x − mean) / std over the last ``window`` rows (incl. the current one); null until
    ``window`` non-null values exist or when the window is constant. Wrap it in ``over``."""
    mean = expr.rolling_mean(window, min_samples=window)
    std = expr.rolling_std(window, min_samples=window)
    return common.safe_div(expr - mean, std)


def cs_rank(expr: pl.Expr) -> pl.Expr:
    """Cross-sectional percentile rank in [0, 1] within each date (average ties); null for
    null values and on dates with fewer than two values."""
    return common.by_date(
        common.safe_div(expr.rank("average") - 1.0, (expr.count() - 1).cast(pl.Float64))
    )


def volume_panel(inputs: FeatureInputs, family: str) -> pl.LazyFrame:
    """``date, code, log_split, adv_b`` for every row of the universe; ``adv_b`` is the
    ``ADV_WINDOW``-session mean raw volume in base units (``Vo × exp(L)``).

    A session without trades (halt: null volume) counts as zero volume; the mean needs a full
    window of sessions.
    """
    panel = split_panel(inputs, family, {"Vo": "raw_volume"})
    base = pl.col("raw_volume").fill_null(0.0) * pl.col("log_split").exp()
    return panel.select(
        "date",
        "code",
        "log_split",
        common.by_code(base.rolling_mean(ADV_WINDOW, min_samples=ADV_WINDOW)).alias("adv_b"),
    )


def _weekly_rows(inputs: FeatureInputs, panel: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (code, application date) with its week-over-week statistics."""
    raw = raw_source(
        inputs,
        "margin_weekly",
        "raw_weekly_margin_interest",
        ["Date", "Code", "ShrtVol", "LongVol", "ShrtNegVol", "LongNegVol", "IssType"],
    ).rename({"Date": "app", "Code": "code"})
    weekly = (
        raw.filter(pl.col("app").is_not_null() & pl.col("code").is_not_null())
        .sort("code", "app", maintain_order=True)
        .unique(subset=["code", "app"], keep="last", maintain_order=True)
    )
    weekly = common.add_sessions(
        weekly, "app", WEEKLY_MARGIN_PUBLICATION_LAG, inputs.calendar, "published"
    ).filter(pl.col("published").is_not_null())
    weekly = asof_bar(weekly, "app", panel)

    to_base = pl.col("log_split").fill_null(0.0).exp()
    weekly = weekly.with_columns(
        (pl.col("LongVol") * to_base).alias("long_b"),
        (pl.col("ShrtVol") * to_base).alias("short_b"),
    )

    def weekly_over(expr: pl.Expr) -> pl.Expr:
        return expr.over("code", order_by="app")

    long_b, short_b, adv = pl.col("long_b"), pl.col("short_b"), pl.col("adv_b")
    ratio = common.safe_div(short_b, long_b)

    def change(col: pl.Expr, weeks: int) -> pl.Expr:
        return weekly_over(common.safe_div(col - col.shift(weeks), adv))

    def log_change(col: pl.Expr) -> pl.Expr:
        previous = col.shift(1)
        return weekly_over(pl.when((col > 0) & (previous > 0)).then((col / previous).log()))

    rows = weekly.select(
        "code",
        "app",
        "published",
        common.safe_div(long_b, adv).alias("mrgw_long_to_adv"),
        common.safe_div(short_b, adv).alias("mrgw_short_to_adv"),
        common.safe_div(long_b - short_b, adv).alias("mrgw_net_to_adv"),
        ratio.alias("mrgw_short_long_ratio"),
        change(long_b, 1).alias("mrgw_long_chg_1w"),
        change(short_b, 1).alias("mrgw_short_chg_1w"),
        change(long_b, 4).alias("mrgw_long_chg_4w"),
        change(short_b, 4).alias("mrgw_short_chg_4w"),
        log_change(long_b).alias("mrgw_long_logchg_1w"),
        log_change(short_b).alias("mrgw_short_logchg_1w"),
        weekly_over(rolling_zscore(long_b, 26)).alias("mrgw_long_z26"),
        weekly_over(rolling_zscore(short_b, 26)).alias("mrgw_short_z26"),
        weekly_over(rolling_zscore(long_b, 52)).alias("mrgw_long_z52"),
        weekly_over(rolling_zscore(short_b, 52)).alias("mrgw_short_z52"),
        weekly_over(rolling_zscore(ratio, 52)).alias("mrgw_ratio_z52"),
        common.safe_div(pl.col("LongNegVol"), pl.col("LongVol")).alias("mrgw_long_neg_share"),
        common.safe_div(pl.col("ShrtNegVol"), pl.col("ShrtVol")).alias("mrgw_short_neg_share"),
        (pl.col("IssType") == "1").fill_null(False).cast(pl.Float64).alias("mrgw_iss_margin"),
        (pl.col("IssType") == "2").fill_null(False).cast(pl.Float64).alias("mrgw_iss_loan"),
    )
    # Two application dates published the same session (a holiday week): the later one wins.
    return narrow(
        rows.sort("code", "published", "app", maintain_order=True).unique(
            subset=["code", "published"], keep="last", maintain_order=True
        )
    )


_WEEK_QUANTITIES = (
    ("mrgw_long_to_adv", "Long margin balance / 20-session average volume (days of volume)", 20),
    ("mrgw_short_to_adv", "Short margin balance / 20-session average volume (days to cover)", 20),
    ("mrgw_net_to_adv", "(Long - short margin balance) / 20-session average volume", 20),
    ("mrgw_short_long_ratio", "Short / long margin balance", 0),
    ("mrgw_long_chg_1w", "Weekly change of the long balance / 20-session average volume", 30),
    ("mrgw_short_chg_1w", "Weekly change of the short balance / 20-session average volume", 30),
    ("mrgw_long_chg_4w", "4-week change of the long balance / 20-session average volume", 45),
    ("mrgw_short_chg_4w", "4-week change of the short balance / 20-session average volume", 45),
    ("mrgw_long_logchg_1w", "Log change of the long balance vs the previous published week", 10),
    ("mrgw_short_logchg_1w", "Log change of the short balance vs the previous published week", 10),
    ("mrgw_long_z26", "Z-score of the long balance over the last 26 weeks", 135),
    ("mrgw_short_z26", "Z-score of the short balance over the last 26 weeks", 135),
    ("mrgw_long_z52", "Z-score of the long balance over the last 52 weeks", 265),
    ("mrgw_short_z52", "Z-score of the short balance over the last 52 weeks", 265),
    ("mrgw_ratio_z52", "Z-score of the short/long ratio over the last 52 weeks", 265),
    ("mrgw_long_neg_share", "Negotiable share of the long balance (vs standardized margin)", 0),
    ("mrgw_short_neg_share", "Negotiable share of the short balance (vs standardized margin)", 0),
)
_WEEK_FLAGS = (
    ("mrgw_iss_margin", "1 if the issue is a margin issue (IssType 1), else 0"),
    ("mrgw_iss_loan", "1 if the issue is a loan-margin issue (IssType 2), else 0"),
)
_RANKED = (
    ("mrgw_long_to_adv", "mrgw_long_to_adv_rank", 20),
    ("mrgw_short_to_adv", "mrgw_short_to_adv_rank", 20),
    ("mrgw_short_long_ratio", "mrgw_ratio_rank", 0),
    ("mrgw_long_chg_4w", "mrgw_long_chg_4w_rank", 45),
    ("mrgw_short_chg_4w", "mrgw_short_chg_4w_rank", 45),
)

FEATURES = (
    *[FeatureSpec(name, desc, lookback) for name, desc, lookback in _WEEK_QUANTITIES],
    *[FeatureSpec(name, desc) for name, desc in _WEEK_FLAGS],
    FeatureSpec("mrgw_weeks_since_pub", "Weeks since the week in force was published (staleness)"),
    *[
        FeatureSpec(rank, f"Cross-sectional percentile rank of {source}", lookback)
        for source, rank, lookback in _RANKED
    ],
)


def compute(inputs: FeatureInputs) -> pl.LazyFrame:
    panel = volume_panel(inputs, "margin_weekly")
    frame = common.asof_published(
        panel.select("date", "code"), _weekly_rows(inputs, panel), "published"
    )
    age = (pl.col("date") - pl.col("published")).dt.total_days()
    fresh = age.is_not_null() & (age <= MAX_STALE_DAYS)
    frame = frame.with_columns(
        *[pl.when(fresh).then(pl.col(name)).alias(name) for name, *_ in _WEEK_QUANTITIES],
        *[pl.when(fresh).then(pl.col(name)).otherwise(0.0).alias(name) for name, _ in _WEEK_FLAGS],
        pl.when(fresh).then(age / 7.0).alias("mrgw_weeks_since_pub"),
    ).with_columns(*[cs_rank(pl.col(source)).alias(rank) for source, rank, _ in _RANKED])
    return common.emit(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name="margin_weekly",
    sources=("raw_daily_quotes", "raw_weekly_margin_interest"),
    lookback=290,
    features=FEATURES,
    compute=compute,
    description=(
        "Weekly margin balances as of their publication (2 sessions after the application "
        "date): balances in days of volume, weekly/4-week changes, 26/52-week z-scores, "
        "negotiable shares, issue type, staleness and cross-sectional ranks."
    ),
)
