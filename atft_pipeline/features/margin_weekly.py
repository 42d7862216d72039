"""Margin-balance features (``raw_weekly_margin_interest``, both regimes of the source).

The source has two regimes (``../shared/JQUANTS_V2.md`` §6): weekly rows (application
``Date`` normally a Friday, no ``PubDate``) published two sessions later
(``WEEKLY_MARGIN_PUBLICATION_LAG``), and, for applications from 2026-09-25 on, daily rows
published the next session with their ``PubDate`` (and yen amounts ``*Val``, not used: they
do not exist before the switch). A row is available from its ``PubDate`` when it has one,
else from its application date plus the lag; a row dated t sees the latest row *published*
on or before t.

The definitions do not change at the switch, only the frequency: levels come from the
latest published row; "1w" / "4w" changes and 26/52-week z-scores compare it with the last
application date of each earlier calendar week (in the weekly regime: the earlier rows).
Every reference row was published before the row itself.

Balances are share counts not adjusted for corporate actions, so they are carried in the
split-consistent base units of ``common.split_panel`` (``shares × exp(L(Date))``) and
compared with the 20-session average raw volume in the same units — "days of volume" held
long or short, which is scale-free and unaffected by splits before or after t.

A stock with no row published in the last ``MAX_STALE_DAYS`` days has no margin data at t:
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
        common.safe_div(common.rank_average(expr) - 1.0, (expr.count() - 1).cast(pl.Float64))
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


def _publication(rows: pl.LazyFrame, calendar) -> pl.LazyFrame:
    """Add ``published``: the session a row became public.

    Daily-regime rows carry ``PubDate`` (a non-session date counts from the next session);
    weekly rows have none and are published ``WEEKLY_MARGIN_PUBLICATION_LAG`` sessions after
    their application date. A later publication of an application date already published
    (a correction) is not used: the first one is what was known, nightly and in a backfill.
    """
    sessions = pl.LazyFrame({"_session": list(calendar)}, schema={"_session": pl.Date})
    rows = common.add_sessions(rows, "app", WEEKLY_MARGIN_PUBLICATION_LAG, calendar, "_weekly")
    daily = (
        rows.filter(pl.col("PubDate").is_not_null())
        .sort("PubDate")
        .join_asof(sessions, left_on="PubDate", right_on="_session", strategy="forward")
        .rename({"_session": "published"})
    )
    weekly = rows.filter(pl.col("PubDate").is_null()).with_columns(
        pl.col("_weekly").alias("published")
    )
    first = pl.col("published") == pl.col("published").min().over("code", "app")
    return (
        pl.concat([daily, weekly], how="diagonal")
        .filter(pl.col("published").is_not_null() & first)
        .sort("code", "app", maintain_order=True)
        .unique(subset=["code", "app"], keep="first", maintain_order=True)
        .drop("_weekly", "PubDate")
    )


def _zscore_with(x: pl.Expr, prefix: str, n_before: int) -> pl.Expr:
    """Z-score of ``x`` against ``x`` and the ``n_before`` values whose mean and sample
    variance are ``{prefix}_mean`` / ``{prefix}_var`` (combined exactly, Chan et al.)."""
    mean_a, var_a = pl.col(f"{prefix}_mean"), pl.col(f"{prefix}_var")
    n = n_before + 1
    delta = x - mean_a
    mean = mean_a + delta / n
    var = (var_a * (n_before - 1) + delta * delta * n_before / n) / (n - 1)
    return common.safe_div(x - mean, var.sqrt())


# (series, weeks of its z-scores)
_Z_SERIES = (("long_b", (26, 52)), ("short_b", (26, 52)), ("ratio", (52,)))


def _previous_weeks(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Attach to each row the last row of the previous week that has one (``p_*``): its
    balances, the balances three such weeks before it (4-week changes), and the mean and
    variance of each series over the weeks before the row's own (z-scores).

    A week is the calendar week of the application date. In the weekly regime each week has
    one row, so "previous week" is the previous row; in the daily regime it is the previous
    week's last session, so every statistic keeps its weekly meaning at daily frequency.
    """
    week = pl.col("app").dt.truncate("1w")
    rows = rows.with_columns(week.alias("week"))
    ends = rows.filter(pl.col("app") == pl.col("app").max().over("code", "week"))

    def over_weeks(expr: pl.Expr) -> pl.Expr:
        return expr.over("code", order_by="app")

    stats = []
    for name, windows in _Z_SERIES:
        for weeks in windows:
            col = pl.col(name)
            stats += [
                over_weeks(col.rolling_mean(weeks - 1, min_samples=weeks - 1)).alias(
                    f"p_{name}_{weeks}_mean"
                ),
                over_weeks(col.rolling_var(weeks - 1, min_samples=weeks - 1)).alias(
                    f"p_{name}_{weeks}_var"
                ),
            ]
    previous = ends.select(
        "code",
        pl.col("week").alias("p_week"),
        pl.col("long_b").alias("p_long_b"),
        pl.col("short_b").alias("p_short_b"),
        over_weeks(pl.col("long_b").shift(3)).alias("p4_long_b"),
        over_weeks(pl.col("short_b").shift(3)).alias("p4_short_b"),
        *stats,
    )
    return (
        rows.with_columns((pl.col("week") - pl.duration(days=1)).alias("_before"))
        .sort("_before")
        .join_asof(
            previous.sort("p_week"),
            left_on="_before",
            right_on="p_week",
            by="code",
            strategy="backward",
            check_sortedness=False,
        )
        .drop("_before", "p_week", "week")
    )


