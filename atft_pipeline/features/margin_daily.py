"""Daily margin-alert features (``raw_daily_margin_interest``, by ``PubDate``).

Only issues under a margin alert (daily publication, restriction, JSF precaution, ...) appear
in this source, so its meaning at t is:

- ``mrgd_alert`` = 1 when the stock has a regular row published on session t (a correction —
  a row for an application date that was already published — does not by itself put a stock
  under alert), else 0. Flags (alert history, publication reasons, regulation tier) are 0/1
  or counts and are 0 for a stock not under alert: that *is* their value.
- Quantities (balances, changes, ratios) exist only under alert; they come from the row
  published at t (the latest application date) and are null otherwise — an unpublished
  balance is unknown, not zero.

A ``PubDate`` that is not a session counts from the next session (it is known by then).
Balances are raw share counts; they are compared with the 20-session average raw volume in
split-consistent base units (see ``margin_weekly.volume_panel``).
"""

from __future__ import annotations

import polars as pl

from atft_pipeline.features import common
from atft_pipeline.features.catalog import FeatureFamily, FeatureInputs, FeatureSpec
from atft_pipeline.features.margin_weekly import volume_panel
from atft_pipeline.features.common import log_split_at, raw_source
from atft_pipeline.features.market import SESSION, session_index

ALERT_WINDOW = 20
SINCE_ALERT_CAP = 120  # sessions: "no alert in the last 120 sessions" is reported as 120

_REASONS = (
    ("Restricted", "mrgd_restricted", "restricted issue (TSE)"),
    ("DailyPublication", "mrgd_daily_publication", "daily-publication issue (TSE)"),
    ("Monitoring", "mrgd_monitoring", "issue under monitoring"),
    ("RestrictedByJSF", "mrgd_restricted_by_jsf", "JSF lending restriction"),
    ("PrecautionByJSF", "mrgd_precaution_by_jsf", "JSF lending precaution"),
    (
        "UnclearOrSecOnAlert",
        "mrgd_unclear_or_sec_on_alert",
        "unclear disclosure / security on alert",
    ),
)
# TSEMrgnRegCls: 003 restricted, 004-006 second- to fourth-tier restriction; 102 security
# under supervision (special alert). 001/002 (JSF measures, daily publication) repeat the
# publication reasons and 101 (restriction lifted) is "no restriction".
_REGULATION_TIER = {"003": 1.0, "004": 2.0, "005": 3.0, "006": 4.0}
_SUPERVISION = "102"
_AMOUNTS = (
    "ShrtOut",
    "ShrtOutChg",
    "ShrtOutRatio",
    "LongOut",
    "LongOutChg",
    "LongOutRatio",
    "SLRatio",
    "ShrtNegOut",
    "LongNegOut",
)


def _published_rows(inputs: FeatureInputs, levels: pl.LazyFrame) -> pl.LazyFrame:
    """Per (code, session): the regular row published that session (latest AppDate)."""
    reason_cols = [f"PubReason.{r}" for r, *_ in _REASONS]
    raw = raw_source(
        inputs,
        "margin_daily",
        "raw_daily_margin_interest",
        ["PubDate", "Code", "AppDate", *reason_cols, *_AMOUNTS, "TSEMrgnRegCls"],
    ).rename({"Code": "code"})
    sessions = pl.LazyFrame({"date": list(inputs.calendar)}, schema={"date": pl.Date})
    rows = raw.filter(
        pl.col("PubDate").is_not_null()
        & pl.col("code").is_not_null()
        & pl.col("AppDate").is_not_null()
    )
    first_publication = pl.col("PubDate").min().over("code", "AppDate")
    rows = (
        rows.filter(pl.col("PubDate") == first_publication)
        .sort("PubDate", maintain_order=True)
        .join_asof(sessions, left_on="PubDate", right_on="date", strategy="forward")
        .filter(pl.col("date").is_not_null())
        .sort("code", "date", "AppDate", "PubDate", maintain_order=True)
        .unique(subset=["code", "date"], keep="last", maintain_order=True)
    )
    return log_split_at(rows, "AppDate", levels).with_columns(pl.lit(1.0).alias("alert"))


FEATURES = (
    FeatureSpec("mrgd_alert", "1 if the stock is under daily margin publication at t, else 0"),
    FeatureSpec("mrgd_alert_new", "1 if under alert at t but not on the previous session", 1),
    FeatureSpec("mrgd_alert_days_20", "Sessions under alert among the last 20", ALERT_WINDOW),
    FeatureSpec(
        "mrgd_days_since_alert",
        f"Sessions since the last alert session (0 under alert, capped at {SINCE_ALERT_CAP})",
        SINCE_ALERT_CAP,
    ),
    FeatureSpec(
        "mrgd_short_out_to_adv", "Short margin outstanding / 20-session average volume", 20
    ),
    FeatureSpec("mrgd_long_out_to_adv", "Long margin outstanding / 20-session average volume", 20),
    FeatureSpec(
        "mrgd_short_chg_to_adv", "Daily change of short outstanding / 20-session average volume", 20
    ),
    FeatureSpec(
        "mrgd_long_chg_to_adv", "Daily change of long outstanding / 20-session average volume", 20
    ),
    FeatureSpec("mrgd_sl_ratio", "Short/long margin ratio as published (SLRatio)"),
    FeatureSpec(
        "mrgd_short_out_ratio", "Short outstanding / listed shares as published (ShrtOutRatio)"
    ),
    FeatureSpec(
        "mrgd_long_out_ratio", "Long outstanding / listed shares as published (LongOutRatio)"
    ),
    FeatureSpec("mrgd_short_neg_share", "Negotiable share of the short outstanding"),
    FeatureSpec("mrgd_long_neg_share", "Negotiable share of the long outstanding"),
    *[FeatureSpec(name, f"1 if published at t for: {what}, else 0") for _, name, what in _REASONS],
    FeatureSpec(
        "mrgd_reg_tier", "TSE restriction tier at t (1 restricted .. 4 fourth tier; 0 none)"
    ),
    FeatureSpec(
        "mrgd_reg_supervision", "1 if TSE classes the issue as under supervision (102), else 0"
    ),
)
_QUANTITIES = (
    "mrgd_short_out_to_adv",
    "mrgd_long_out_to_adv",
    "mrgd_short_chg_to_adv",
    "mrgd_long_chg_to_adv",
    "mrgd_sl_ratio",
    "mrgd_short_out_ratio",
    "mrgd_long_out_ratio",
    "mrgd_short_neg_share",
    "mrgd_long_neg_share",
)


