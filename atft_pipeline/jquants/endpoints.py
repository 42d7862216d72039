"""The J-Quants API V2 endpoint registry.

One entry per endpoint: V2 path, parameters, response fields with their kinds, minimum plan,
rate-limit bucket and the date semantics of ``date=``. The client (typing of responses), the
stand-in server (parameter validation, wire encoding) and the sandbox market (which columns it
must produce) all read this one table, so a field name lives in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import polars as pl


class Plan(StrEnum):
    FREE = "free"
    LIGHT = "light"
    STANDARD = "standard"
    PREMIUM = "premium"

    @property
    def rank(self) -> int:
        return _PLAN_ORDER.index(self)

    def covers(self, required: Plan) -> bool:
        return self.rank >= required.rank

    @property
    def requests_per_minute(self) -> int:
        return _PLAN_RATE[self]

    @property
    def history_years(self) -> float:
        """How far back the plan reaches (Free is a delayed 2-year window, see ``plan_window``)."""
        return _PLAN_YEARS[self]


_PLAN_ORDER = [Plan.FREE, Plan.LIGHT, Plan.STANDARD, Plan.PREMIUM]
_PLAN_RATE = {Plan.FREE: 5, Plan.LIGHT: 60, Plan.STANDARD: 120, Plan.PREMIUM: 500}
_PLAN_YEARS = {Plan.FREE: 2.0, Plan.LIGHT: 5.0, Plan.STANDARD: 10.0, Plan.PREMIUM: 20.0}
# fins/summary and fins/details are capped at 60 requests/minute on every plan.
FINS_REQUESTS_PER_MINUTE = 60


class Kind(StrEnum):
    """How a field arrives on the wire and which Polars dtype it is parsed to."""

    STR = "str"  # kept verbatim (codes stay strings: "72030", "0050")
    DATE = "date"  # "YYYY-MM-DD" (or "" / null) -> pl.Date
    NUM = "num"  # number, numeric string, null, "", "-", "*" -> pl.Float64
    FLAG = "flag"  # "0" / "1" -> pl.Boolean
    BOOL = "bool"  # "true" / "false" / "" -> pl.Boolean


DTYPES: dict[Kind, pl.DataType] = {
    Kind.STR: pl.String(),
    Kind.DATE: pl.Date(),
    Kind.NUM: pl.Float64(),
    Kind.FLAG: pl.Boolean(),
    Kind.BOOL: pl.Boolean(),
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    plan: Plan = Plan.FREE  # bars/daily's morning/afternoon fields are Premium-only


@dataclass(frozen=True)
class Endpoint:
    """One V2 endpoint.

    ``required_any``: at least one of these query parameters must be present (400 otherwise).
    ``date_field``: the response field that ``date=`` / ``from``/``to`` select on.
    ``numbers_as_strings``: the API sends every numeric as a string (fins/summary).
    ``nested``: a nested object field whose string flags are flattened to ``<name>.<flag>``.
    """

    path: str
    fields: tuple[Field, ...]
    plan: Plan
    required_any: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    date_field: str | None = "Date"
    key: tuple[str, ...] = ()
    numbers_as_strings: bool = False
    rate_bucket: str = "default"
    nested: tuple[str, tuple[str, ...]] | None = None
    description: str = ""

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.required_any + self.optional + ("pagination_key",)))

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def fields_for(self, plan: Plan) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if plan.covers(f.plan))

    def schema(self, plan: Plan = Plan.PREMIUM) -> pl.Schema:
        """The typed Polars schema of a parsed response for ``plan``."""
        return pl.Schema({f.name: DTYPES[f.kind] for f in self.fields_for(plan)})

    @property
    def file_stem(self) -> str:
        """Replay-directory file stem: ``equities/bars/daily`` -> ``equities__bars__daily``."""
        return self.path.replace("/", "__")


def _fields(kind: Kind, *names: str, plan: Plan = Plan.FREE) -> tuple[Field, ...]:
    return tuple(Field(n, kind, plan) for n in names)


S, D, N, F, B = Kind.STR, Kind.DATE, Kind.NUM, Kind.FLAG, Kind.BOOL

_BAR_SESSION = ("O", "H", "L", "C", "UL", "LL", "Vo", "Va", "AdjO", "AdjH", "AdjL", "AdjC", "AdjVo")


def _session_fields(prefix: str) -> tuple[Field, ...]:
    return tuple(
        Field(prefix + n, F if n in ("UL", "LL") else N, Plan.PREMIUM) for n in _BAR_SESSION
    )


EQUITIES_BARS_DAILY = Endpoint(
    path="equities/bars/daily",
    fields=_fields(D, "Date")
    + _fields(S, "Code")
    + _fields(N, "O", "H", "L", "C")
    + _fields(F, "UL", "LL")
    + _fields(N, "Vo", "Va", "AdjFactor", "AdjO", "AdjH", "AdjL", "AdjC", "AdjVo")
    + _session_fields("M")
    + _session_fields("A"),
    plan=Plan.FREE,
    required_any=("code", "date"),
    optional=("from", "to"),
    key=("Date", "Code"),
    description="Daily OHLCV bars per stock, raw and split-adjusted (AdjFactor on the ex-date row).",
)

EQUITIES_MASTER = Endpoint(
    path="equities/master",
    fields=_fields(D, "Date")
    + _fields(
        S, "Code", "CoName", "CoNameEn", "S17", "S17Nm", "S33", "S33Nm", "ScaleCat", "Mkt",
        "MktNm", "Mrgn", "MrgnNm", "ProdCat",
    ),
    plan=Plan.FREE,
    optional=("code", "date"),
    key=("Date", "Code"),
    description="Listed-issue master; date=D is the snapshot in force on D.",
)

INDICES_TOPIX = Endpoint(
    path="indices/bars/daily/topix",
    fields=_fields(D, "Date") + _fields(N, "O", "H", "L", "C"),
    plan=Plan.LIGHT,
    optional=("from", "to"),
    key=("Date",),
    description="TOPIX daily OHLC.",
)

MARKETS_CALENDAR = Endpoint(
    path="markets/calendar",
    fields=_fields(D, "Date") + _fields(S, "HolDiv"),
    plan=Plan.FREE,
    optional=("hol_div", "from", "to"),
    key=("Date",),
    description="Trading calendar: HolDiv 0 closed, 1 open, 2 half day, 3 OSE holiday trading.",
)

_SUMMARY_NUMERIC = (
    "Sales", "OP", "OdP", "NP", "EPS", "DEPS", "TA", "Eq", "EqAR", "BPS", "CFO", "CFI", "CFF",
    "CashEq", "Div1Q", "Div2Q", "Div3Q", "DivFY", "DivAnn", "DivUnit", "DivTotalAnn",
    "PayoutRatioAnn", "FDiv1Q", "FDiv2Q", "FDiv3Q", "FDivFY", "FDivAnn", "FDivUnit",
    "FDivTotalAnn", "FPayoutRatioAnn", "NxFDiv1Q", "NxFDiv2Q", "NxFDiv3Q", "NxFDivFY",
    "NxFDivAnn", "NxFDivUnit", "NxFPayoutRatioAnn", "FSales2Q", "FOP2Q", "FOdP2Q", "FNP2Q",
    "FEPS2Q", "NxFSales2Q", "NxFOP2Q", "NxFOdP2Q", "NxFNp2Q", "NxFEPS2Q", "FSales", "FOP",
    "FOdP", "FNP", "FEPS", "NxFSales", "NxFOP", "NxFOdP", "NxFNp", "NxFEPS",
)
_SUMMARY_FLAGS = ("MatChgSub", "SigChgInC", "ChgByASRev", "ChgNoASRev", "ChgAcEst", "RetroRst")
_SUMMARY_SHARES_AND_NC = (
    "ShOutFY", "TrShFY", "AvgSh", "NCSales", "NCOP", "NCOdP", "NCNP", "NCEPS", "NCTA", "NCEq",
    "NCEqAR", "NCBPS", "FNCSales2Q", "FNCOP2Q", "FNCOdP2Q", "FNCNP2Q", "FNCEPS2Q",
    "NxFNCSales2Q", "NxFNCOP2Q", "NxFNCOdP2Q", "NxFNCNP2Q", "NxFNCEPS2Q", "FNCSales", "FNCOP",
    "FNCOdP", "FNCNP", "FNCEPS", "NxFNCSales", "NxFNCOP", "NxFNCOdP", "NxFNCNP", "NxFNCEPS",
)
# Added in the 2026-09 spec: shareholders' equity and ROE, consolidated and non-consolidated.
_SUMMARY_EQUITY = ("ShEq", "NCShEq", "ROE", "NCROE")

FINS_SUMMARY = Endpoint(
    path="fins/summary",
    fields=_fields(D, "DiscDate")
    + _fields(S, "DiscTime", "Code", "DiscNo", "DocType", "CurPerType")
    + _fields(D, "CurPerSt", "CurPerEn", "CurFYSt", "CurFYEn", "NxtFYSt", "NxtFYEn")
    + _fields(N, *_SUMMARY_NUMERIC)
    + _fields(B, *_SUMMARY_FLAGS)
    + _fields(N, *_SUMMARY_SHARES_AND_NC)
    + _fields(N, *_SUMMARY_EQUITY),
    plan=Plan.FREE,
    required_any=("code", "date"),
    optional=("cursor",),
    date_field="DiscDate",
    key=("DiscNo",),
    numbers_as_strings=True,
    rate_bucket="fins",
    description="Earnings summaries (111 fields, every value a string on the wire), by DiscDate.",
)

EARNINGS_CALENDAR = Endpoint(
    path="equities/earnings-calendar",
    fields=_fields(D, "Date") + _fields(S, "Code", "CoName", "FY", "SectorNm", "FQ", "Section"),
    plan=Plan.FREE,
    key=("Code",),
    description="Scheduled earnings announcements of the next business day (March/Sept FYE).",
)

_MARGIN_SIDES = ("Shrt", "Long", "ShrtNeg", "LongNeg", "ShrtStd", "LongStd")

MARGIN_INTEREST = Endpoint(
    path="markets/margin-interest",
    fields=_fields(D, "PubDate", "Date")
    + _fields(S, "Code", "IssType")
    + _fields(N, *(side + "Vol" for side in _MARGIN_SIDES))
    + _fields(N, *(side + "Val" for side in _MARGIN_SIDES)),
    plan=Plan.STANDARD,
    required_any=("code", "date", "published_date"),
    optional=("from", "to"),
    key=("Date", "Code"),
    description=(
        "Margin balances by application date: weekly until the daily regime (applications from "
        "2026-09-25 on, published the next business day with PubDate and *Val amounts)."
    ),
)

_PUB_REASONS = (
    "Restricted", "DailyPublication", "Monitoring", "RestrictedByJSF", "PrecautionByJSF",
    "UnclearOrSecOnAlert",
)
_ALERT_AMOUNTS = tuple(
    f"{side}{kind}{suffix}"
    for side in ("Shrt", "Long")
    for kind in ("Neg", "Std")
    for suffix in ("Out", "OutChg")
)

MARGIN_ALERT = Endpoint(
    path="markets/margin-alert",
    fields=_fields(D, "PubDate")
    + _fields(S, "Code")
    + _fields(D, "AppDate")
    + tuple(Field(f"PubReason.{r}", F) for r in _PUB_REASONS)
    + _fields(N, "ShrtOut", "ShrtOutChg", "ShrtOutRatio", "LongOut", "LongOutChg", "LongOutRatio")
    + _fields(N, "SLRatio")
    + _fields(N, *_ALERT_AMOUNTS)
    + _fields(S, "TSEMrgnRegCls"),
    plan=Plan.STANDARD,
    required_any=("code", "date"),
    optional=("from", "to"),
    date_field="PubDate",
    key=("PubDate", "Code", "AppDate"),
    nested=("PubReason", _PUB_REASONS),
    description="Daily margin balances of issues under alert, by publication date.",
)

SHORT_RATIO = Endpoint(
    path="markets/short-ratio",
    fields=_fields(D, "Date")
    + _fields(S, "S33")
    + _fields(N, "SellExShortVa", "ShrtWithResVa", "ShrtNoResVa"),
    plan=Plan.STANDARD,
    required_any=("s33", "date"),
    optional=("from", "to"),
    key=("Date", "S33"),
    description="Short-selling turnover by 33-sector (sector-keyed, not stock-keyed).",
)

SHORT_SALE_REPORT = Endpoint(
    path="markets/short-sale-report",
    fields=_fields(D, "DiscDate", "CalcDate")
    + _fields(S, "Code", "SSName", "SSAddr", "DICName", "DICAddr", "FundName")
    + _fields(N, "ShrtPosToSO", "ShrtPosShares", "ShrtPosUnits")
    + _fields(D, "PrevRptDate")
    + _fields(N, "PrevRptRatio")
    + _fields(S, "Notes"),
    plan=Plan.STANDARD,
    required_any=("code", "disc_date", "calc_date"),
    optional=("disc_date_from", "disc_date_to"),
    date_field="DiscDate",
    key=("DiscDate", "CalcDate", "Code", "SSName", "FundName"),
    description="Large short positions (>= 0.5% of shares outstanding), by disclosure date.",
)

_INVESTORS = (
    "Prop", "Brk", "Tot", "Ind", "Frgn", "SecCo", "InvTr", "BusCo", "OthCo", "InsCo", "Bank",
    "TrstBnk", "OthFin",
)
INVESTOR_TYPES = Endpoint(
    path="equities/investor-types",
    fields=_fields(D, "PubDate", "StDate", "EnDate")
    + _fields(S, "Section")
    + tuple(Field(f"{i}{s}", N) for i in _INVESTORS for s in ("Sell", "Buy", "Tot", "Bal")),
    plan=Plan.LIGHT,
    optional=("section", "from", "to"),
    date_field="PubDate",
    key=("PubDate", "Section", "StDate", "EnDate"),
    description="Weekly trading by investor type and market section (thousand yen), by PubDate.",
)

INDEX_OPTIONS_225 = Endpoint(
    path="derivatives/bars/daily/options/225",
    fields=_fields(D, "Date")
    + _fields(S, "Code")
    + _fields(N, "O", "H", "L", "C", "EO", "EH", "EL", "EC", "AO", "AH", "AL", "AC", "Vo", "OI",
              "Va")
    + _fields(S, "CM")
    + _fields(N, "Strike", "VoOA")
    + _fields(S, "EmMrgnTrgDiv", "PCDiv")
    + _fields(D, "LTD", "SQD")
    + _fields(N, "Settle", "Theo", "BaseVol", "UnderPx", "IV", "IR"),
    plan=Plan.STANDARD,
    required_any=("date",),
    key=("Date", "Code", "EmMrgnTrgDiv"),
    description="Nikkei 225 index options, every series of the day.",
)

ENDPOINTS: dict[str, Endpoint] = {
    e.path: e
    for e in (
        EQUITIES_MASTER,
        EQUITIES_BARS_DAILY,
        INDICES_TOPIX,
        MARKETS_CALENDAR,
        FINS_SUMMARY,
        EARNINGS_CALENDAR,
        MARGIN_INTEREST,
        MARGIN_ALERT,
        SHORT_RATIO,
        SHORT_SALE_REPORT,
        INVESTOR_TYPES,
        INDEX_OPTIONS_225,
    )
}


def get_endpoint(path: str) -> Endpoint:
    """Look an endpoint up by its V2 path (leading/trailing slashes and ``v2/`` ignored)."""
    key = path.strip("/").removeprefix("v2/")
    try:
        return ENDPOINTS[key]
    except KeyError:
        raise KeyError(f"unknown J-Quants V2 endpoint {path!r}; known: {sorted(ENDPOINTS)}") from None
