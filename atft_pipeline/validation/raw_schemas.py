"""pandera schemas for every raw asset, built from the endpoint registry.

Column names and dtypes come from ``Endpoint.schema(plan)`` (the registry is the one field
list); this module adds what the registry cannot say: which identifiers are never null, the
unique key, the domain rules of each source, and how every row's date relates to the
partition date. Severity follows one principle: what makes the partition unusable or wrong
(types, keys, identifiers, bar consistency, rows from another date) blocks; arithmetic
identities and code tables of the source only warn.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import pandera.polars as pa
import polars as pl

from atft_pipeline.jquants.endpoints import ENDPOINTS, Endpoint, Plan
from atft_pipeline.jquants.reference import (
    INVESTOR_SECTIONS,
    MARKET_SEGMENTS,
    SECTOR17,
    SECTOR33,
    SECTOR33_OTHER,
)
from atft_pipeline.jquants.sources import RAW_SOURCES
from atft_pipeline.validation.rules import (
    STOCK_CODE_PATTERN,
    Rule,
    Severity,
    equals_within,
    finite,
    in_set,
    matches,
    non_negative,
    not_after,
    not_blank,
    ohlc,
    ohlc_all_or_none,
    positive,
    within,
)

CALENDAR_ASSET = "raw_trading_calendar"

# Checks pandera itself performs (names as reported in ``Failure.check``); all blocking.
DTYPE = "dtype"
COLUMN_PRESENT = "column_present"
NO_EXTRA_COLUMNS = "no_extra_columns"
UNIQUE_KEY = "unique_key"
NOT_NULL = "not_null"
RULE_ERROR = "rule_error"  # a rule could not be evaluated at all
# Whole-partition checks (one trading day at a time): a day the source always covers must
# hold rows, and a column that prices every row cannot be null on all of them.
ROWS_PRESENT = "rows_present"
NOT_ALL_NULL = "not_all_null"
STRUCTURAL_CHECKS = frozenset(
    {DTYPE, COLUMN_PRESENT, NO_EXTRA_COLUMNS, UNIQUE_KEY, NOT_NULL, RULE_ERROR, ROWS_PRESENT, NOT_ALL_NULL}
)

E, W = Severity.ERROR, Severity.WARN
# Identity tolerance: published figures are whole units (shares, thousand yen), so a sum of
# rounded parts may differ from the rounded total by one unit.
ROUNDING_TOLERANCE = 1.0


class PartitionRule(StrEnum):
    EQUAL = "partition_date"  # every row's date field is the date the partition holds
    # listed info: a snapshot row carries the date it took effect, on or before the partition
    ON_OR_BEFORE = "snapshot_not_after_partition"


@dataclass(frozen=True)
class RawAssetSpec:
    asset: str
    endpoint: Endpoint
    required: tuple[str, ...]  # identifiers that are never null
    rules: tuple[Rule, ...]
    partition: PartitionRule | None = PartitionRule.EQUAL  # None: an unpartitioned asset
    # Sources with rows on every trading day: an empty day is a hole (not yet published, or
    # lost), never "no events"; it blocks so the day is fetched again instead of kept empty.
    rows_every_day: bool = False
    # Columns that must have at least one value in a non-empty partition.
    not_all_null: tuple[str, ...] = ()

    def partition_rule(self, day: dt.date) -> Rule:
        assert self.partition is not None and self.endpoint.date_field is not None
        # The source defines which row date a partition holds (weekly margin: publication
        # partition, application-date rows 2 sessions earlier).
        source = RAW_SOURCES.get(self.asset)
        row_date = source.row_date(day) if source is not None else day
        field, bound = pl.col(self.endpoint.date_field), pl.lit(row_date, dtype=pl.Date)
        passes = field == bound if self.partition is PartitionRule.EQUAL else field <= bound
        if source is not None and source.published_query is not None:
            # Rows found by publication date carry it (daily margin interest).
            published = pl.col("PubDate")
            passes = pl.when(published.is_null()).then(passes).otherwise(published == day)
        return Rule(self.endpoint.date_field, self.partition.value, passes, Severity.ERROR)

    def id_columns(self, partitioned: bool) -> tuple[str, ...]:
        """Columns that identify a row in failure examples (the partition date is implied)."""
        key = self.endpoint.key
        if partitioned and self.partition is not None:
            key = tuple(c for c in key if c != self.endpoint.date_field) or key
        has_code = "Code" in self.endpoint.field_names and "Code" not in key
        return key + (("Code",) if has_code else ())

    def reads(self, column: str, check: str) -> tuple[str, ...]:
        """The columns the check ``check`` on ``column`` reads (shown in failure examples)."""
        for rule in self.rules:
            if rule.column == column and rule.name == check:
                return rule.reads
        return (column,)

    def severities(self) -> dict[str, Severity]:
        """Severity of every check this asset can report, by check name."""
        table = dict.fromkeys(STRUCTURAL_CHECKS, Severity.ERROR)
        table["finite"] = table["not_blank"] = Severity.ERROR
        if self.partition is not None:
            table[self.partition.value] = Severity.ERROR
        for rule in self.rules:
            if table.setdefault(rule.name, rule.severity) != rule.severity:
                raise ValueError(f"{self.asset}: check {rule.name!r} declared with two severities")
        return table


def _stock_code() -> Rule:
    return matches("Code", STOCK_CODE_PATTERN, "code_format", E)


_S33_CODES = (*SECTOR33, SECTOR33_OTHER)
# non-sector issues (S33 "9999") are S17 "99"
_S17_OF_S33 = {s33: s17 for s33, (_, _, s17) in SECTOR33.items()} | {SECTOR33_OTHER: "99"}


def _bars_rules() -> list[Rule]:
    rules = [_stock_code()]
    rules += positive(["AdjFactor"], "adj_factor_positive", E)
    for session in ("", "M", "A"):  # whole day, morning (Premium), afternoon (Premium)
        for adj in ("", "Adj"):
            o, h, low, c = (f"{session}{adj}{x}" for x in "OHLC")
            rules += ohlc(o, h, low, c)
            rules += positive([o, h, low, c], "price_positive", E)
            rules.append(ohlc_all_or_none(o, h, low, c))
        rules += non_negative(f"{session}{n}" for n in ("Vo", "Va", "AdjVo"))
    for adj in ("", "Adj"):  # the whole day spans both sessions
        h, low = f"{adj}H", f"{adj}L"
        session_high = pl.max_horizontal(f"M{adj}H", f"A{adj}H")
        session_low = pl.min_horizontal(f"M{adj}L", f"A{adj}L")
        rules.append(not_after(low, session_low, "low_le_session_lows", W))
        rules.append(Rule(h, "high_ge_session_highs", pl.col(h) >= session_high, W))
    return rules


def _listed_info_rules() -> list[Rule]:
    return [
        _stock_code(),
        in_set("S33", _S33_CODES, "sector33_known", W),
        in_set("S17", SECTOR17, "sector17_known", W),
        Rule(
            "S17",
            "sector17_matches_sector33",
            pl.col("S17") == pl.col("S33").replace_strict(_S17_OF_S33, default=None),
            W,
        ),
        in_set("Mkt", MARKET_SEGMENTS, "market_known", W),
        in_set("Mrgn", ("1", "2", "3"), "margin_code_known", W),
    ]


def _topix_rules() -> list[Rule]:
    return ohlc("O", "H", "L", "C") + positive(["O", "H", "L", "C"], "price_positive", E)


def _statements_rules() -> list[Rule]:
    periods = (("CurPerSt", "CurPerEn"), ("CurFYSt", "CurFYEn"), ("NxtFYSt", "NxtFYEn"))
    return (
        [_stock_code()]
        + [not_after(start, end, "period_start_le_end", W) for start, end in periods]
        + non_negative(["ShOutFY", "TrShFY", "AvgSh"])
    )


def _neg_plus_std(total: str, negotiable: str, standardized: str) -> Rule:
    return equals_within(
        total,
        "negotiable_plus_standard_eq_total",
        pl.col(negotiable) + pl.col(standardized),
        ROUNDING_TOLERANCE,
    )


def _weekly_margin_rules() -> list[Rule]:
    volumes = [f"{side}{kind}Vol" for side in ("Shrt", "Long") for kind in ("", "Neg", "Std")]
    return (
        [_stock_code()]
        + non_negative(volumes)
        + [_neg_plus_std(f"{s}Vol", f"{s}NegVol", f"{s}StdVol") for s in ("Shrt", "Long")]
        + [in_set("IssType", ("1", "2", "3"), "issue_type_known", W)]
    )


_MARGIN_REGULATION_CLASSES = ("001", "002", "003", "004", "005", "006", "101", "102")


def _margin_alert_rules() -> list[Rule]:
    outstanding = [f"{side}{kind}Out" for side in ("Shrt", "Long") for kind in ("", "Neg", "Std")]
    identities = [
        _neg_plus_std(f"{side}Out{chg}", f"{side}NegOut{chg}", f"{side}StdOut{chg}")
        for side in ("Shrt", "Long")
        for chg in ("", "Chg")
    ]
    return (
        [_stock_code()]
        + non_negative(outstanding + ["ShrtOutRatio", "LongOutRatio", "SLRatio"])
        + identities
        + [
            not_after("AppDate", "PubDate", "applied_not_after_published", W),
            in_set("TSEMrgnRegCls", _MARGIN_REGULATION_CLASSES, "regulation_class_known", W),
        ]
    )


def _short_ratio_rules() -> list[Rule]:
    return [in_set("S33", _S33_CODES, "sector33_known", W)] + non_negative(
        ["SellExShortVa", "ShrtWithResVa", "ShrtNoResVa"]
    )


def _short_sale_rules() -> list[Rule]:
    return [
        _stock_code(),
        # reports cover positions of 0.5% or more: a ratio, never a percentage
        within("ShrtPosToSO", 0.0, 1.0, "ratio_in_unit_interval", W, low_open=True),
        within("PrevRptRatio", 0.0, 1.0, "ratio_in_closed_unit_interval", W, low_open=False),
        not_after("CalcDate", "DiscDate", "calculated_not_after_disclosed", W),
        *non_negative(["ShrtPosShares", "ShrtPosUnits"]),
    ]


# Investor groups of equities/investor-types; "Tot" is the all-investor total.
_INVESTOR_GROUPS = tuple(
    f.name.removesuffix("Sell")
    for f in ENDPOINTS["equities/investor-types"].fields
    if f.name.endswith("Sell")
)


def _investor_rules() -> list[Rule]:
    rules = [
        in_set("Section", INVESTOR_SECTIONS, "section_known", W),
        not_after("StDate", "EnDate", "week_start_le_end", W),
        not_after("EnDate", "PubDate", "week_ended_before_publication", W),
    ]
    for g in _INVESTOR_GROUPS:
        sell, buy = pl.col(f"{g}Sell"), pl.col(f"{g}Buy")
        rules += non_negative([f"{g}Sell", f"{g}Buy", f"{g}Tot"])
        rules += [
            equals_within(f"{g}Tot", "total_eq_sell_plus_buy", sell + buy, ROUNDING_TOLERANCE),
            equals_within(f"{g}Bal", "balance_eq_buy_minus_sell", buy - sell, ROUNDING_TOLERANCE),
        ]
    for side in ("Sell", "Buy"):  # all trading = proprietary + brokerage
        rules.append(
            equals_within(
                f"Tot{side}",
                "proprietary_plus_brokerage_eq_total",
                pl.col(f"Prop{side}") + pl.col(f"Brk{side}"),
                ROUNDING_TOLERANCE,
            )
        )
    return rules


def _index_option_rules() -> list[Rule]:
    rules: list[Rule] = []
    for session in ("", "E", "A"):  # whole day, night, day session
        o, h, low, c = (f"{session}{x}" for x in "OHLC")
        rules += ohlc(o, h, low, c, zero_is_missing=True)
        rules += non_negative([o, h, low, c], E, name="price_non_negative")
    return rules + [
        *positive(["Strike"], "strike_positive", W),
        *positive(["UnderPx"], "underlying_positive", W),
        in_set("PCDiv", ("1", "2"), "put_call_known", W),
        *non_negative(["Vo", "OI", "Va", "VoOA", "Settle", "Theo", "BaseVol", "IV"]),
        not_after("LTD", "SQD", "last_trading_day_le_sq_day", W),
        not_after("Date", "LTD", "traded_not_after_last_trading_day", W),
    ]


def _calendar_rules() -> list[Rule]:
    # 0 closed, 1 open, 2 half day, 3 closed with OSE holiday trading: the partitions rely on it
    return [in_set("HolDiv", ("0", "1", "2", "3"), "holiday_division_known", E)]


def _spec(asset: str, required: Iterable[str], rules: list[Rule], **kw) -> RawAssetSpec:
    source = RAW_SOURCES[asset]
    return RawAssetSpec(asset, source.endpoint, tuple(required), tuple(rules), **kw)


RAW_ASSET_SPECS: dict[str, RawAssetSpec] = {
    s.asset: s
    for s in (
        _spec(
            "raw_daily_quotes", ("Date", "Code"), _bars_rules(),
            rows_every_day=True, not_all_null=("C", "AdjC"),
        ),
        _spec(
            "raw_listed_info", ("Date", "Code"), _listed_info_rules(),
            partition=PartitionRule.ON_OR_BEFORE, rows_every_day=True,
        ),
        _spec("raw_topix", ("Date",), _topix_rules(), rows_every_day=True, not_all_null=("C",)),
        _spec("raw_statements", ("DiscDate", "Code", "DiscNo", "DocType"), _statements_rules()),
        _spec("raw_weekly_margin_interest", ("Date", "Code"), _weekly_margin_rules()),
        _spec("raw_daily_margin_interest", ("PubDate", "Code", "AppDate"), _margin_alert_rules()),
        _spec("raw_short_selling", ("Date", "S33"), _short_ratio_rules()),
        _spec(
            "raw_short_selling_positions", ("DiscDate", "CalcDate", "Code", "SSName"),
            _short_sale_rules(),
        ),
        _spec("raw_trades_spec", ("PubDate", "Section", "StDate", "EnDate"), _investor_rules()),
        _spec("raw_index_options", ("Date", "Code"), _index_option_rules()),
        RawAssetSpec(
            CALENDAR_ASSET,
            ENDPOINTS["markets/calendar"],
            required=("Date", "HolDiv"),
            rules=tuple(_calendar_rules()),
            partition=None,
        ),
    )
}


def raw_asset_spec(asset: str) -> RawAssetSpec:
    try:
        return RAW_ASSET_SPECS[asset]
    except KeyError:
        known = sorted(RAW_ASSET_SPECS)
        raise KeyError(f"no raw schema for asset {asset!r}; known: {known}") from None


def raw_schema(
    asset: str, plan: Plan = Plan.PREMIUM, *, partition: dt.date | None = None
) -> pa.DataFrameSchema:
    """The pandera schema of one raw asset for ``plan``.

    With ``partition`` the schema also checks every row's date against the partition date;
    without it (e.g. a multi-day frame) that rule is left out. Rules on columns the plan does
    not include (bars/daily's morning/afternoon sessions below Premium) are dropped.
    """
    spec = raw_asset_spec(asset)
    if partition is not None and spec.partition is None:
        raise ValueError(f"{asset} is not partitioned; validate it with partition=None")
    expected = spec.endpoint.schema(plan)
    rules = [r for r in spec.rules if r.column in expected and all(c in expected for c in r.reads)]
    rules += [finite(name) for name, dtype in expected.items() if dtype == pl.Float64]
    rules += [not_blank(name) for name in spec.required if expected[name] == pl.String]
    if partition is not None:
        rules.append(spec.partition_rule(partition))
    columns = {
        name: pa.Column(
            dtype,
            nullable=name not in spec.required,
            checks=[r.to_check(expected) for r in rules if r.column == name],
            name=name,
        )
        for name, dtype in expected.items()
    }
    return pa.DataFrameSchema(
        columns,
        unique=list(spec.endpoint.key),
        strict=True,
        name=asset,
        metadata={"endpoint": spec.endpoint.path, "plan": plan.value},
    )


def severity(asset: str, check: str) -> Severity:
    """Whether a failed ``check`` of ``asset`` blocks the partition (ERROR) or only warns."""
    table = raw_asset_spec(asset).severities()
    try:
        return table[check]
    except KeyError:
        raise KeyError(f"{asset} has no check {check!r}; known: {sorted(table)}") from None