def _weekly_rows(inputs: FeatureInputs, panel: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (code, application date) with its week-over-week statistics."""
    raw = raw_source(
        inputs,
        "margin_weekly",
        "raw_weekly_margin_interest",
        ["Date", "PubDate", "Code", "ShrtVol", "LongVol", "ShrtNegVol", "LongNegVol", "IssType"],
    ).rename({"Date": "app", "Code": "code"})
    weekly = _publication(
        raw.filter(pl.col("app").is_not_null() & pl.col("code").is_not_null()), inputs.calendar
    )
    weekly = asof_bar(weekly, "app", panel)

    to_base = pl.col("log_split").fill_null(0.0).exp()
    weekly = weekly.with_columns(
        (pl.col("LongVol") * to_base).alias("long_b"),
        (pl.col("ShrtVol") * to_base).alias("short_b"),
    ).with_columns(common.safe_div(pl.col("short_b"), pl.col("long_b")).alias("ratio"))
    weekly = _previous_weeks(weekly)

    long_b, short_b, adv = pl.col("long_b"), pl.col("short_b"), pl.col("adv_b")

    def change(name: str, reference: str) -> pl.Expr:
        return common.safe_div(pl.col(name) - pl.col(reference), adv)

    def log_change(name: str) -> pl.Expr:
        col, previous = pl.col(name), pl.col(f"p_{name}")
        return pl.when((col > 0) & (previous > 0)).then((col / previous).log())

    def zscore(name: str, weeks: int) -> pl.Expr:
        return _zscore_with(pl.col(name), f"p_{name}_{weeks}", weeks - 1)

    rows = weekly.select(
        "code",
        "app",
        "published",
        common.safe_div(long_b, adv).alias("mrgw_long_to_adv"),
        common.safe_div(short_b, adv).alias("mrgw_short_to_adv"),
        common.safe_div(long_b - short_b, adv).alias("mrgw_net_to_adv"),
        pl.col("ratio").alias("mrgw_short_long_ratio"),
        change("long_b", "p_long_b").alias("mrgw_long_chg_1w"),
        change("short_b", "p_short_b").alias("mrgw_short_chg_1w"),
        change("long_b", "p4_long_b").alias("mrgw_long_chg_4w"),
        change("short_b", "p4_short_b").alias("mrgw_short_chg_4w"),
        log_change("long_b").alias("mrgw_long_logchg_1w"),
        log_change("short_b").alias("mrgw_short_logchg_1w"),
        zscore("long_b", 26).alias("mrgw_long_z26"),
        zscore("short_b", 26).alias("mrgw_short_z26"),
        zscore("long_b", 52).alias("mrgw_long_z52"),
        zscore("short_b", 52).alias("mrgw_short_z52"),
        zscore("ratio", 52).alias("mrgw_ratio_z52"),
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
        "Margin balances as of their publication (PubDate in the daily regime, 2 sessions "
        "after the weekly application date before it): balances in days of volume, weekly/"
        "4-week changes, 26/52-week z-scores, negotiable shares, issue type, staleness and "
        "cross-sectional ranks, with the same weekly definitions in both regimes."
    ),
)