def compute(inputs: FeatureInputs) -> pl.LazyFrame:
    panel = volume_panel(inputs, "margin_daily")
    rows = _published_rows(inputs, panel.select("date", "code", "log_split"))
    frame = (
        panel.drop("log_split")
        .join(rows, on=["code", "date"], how="left")
        .join(session_index(inputs, "margin_daily"), on="date", how="left")
    )
    alert = pl.col("alert").fill_null(0.0)
    # Counts run over the window's sessions, not the stock's bar rows: a day missing from
    # the feed still counts, so a value needs no history beyond the lookback of sessions.
    session = pl.col(SESSION)
    previous = common.by_code(pl.when(session.shift(1) == session - 1).then(alert.shift(1)))
    last_alert = common.by_code(pl.when(alert > 0).then(session).forward_fill())
    since = session - last_alert
    to_base = pl.col("log_split").exp()  # AppDate share units -> base units

    def per_adv(col: str) -> pl.Expr:
        return common.safe_div(pl.col(col) * to_base, pl.col("adv_b"))

    frame = frame.with_columns(
        alert.alias("mrgd_alert"),
        # no bar row on the previous session: not under alert there as far as the panel knows
        pl.when(session > 0)
        .then(alert * (1.0 - previous.fill_null(0.0)))
        .alias("mrgd_alert_new"),
        pl.when(session >= ALERT_WINDOW - 1)
        .then(common.by_code(alert.rolling_sum_by(SESSION, f"{ALERT_WINDOW}i")))
        .alias("mrgd_alert_days_20"),
        # Within the cap the distance is known; beyond it (or with no alert seen) it is
        # "at least the cap" once the window holds that many sessions, unknown before.
        pl.when(since <= SINCE_ALERT_CAP)
        .then(since)
        .when(session >= SINCE_ALERT_CAP)
        .then(SINCE_ALERT_CAP)
        .cast(pl.Float64)
        .alias("mrgd_days_since_alert"),
        per_adv("ShrtOut").alias("mrgd_short_out_to_adv"),
        per_adv("LongOut").alias("mrgd_long_out_to_adv"),
        per_adv("ShrtOutChg").alias("mrgd_short_chg_to_adv"),
        per_adv("LongOutChg").alias("mrgd_long_chg_to_adv"),
        pl.col("SLRatio").alias("mrgd_sl_ratio"),
        pl.col("ShrtOutRatio").alias("mrgd_short_out_ratio"),
        pl.col("LongOutRatio").alias("mrgd_long_out_ratio"),
        common.safe_div(pl.col("ShrtNegOut"), pl.col("ShrtOut")).alias("mrgd_short_neg_share"),
        common.safe_div(pl.col("LongNegOut"), pl.col("LongOut")).alias("mrgd_long_neg_share"),
        *[
            pl.col(f"PubReason.{reason}").fill_null(False).cast(pl.Float64).alias(name)
            for reason, name, _ in _REASONS
        ],
        pl.col("TSEMrgnRegCls")
        .replace_strict(_REGULATION_TIER, default=0.0, return_dtype=pl.Float64)
        .fill_null(0.0)
        .alias("mrgd_reg_tier"),
        (pl.col("TSEMrgnRegCls") == _SUPERVISION)
        .fill_null(False)
        .cast(pl.Float64)
        .alias("mrgd_reg_supervision"),
    ).with_columns(
        # Quantities of a stock not under alert are unknown (the row is absent anyway; this
        # keeps the contract explicit).
        *[pl.when(pl.col("mrgd_alert") > 0).then(pl.col(c)).alias(c) for c in _QUANTITIES]
    )
    return common.emit(frame, FAMILY, inputs.dates)


FAMILY = FeatureFamily(
    name="margin_daily",
    sources=("raw_daily_quotes", "raw_daily_margin_interest"),
    lookback=SINCE_ALERT_CAP,
    features=FEATURES,
    compute=compute,
    description=(
        "Daily margin-alert publications by PubDate: alert state and history, publication "
        "reasons and restriction tier (0/1, 0 when not under alert), and outstanding "
        "balances, changes and ratios of alerted issues (null when not under alert)."
    ),
)
