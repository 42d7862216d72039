"""Raw-asset schemas: valid frames pass, planted defects fail with named asset/partition/column."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pandera.config import ValidationDepth, config_context

from atft_pipeline.calendar import calendar_frame
from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.jquants.parsing import coerce_frame, rows_to_frame
from atft_pipeline.jquants.sources import RAW_SOURCES
from atft_pipeline.validation import (
    CALENDAR_ASSET,
    RAW_ASSET_SPECS,
    Severity,
    raw_schema,
    severity,
    validate_raw,
)

DAY = dt.date(2024, 5, 7)
PREV = dt.date(2024, 5, 2)  # the trading day before DAY (Golden Week)
APPLICATION_DAY = dt.date(2024, 5, 1)  # weekly margin published on DAY was applied 2 sessions before


def _bar(code: str, o, h, low, c, vo, factor=1.0) -> dict:
    # on the newest day adjusted equals raw; AdjFactor != 1 marks an ex-date
    return {
        "Date": DAY.isoformat(), "Code": code, "O": o, "H": h, "L": low, "C": c,
        "UL": "0", "LL": "0", "Vo": vo, "Va": None if vo is None else vo * c,
        "AdjFactor": factor, "AdjO": o, "AdjH": h, "AdjL": low, "AdjC": c, "AdjVo": vo,
    }


def _with_sessions(row: dict, morning: tuple, afternoon: tuple) -> dict:
    row = dict(row)
    for prefix, (o, h, low, c, vo) in (("M", morning), ("A", afternoon)):
        row.update({f"{prefix}{k}": v for k, v in zip("OHLC", (o, h, low, c), strict=True)})
        row.update({f"{prefix}Adj{k}": v for k, v in zip("OHLC", (o, h, low, c), strict=True)})
        row.update({f"{prefix}UL": "0", f"{prefix}LL": "0", f"{prefix}Vo": vo,
                    f"{prefix}AdjVo": vo, f"{prefix}Va": vo * c})
    return row


def _investor_row(section: str, flows: dict[str, tuple[int, int]]) -> dict:
    """One investor-types row whose identities hold: Tot = Sell + Buy, Bal = Buy - Sell,
    and the all-investor group = proprietary + brokerage."""
    flows = dict(flows)
    flows["Tot"] = tuple(p + b for p, b in zip(flows["Prop"], flows["Brk"], strict=True))
    row = {"PubDate": DAY.isoformat(), "StDate": "2024-04-22", "EnDate": "2024-04-26",
           "Section": section}
    for group, (sell, buy) in flows.items():
        row.update({f"{group}Sell": sell, f"{group}Buy": buy, f"{group}Tot": sell + buy,
                    f"{group}Bal": buy - sell})
    return row


_INVESTOR_FLOWS = {
    "Prop": (1311271004, 1453326508), "Brk": (7165529005, 7030019854),
    "Ind": (1401711615, 1161801155), "Frgn": (5094891735, 5317151774), "SecCo": (80000, 90000),
    "InvTr": (200000, 180000), "BusCo": (150000, 170000), "OthCo": (3000, 2000),
    "InsCo": (40000, 30000), "Bank": (50000, 60000), "TrstBnk": (500000, 520000),
    "OthFin": (7000, 8000),
}
_SMALL_FLOWS = {g: (sell // 50, buy // 50) for g, (sell, buy) in _INVESTOR_FLOWS.items()}

# Wire rows (as the API sends them) of one valid partition per asset.
VALID_ROWS: dict[str, list[dict]] = {
    "raw_daily_quotes": [
        _with_sessions(_bar("86970", 2047.0, 2069.0, 2035.0, 2045.0, 2202500.0),
                       (2047.0, 2069.0, 2040.0, 2050.0, 1200000.0),
                       (2050.0, 2060.0, 2035.0, 2045.0, 1002500.0)),
        _bar("13010", None, None, None, None, None),  # no trade: null OHLCV
        _bar("130A0", 820.0, 845.0, 815.0, 840.0, 51200.0),  # alphanumeric code (2024-)
        _bar("72030", 1650.0, 1680.0, 1640.0, 1666.0, 3.0e7, factor=0.2),  # 1:5 split ex-date
    ],
    "raw_listed_info": [
        {"Date": DAY.isoformat(), "Code": "86970", "CoName": "日本取引所グループ",
         "CoNameEn": "Japan Exchange Group,Inc.", "S17": "16", "S17Nm": "金融（除く銀行）",
         "S33": "7200", "S33Nm": "その他金融業", "ScaleCat": "TOPIX Large70", "Mkt": "0111",
         "MktNm": "プライム", "Mrgn": "1", "MrgnNm": "信用"},
        {"Date": "2022-11-11", "Code": "13050", "CoName": "ｉＦｒｅｅＥＴＦ　ＴＯＰＩＸ",
         "S17": "99", "S33": "9999", "ScaleCat": "-", "Mkt": "0109", "Mrgn": "2"},
    ],
    "raw_topix": [{"Date": DAY.isoformat(), "O": 2740.12, "H": 2755.3, "L": 2731.0, "C": 2750.5}],
    "raw_statements": [
        {"DiscDate": DAY.isoformat(), "DiscTime": "15:00:00", "Code": "86970",
         "DiscNo": "20240507594871", "DocType": "FYFinancialStatements_Consolidated_IFRS",
         "CurPerType": "FY", "CurPerSt": "2023-04-01", "CurPerEn": "2024-03-31",
         "CurFYSt": "2023-04-01", "CurFYEn": "2024-03-31", "NxtFYSt": "2024-04-01",
         "NxtFYEn": "2025-03-31", "Sales": "152000000000", "OP": "87000000000", "OdP": "",
         "NP": "60000000000", "EPS": "114.5", "MatChgSub": "false", "SigChgInC": "",
         "ShOutFY": "528578441", "TrShFY": "1861043", "AvgSh": "526874759"},
        {"DiscDate": DAY.isoformat(), "DiscTime": "12:00:00", "Code": "130A0",
         "DiscNo": "20240507500001", "DocType": "EarnForecastRevision", "CurPerType": "FY",
         "CurPerSt": "", "CurPerEn": "", "FSales": "1200000000"},
    ],
    "raw_weekly_margin_interest": [
        # partition DAY (publication) holds the application date 2 sessions earlier
        {"Date": APPLICATION_DAY.isoformat(), "Code": "13010", "ShrtVol": 4100.0, "LongVol": 27600.0,
         "ShrtNegVol": 1300.0, "LongNegVol": 7600.0, "ShrtStdVol": 2800.0, "LongStdVol": 20000.0,
         "IssType": "2"},
    ],
    "raw_daily_margin_interest": [
        {"PubDate": DAY.isoformat(), "Code": "13260", "AppDate": "2024-05-02",
         "PubReason": {"Restricted": "0", "DailyPublication": "0", "Monitoring": "0",
                       "RestrictedByJSF": "0", "PrecautionByJSF": "1", "UnclearOrSecOnAlert": "0"},
         "ShrtOut": 11.0, "ShrtOutChg": 0.0, "ShrtOutRatio": "*", "LongOut": 676.0,
         "LongOutChg": -20.0, "LongOutRatio": "*", "SLRatio": 1.6, "ShrtNegOut": 0.0,
         "ShrtNegOutChg": 0.0, "ShrtStdOut": 11.0, "ShrtStdOutChg": 0.0, "LongNegOut": 192.0,
         "LongNegOutChg": -20.0, "LongStdOut": 484.0, "LongStdOutChg": 0.0,
         "TSEMrgnRegCls": "001"},
    ],
    "raw_short_selling": [
        {"Date": DAY.isoformat(), "S33": "0050", "SellExShortVa": 1333126400.0,
         "ShrtWithResVa": 787355200.0, "ShrtNoResVa": 149084300.0},
        {"Date": DAY.isoformat(), "S33": "1050", "SellExShortVa": 2210563700.0,
         "ShrtWithResVa": 1035128900.0, "ShrtNoResVa": 98211500.0},
    ],
    "raw_short_selling_positions": [
        {"DiscDate": DAY.isoformat(), "CalcDate": "2024-05-02", "Code": "13210",
         "SSName": "Morgan Stanley & Co. International plc", "SSAddr": "25 Cabot Square, London",
         "DICName": "", "FundName": "", "ShrtPosToSO": 0.0053, "ShrtPosShares": 1201234,
         "ShrtPosUnits": 12012, "PrevRptDate": "2024-04-20", "PrevRptRatio": 0.0049, "Notes": ""},
    ],
    "raw_trades_spec": [
        _investor_row("TSEPrime", _INVESTOR_FLOWS),
        _investor_row("TSEGrowth", _SMALL_FLOWS),
    ],
    "raw_index_options": [
        # a series without trades: the feed reports its session prices as 0
        {"Date": DAY.isoformat(), "Code": "130060018", "O": 0, "H": 0, "L": 0, "C": 0,
         "EO": 0, "EH": 0, "EL": 0, "EC": 0, "AO": 0, "AH": 0, "AL": 0, "AC": 0, "Vo": 0,
         "OI": 330, "Va": 0, "CM": "2025-06", "Strike": 20000.0, "VoOA": 0,
         "EmMrgnTrgDiv": "002", "PCDiv": "1", "LTD": "2025-06-12", "SQD": "2025-06-13",
         "Settle": 980.0, "Theo": 974.641, "BaseVol": 17.93025, "UnderPx": 38835.1,
         "IV": 23.1816, "IR": 0.2336},
        {"Date": DAY.isoformat(), "Code": "140050018", "O": 410, "H": 455, "L": 390, "C": 440,
         "EO": 410, "EH": 420, "EL": 400, "EC": 415, "AO": 415, "AH": 455, "AL": 390,
         "AC": 440, "Vo": 1520, "OI": 8210, "Va": 640000000, "CM": "2024-05", "Strike": 39000.0,
         "VoOA": 20, "EmMrgnTrgDiv": "002", "PCDiv": "2", "LTD": "2024-05-09",
         "SQD": "2024-05-10", "Settle": 440.0, "Theo": 436.2, "BaseVol": 16.1, "UnderPx": 38835.1,
         "IV": 17.2, "IR": 0.08},
    ],
    CALENDAR_ASSET: [
        {"Date": "2024-05-03", "HolDiv": "0"}, {"Date": "2024-05-06", "HolDiv": "3"},
        {"Date": "2024-05-07", "HolDiv": "1"}, {"Date": "2024-12-30", "HolDiv": "1"},
    ],
}
PARTITIONED = [a for a in VALID_ROWS if a != CALENDAR_ASSET]


def _frame(asset: str, rows: list[dict] | None = None, plan: Plan = Plan.PREMIUM) -> pl.DataFrame:
    endpoint = RAW_ASSET_SPECS[asset].endpoint
    return rows_to_frame(endpoint, VALID_ROWS[asset] if rows is None else rows, plan)


def _partition(asset: str) -> dt.date | None:
    return None if asset == CALENDAR_ASSET else DAY


def _rows(asset: str) -> list[dict]:
    """Copies of the valid rows, for planting a defect."""
    return [dict(r) for r in VALID_ROWS[asset]]


def _validate(asset: str, rows: list[dict]):
    return validate_raw(asset, _partition(asset), _frame(asset, rows))


def _only(result, check: str):
    found = [f for f in result.failures if f.check == check]
    assert len(found) == 1, result.message
    return found[0]


# --- schemas come from the registry ---------------------------------------------------------


def test_every_raw_source_and_the_calendar_has_a_schema():
    assert set(RAW_ASSET_SPECS) == set(RAW_SOURCES) | {CALENDAR_ASSET}
    assert set(VALID_ROWS) == set(RAW_ASSET_SPECS)
    for asset, source in RAW_SOURCES.items():
        assert RAW_ASSET_SPECS[asset].endpoint is source.endpoint
    assert RAW_ASSET_SPECS[CALENDAR_ASSET].endpoint is ENDPOINTS["markets/calendar"]


@pytest.mark.parametrize("plan", list(Plan))
@pytest.mark.parametrize("asset", sorted(RAW_ASSET_SPECS))
def test_schema_columns_and_dtypes_are_the_registry_schema(asset, plan):
    schema = raw_schema(asset, plan)
    expected = RAW_ASSET_SPECS[asset].endpoint.schema(plan)
    assert list(schema.columns) == list(expected)
    for name, dtype in expected.items():
        assert schema.columns[name].dtype.type == dtype, name
    assert schema.unique == list(RAW_ASSET_SPECS[asset].endpoint.key)
    assert schema.strict is True


def test_session_rules_only_exist_where_the_plan_has_the_columns():
    premium = raw_schema("raw_daily_quotes", Plan.PREMIUM)
    standard = raw_schema("raw_daily_quotes", Plan.STANDARD)
    names = lambda s, c: {ch.name for ch in s.columns[c].checks}  # noqa: E731
    assert "high_ge_session_highs" in names(premium, "H")
    assert "high_ge_session_highs" not in names(standard, "H")
    assert "MH" not in standard.columns


# --- valid and empty frames pass -------------------------------------------------------------


@pytest.mark.parametrize("asset", sorted(VALID_ROWS))
def test_valid_frame_passes_without_warnings(asset):
    frame = _frame(asset)
    result = validate_raw(asset, _partition(asset), frame)
    assert result.passed and result.clean, result.message
    assert result.n_rows == frame.height == len(VALID_ROWS[asset])
    assert result.message.endswith(f"ok ({frame.height} rows)")


@pytest.mark.parametrize("asset", sorted(VALID_ROWS))
def test_empty_frame_with_the_right_schema_passes_unless_the_source_covers_every_day(asset):
    result = validate_raw(asset, _partition(asset), _frame(asset, []))
    assert result.n_rows == 0
    if _partition(asset) is not None and RAW_ASSET_SPECS[asset].rows_every_day:
        assert [f.check for f in result.failures] == ["rows_present"], result.message
        assert not result.passed and "no rows for a trading day" in result.message
    else:
        assert result.passed and result.clean, result.message


def test_lower_plan_frame_passes_under_its_plan_and_fails_as_premium():
    standard = _frame("raw_daily_quotes", plan=Plan.STANDARD)
    assert validate_raw("raw_daily_quotes", DAY, standard, Plan.STANDARD).clean
    as_premium = validate_raw("raw_daily_quotes", DAY, standard, Plan.PREMIUM)
    missing = _only(as_premium, "column_present")
    assert not as_premium.passed and "MO" in missing.column and "AAdjVo" in missing.column
    extra = validate_raw("raw_daily_quotes", DAY, _frame("raw_daily_quotes"), Plan.STANDARD)
    assert not extra.passed and _only(extra, "no_extra_columns").column.startswith("M")


def test_xtks_calendar_frame_passes():
    frame = calendar_frame(dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    assert validate_raw(CALENDAR_ASSET, None, frame).clean


# --- planted defects ----------------------------------------------------------------------------


def test_high_below_close_is_blocking_and_named():
    rows = _rows("raw_daily_quotes")
    rows[2]["H"] = 830.0  # below C 840
    result = _validate("raw_daily_quotes", rows)
    assert not result.passed
    failure = _only(result, "high_ge_max_open_close")
    assert (failure.column, failure.n_failed, failure.severity) == ("H", 1, Severity.ERROR)
    assert failure.examples == ("Code=130A0 H=830.0 O=820.0 C=840.0",)
    assert result.message == (
        "raw_daily_quotes[2024-05-07]: column 'H' failed check 'high_ge_max_open_close' "
        "on 1 row (Code=130A0 H=830.0 O=820.0 C=840.0)"
    )


@pytest.mark.parametrize(
    ("column", "value", "check"),
    [
        ("L", 850.0, "low_le_min_open_close"),  # above O and C (and H)
        ("AdjL", 850.0, "low_le_min_open_close"),
        ("MH", 2030.0, "high_ge_max_open_close"),
        ("O", -820.0, "price_positive"),
        ("AdjFactor", 0.0, "adj_factor_positive"),
    ],
)
def test_bar_defects_are_blocking(column, value, check):
    row_index = 0 if column.startswith("M") else 2
    rows = _rows("raw_daily_quotes")
    rows[row_index][column] = value
    result = _validate("raw_daily_quotes", rows)
    failures = [f for f in result.failures if f.column == column and f.check == check]
    assert len(failures) == 1 and failures[0].blocking and not result.passed, result.message
    assert f"column '{column}' failed check '{check}'" in result.message


def test_negative_volume_warns_but_does_not_block():
    rows = _rows("raw_daily_quotes")
    rows[3]["Vo"] = -100.0
    result = _validate("raw_daily_quotes", rows)
    failure = _only(result, "non_negative")
    assert failure.column == "Vo" and failure.severity is Severity.WARN
    assert result.passed and not result.clean and result.warnings == (failure,)
    assert "raw_daily_quotes[2024-05-07]: column 'Vo' failed check 'non_negative'" in result.message
    assert "Code=72030 Vo=-100.0" in result.message and result.message.endswith("[warning]")


def test_whole_day_must_span_the_session_bars():
    rows = _rows("raw_daily_quotes")
    rows[0].update(AH=2075.0, AAdjH=2075.0)  # afternoon high above the whole-day high 2069
    result = _validate("raw_daily_quotes", rows)
    assert {(f.column, f.check) for f in result.failures} == {
        ("H", "high_ge_session_highs"), ("AdjH", "high_ge_session_highs")
    }
    assert result.passed and not result.clean
    rows = _rows("raw_daily_quotes")
    rows[0].update(ML=2030.0, MO=None, MH=None, MC=None)  # half a morning bar, low below L
    result = _validate("raw_daily_quotes", rows)
    assert {(f.column, f.check) for f in result.failures} == {
        ("L", "low_le_session_lows"), ("MO", "ohlc_all_or_none")
    }


def test_pandera_settings_cannot_switch_the_data_checks_off():
    rows = _rows("raw_daily_quotes")
    rows[2]["H"] = 830.0
    with config_context(validation_enabled=False), config_context(
        validation_depth=ValidationDepth.SCHEMA_ONLY
    ):
        result = _validate("raw_daily_quotes", rows)
    assert _only(result, "high_ge_max_open_close").blocking


def test_half_a_bar_warns_a_whole_null_bar_does_not():
    rows = _rows("raw_daily_quotes")
    rows[1]["C"] = 300.0  # the halted stock suddenly has a close but no O/H/L
    result = _validate("raw_daily_quotes", rows)
    failure = _only(result, "ohlc_all_or_none")
    assert failure.column == "O" and not failure.blocking and result.passed


def test_duplicate_date_code_is_blocking():
    rows = VALID_ROWS["raw_daily_quotes"] + [VALID_ROWS["raw_daily_quotes"][2]]
    result = _validate("raw_daily_quotes", rows)
    failure = _only(result, "unique_key")
    assert (failure.column, failure.n_failed) == ("Date, Code", 2) and not result.passed
    assert failure.examples == ("Date=2024-05-07 Code=130A0 rows=2",)
    expected = "raw_daily_quotes[2024-05-07]: column 'Date, Code' failed check 'unique_key'"
    assert expected in result.message


@pytest.mark.parametrize("code", ["1301", "13010 ", "a3010", "130a0"])
def test_malformed_stock_code_is_blocking(code):
    rows = _rows("raw_daily_quotes")
    rows[2]["Code"] = code
    result = _validate("raw_daily_quotes", rows)
    assert _only(result, "code_format").blocking and not result.passed


@pytest.mark.parametrize("code", [None, ""])  # the wire's "" parses to null
def test_null_code_is_blocking(code):
    rows = _rows("raw_daily_quotes")
    rows[2]["Code"] = code
    result = _validate("raw_daily_quotes", rows)
    failure = _only(result, "not_null")
    assert failure.column == "Code" and failure.n_failed == 1 and not result.passed


@pytest.mark.parametrize("asset", ["raw_listed_info", "raw_short_selling"])
def test_unknown_sector33_warns(asset):
    rows = _rows(asset)
    rows[0]["S33"] = "1234"
    result = _validate(asset, rows)
    failure = _only(result, "sector33_known")
    assert failure.column == "S33" and failure.severity is Severity.WARN
    assert f"{asset}[2024-05-07]: column 'S33' failed check 'sector33_known'" in result.message
    assert "S33=1234" in result.message


def test_listed_info_code_tables():
    rows = _rows("raw_listed_info")
    rows[0].update(Mkt="0199", S17="6")  # unknown market; S17 6 contradicts S33 7200 (-> 16)
    result = _validate("raw_listed_info", rows)
    assert {f.check for f in result.failures} == {"market_known", "sector17_matches_sector33"}
    assert result.passed


def _shift_date_field(asset: str, days: int) -> pl.DataFrame:
    field = RAW_ASSET_SPECS[asset].endpoint.date_field
    return _frame(asset).with_columns(pl.col(field) + pl.duration(days=days))


@pytest.mark.parametrize("asset", PARTITIONED)
def test_rows_of_another_date_are_blocking(asset):
    field = RAW_ASSET_SPECS[asset].endpoint.date_field
    shifted = _shift_date_field(asset, 1)
    result = validate_raw(asset, DAY, shifted)
    if asset == "raw_listed_info":  # snapshot rows: only those dated after the partition
        check, wrong = "snapshot_not_after_partition", shifted.filter(pl.col(field) > DAY)
    else:
        check, wrong = "partition_date", shifted.filter(pl.col(field) != DAY)
    failure = _only(result, check)
    assert failure.column == field and failure.blocking and not result.passed
    assert failure.n_failed == wrong.height >= 1
    assert f"{asset}[2024-05-07]: column '{field}' failed check '{check}'" in result.message


def test_listed_info_snapshot_rows_may_predate_the_partition():
    assert validate_raw("raw_listed_info", DAY, _shift_date_field("raw_listed_info", -30)).clean
    previous_day = _shift_date_field("raw_daily_quotes", -1)
    assert not validate_raw("raw_daily_quotes", DAY, previous_day).passed


def test_partition_check_is_left_out_without_a_partition():
    shifted = _shift_date_field("raw_daily_quotes", 1)
    result = validate_raw("raw_daily_quotes", None, shifted)
    assert result.clean and result.label == "raw_daily_quotes"


def test_investor_total_mismatch_warns_with_group_column():
    rows = _rows("raw_trades_spec")
    rows[1]["IndTot"] += 5  # Tot != Sell + Buy by 5 thousand yen
    result = _validate("raw_trades_spec", rows)
    failure = _only(result, "total_eq_sell_plus_buy")
    assert failure.column == "IndTot" and failure.n_failed == 1 and not failure.blocking
    assert "raw_trades_spec[2024-05-07]: column 'IndTot' failed check 'total_eq_sell_plus_buy'" in (
        result.message
    )
    assert "Section=TSEGrowth" in failure.examples[0]


def test_investor_identities_tolerate_one_thousand_yen_of_rounding():
    rows = _rows("raw_trades_spec")
    rows[0]["FrgnBal"] += 1
    rows[0]["FrgnTot"] -= 1
    assert _validate("raw_trades_spec", rows).clean
    rows[0]["FrgnBal"] += 1  # now 2 off
    result = _validate("raw_trades_spec", rows)
    failures = [(f.column, f.check) for f in result.failures]
    assert failures == [("FrgnBal", "balance_eq_buy_minus_sell")]


def test_investor_all_groups_total_is_proprietary_plus_brokerage():
    rows = _rows("raw_trades_spec")
    rows[0].update(TotSell=rows[0]["TotSell"] + 1000, TotTot=rows[0]["TotTot"] + 1000,
                   TotBal=rows[0]["TotBal"] - 1000)  # self-consistent group, wrong sum
    result = _validate("raw_trades_spec", rows)
    assert [(f.column, f.check) for f in result.failures] == [
        ("TotSell", "proprietary_plus_brokerage_eq_total")
    ]


def test_unknown_investor_section_warns():
    rows = _rows("raw_trades_spec")
    rows[0]["Section"] = "OSE1st"
    assert _only(_validate("raw_trades_spec", rows),
                 "section_known").column == "Section"


def test_wrong_dtype_is_a_named_schema_failure():
    frame = _frame("raw_daily_quotes").with_columns(pl.col("O").cast(pl.String))
    result = validate_raw("raw_daily_quotes", DAY, frame)
    failure = _only(result, "dtype")
    assert failure.column == "O" and failure.blocking and not result.passed
    assert failure.detail == "expected Float64, got String"
    # rules reading O are skipped rather than erroring: the dtype is the one reported problem
    assert [f.check for f in result.failures] == ["dtype"]
    assert result.message == (
        "raw_daily_quotes[2024-05-07]: column 'O' failed check 'dtype': "
        "expected Float64, got String"
    )


def test_string_flags_where_booleans_are_expected_fail():
    frame = _frame("raw_daily_margin_interest").with_columns(
        pl.col("PubReason.Restricted").cast(pl.String)
    )
    failure = _only(validate_raw("raw_daily_margin_interest", DAY, frame), "dtype")
    assert failure.column == "PubReason.Restricted"
    assert failure.detail == "expected Boolean, got String"


def test_short_position_ratio_above_one_is_flagged():
    rows = _rows("raw_short_selling_positions")
    rows[0]["ShrtPosToSO"] = 1.5
    result = _validate("raw_short_selling_positions", rows)
    failure = _only(result, "ratio_in_unit_interval")
    assert failure.column == "ShrtPosToSO" and "ShrtPosToSO=1.5" in failure.examples[0]
    assert "raw_short_selling_positions[2024-05-07]: column 'ShrtPosToSO'" in result.message


def test_short_position_calculated_after_disclosure_warns():
    rows = _rows("raw_short_selling_positions")
    rows[0]["CalcDate"] = "2024-05-08"
    result = _validate("raw_short_selling_positions", rows)
    assert _only(result, "calculated_not_after_disclosed").column == "CalcDate"


def test_weekly_margin_negotiable_plus_standard():
    rows = _rows("raw_weekly_margin_interest")
    rows[0]["LongVol"] += 1.0  # within the one-share tolerance
    assert _validate("raw_weekly_margin_interest", rows).clean
    rows[0]["LongVol"] += 1.0
    rows[0]["ShrtStdVol"] = None  # the identity is skipped when a part is missing
    result = _validate("raw_weekly_margin_interest", rows)
    failure = _only(result, "negotiable_plus_standard_eq_total")
    assert failure.column == "LongVol" and failure.n_failed == 1 and result.passed


def test_margin_alert_negative_outstanding_and_identity():
    rows = _rows("raw_daily_margin_interest")
    rows[0].update(LongNegOut=-192.0, LongOut=292.0)  # -192 + 484 = 292: identity holds
    result = _validate("raw_daily_margin_interest", rows)
    assert [(f.column, f.check) for f in result.failures] == [("LongNegOut", "non_negative")]


def test_topix_ohlc():
    rows = [{"Date": DAY.isoformat(), "O": 2740.0, "H": 2735.0, "L": 2731.0, "C": 2750.5}]
    result = _validate("raw_topix", rows)
    assert [(f.column, f.check) for f in result.failures] == [("H", "high_ge_max_open_close")]
    assert result.failures[0].examples == ("Date=2024-05-07 H=2735.0 O=2740.0 C=2750.5",)


@pytest.mark.parametrize(
    ("change", "column", "check", "blocking"),
    [
        ({"Strike": 0.0}, "Strike", "strike_positive", False),
        ({"PCDiv": "3"}, "PCDiv", "put_call_known", False),
        ({"IV": -0.5}, "IV", "non_negative", False),
        ({"AL": 460}, "AL", "low_le_min_open_close", True),
        ({"EH": 405}, "EH", "high_ge_max_open_close", True),
        ({"C": -1}, "C", "price_non_negative", True),
        ({"LTD": "2024-05-06"}, "Date", "traded_not_after_last_trading_day", False),
        ({"SQD": "2024-05-08"}, "LTD", "last_trading_day_le_sq_day", False),
    ],
)
def test_index_option_defects(change, column, check, blocking):
    rows = _rows("raw_index_options")
    rows[1].update(change)
    result = _validate("raw_index_options", rows)
    failure = _only(result, check)
    assert failure.column == column and failure.blocking is blocking
    assert result.passed is not blocking
    assert "Code=140050018" in failure.examples[0]


def test_statement_identifiers_and_periods():
    rows = _rows("raw_statements")
    # "" is the API's blank and parses to null; and a period ending before it starts
    rows[0].update(DocType="", CurPerSt="2024-04-01")
    rows[1]["DiscNo"] = None
    result = _validate("raw_statements", rows)
    assert {(f.column, f.check, f.blocking) for f in result.failures} == {
        ("DocType", "not_null", True),
        ("DiscNo", "not_null", True),
        ("CurPerSt", "period_start_le_end", False),
    }


def test_non_finite_number_is_blocking():
    frame = _frame("raw_topix").with_columns(pl.lit(float("nan")).alias("C"))
    result = validate_raw("raw_topix", DAY, frame)
    assert ("C", "finite", True) in {(f.column, f.check, f.blocking) for f in result.failures}


def test_calendar_holiday_division_and_unique_dates():
    rows = VALID_ROWS[CALENDAR_ASSET] + [{"Date": "2024-05-07", "HolDiv": "4"}]
    result = _validate(CALENDAR_ASSET, rows)
    assert {(f.column, f.check) for f in result.failures} == {
        ("HolDiv", "holiday_division_known"), ("Date", "unique_key")
    }
    assert not result.passed and result.message.startswith("raw_trading_calendar: ")
    with pytest.raises(ValueError, match="not partitioned"):
        validate_raw(CALENDAR_ASSET, DAY, _frame(CALENDAR_ASSET))


def test_a_frame_of_the_wrong_endpoint_is_reported_not_raised():
    result = validate_raw("raw_daily_quotes", DAY, _frame("raw_topix"))
    assert not result.passed
    assert {f.check for f in result.failures} == {"column_present"}  # topix ⊂ bars columns
    result = validate_raw("raw_topix", DAY, _frame("raw_short_selling"))  # two rows per Date
    checks = {f.check for f in result.failures}
    assert checks == {"column_present", "no_extra_columns", "unique_key"}


def test_programming_errors_raise():
    with pytest.raises(KeyError, match="raw_nope"):
        validate_raw("raw_nope", DAY, _frame("raw_topix"))
    with pytest.raises(TypeError, match="raw_topix"):
        validate_raw("raw_topix", DAY, _frame("raw_topix").lazy())


# --- severity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asset", "check", "expected"),
    [
        ("raw_daily_quotes", "dtype", Severity.ERROR),
        ("raw_daily_quotes", "unique_key", Severity.ERROR),
        ("raw_daily_quotes", "low_le_min_open_close", Severity.ERROR),
        ("raw_daily_quotes", "partition_date", Severity.ERROR),
        ("raw_daily_quotes", "code_format", Severity.ERROR),
        ("raw_daily_quotes", "non_negative", Severity.WARN),
        ("raw_listed_info", "snapshot_not_after_partition", Severity.ERROR),
        ("raw_listed_info", "sector33_known", Severity.WARN),
        ("raw_trades_spec", "total_eq_sell_plus_buy", Severity.WARN),
        ("raw_index_options", "high_ge_max_open_close", Severity.ERROR),
        (CALENDAR_ASSET, "holiday_division_known", Severity.ERROR),
    ],
)
def test_severity(asset, check, expected):
    assert severity(asset, check) is expected


def test_severity_of_unknown_check_or_asset_raises():
    with pytest.raises(KeyError, match="raw_topix has no check 'sector33_known'"):
        severity("raw_topix", "sector33_known")
    with pytest.raises(KeyError, match="no raw schema"):
        severity("raw_nope", "dtype")
    assert "partition_date" not in RAW_ASSET_SPECS[CALENDAR_ASSET].severities()


@pytest.mark.parametrize("asset", sorted(RAW_ASSET_SPECS))
def test_every_reported_check_has_a_severity(asset):
    table = RAW_ASSET_SPECS[asset].severities()  # raises on a name declared with two severities
    for column in raw_schema(asset, partition=_partition(asset)).columns.values():
        for check in column.checks:
            assert check.name in table, (asset, column.name, check.name)


# --- real data ----------------------------------------------------------------------------------

REAL_DAYS = [dt.date(2013, 11, 1), dt.date(2014, 4, 1), dt.date(2016, 6, 24), dt.date(2018, 11, 16)]


def _real(realdata: Path, stem: str, *predicates: pl.Expr) -> pl.DataFrame:
    """Rows of one replay file (``realdata_dir`` skips the test when the dir is absent)."""
    return pl.scan_parquet(realdata / f"{stem}.parquet").filter(*predicates).collect()


@pytest.mark.realdata
@pytest.mark.parametrize("day", REAL_DAYS, ids=str)
def test_real_daily_bars_pass(realdata_dir, day):
    endpoint = ENDPOINTS["equities/bars/daily"]
    frame = coerce_frame(endpoint, _real(realdata_dir, endpoint.file_stem, pl.col("Date") == day))
    assert frame.height > 1000
    result = validate_raw("raw_daily_quotes", day, frame)
    assert result.clean, result.message


@pytest.mark.realdata
def test_real_bars_with_planted_defects_report_exact_counts(realdata_dir):
    day = REAL_DAYS[2]
    endpoint = ENDPOINTS["equities/bars/daily"]
    frame = coerce_frame(endpoint, _real(realdata_dir, endpoint.file_stem, pl.col("Date") == day))
    rng = np.random.default_rng(7)
    planted = rng.choice(frame.height, size=7, replace=False)
    is_planted = pl.int_range(pl.len()).is_in(planted.tolist())
    broken = frame.with_columns(
        H=pl.when(is_planted).then(pl.min_horizontal("O", "C") - 1).otherwise("H")
    )
    # independent count: rows where H < max(O, C), computed with numpy
    h, o, c = (broken[n].to_numpy() for n in ("H", "O", "C"))
    expected = int(np.sum(h < np.maximum(o, c)))
    assert expected == 7
    result = validate_raw("raw_daily_quotes", day, broken)
    failures = {(f.column, f.check): f for f in result.failures}
    assert failures[("H", "high_ge_max_open_close")].n_failed == expected
    assert not result.passed
    codes = set(broken.filter(is_planted)["Code"])
    examples = failures[("H", "high_ge_max_open_close")].examples
    shown = {e.split()[0].removeprefix("Code=") for e in examples}
    assert shown <= codes and len(shown) == 5


@pytest.mark.realdata
def test_real_listed_info_topix_and_calendar_pass(realdata_dir):
    day = REAL_DAYS[2]
    master = ENDPOINTS["equities/master"]
    changes = _real(realdata_dir, master.file_stem, pl.col("Date") <= day)
    snapshot = changes.sort("Date").group_by("Code", maintain_order=True).last()
    snapshot = coerce_frame(master, snapshot)
    assert snapshot["Date"].max() <= day < dt.date(2016, 7, 1) and snapshot.height > 1000
    assert validate_raw("raw_listed_info", day, snapshot).clean

    topix = ENDPOINTS["indices/bars/daily/topix"]
    for d in REAL_DAYS:
        frame = coerce_frame(topix, _real(realdata_dir, topix.file_stem, pl.col("Date") == d))
        assert frame.height == 1 and validate_raw("raw_topix", d, frame).clean

    cal = ENDPOINTS["markets/calendar"]
    frame = coerce_frame(cal, _real(realdata_dir, cal.file_stem))
    assert validate_raw(CALENDAR_ASSET, None, frame).clean


def test_validating_many_partitions_at_once_matches_one_by_one():
    from atft_pipeline.validation import validate_raw_partitions

    good = _frame("raw_daily_quotes", _rows("raw_daily_quotes"))
    other_day = good.with_columns(pl.lit(PREV).alias("Date"))  # rows of PREV in DAY's partition
    frames = {DAY: good, PREV: other_day}
    batch = validate_raw_partitions("raw_daily_quotes", frames)
    assert [r.passed for r in batch] == [True, True]
    wrong = validate_raw_partitions("raw_daily_quotes", {DAY: other_day, PREV: other_day})
    assert [r.passed for r in wrong] == [False, True]
    assert "raw_daily_quotes[2024-05-07]" in wrong[0].message and "'Date'" in wrong[0].message
    bad_rows = _rows("raw_daily_quotes")
    bad_rows[0]["H"] = 1.0  # below the low: falls back to per-partition attribution
    bad = validate_raw_partitions("raw_daily_quotes", {DAY: _frame("raw_daily_quotes", bad_rows), PREV: other_day})
    assert [r.passed for r in bad] == [False, True]
    assert bad[0].message == validate_raw("raw_daily_quotes", DAY, _frame("raw_daily_quotes", bad_rows)).message


def test_one_bad_day_among_many_is_found_by_halving_and_reported_as_alone(monkeypatch):
    from atft_pipeline.calendar import trading_days
    from atft_pipeline.validation import result as validation_result

    days = trading_days(dt.date(2024, 4, 1), dt.date(2024, 5, 31))[:32]
    good = _frame("raw_daily_quotes", _rows("raw_daily_quotes"))
    frames = {d: good.with_columns(pl.lit(d).alias("Date")) for d in days}
    bad_rows = _rows("raw_daily_quotes")
    bad_rows[0]["H"] = 1.0  # below the low: a blocking row failure on one day
    bad_day = days[21]
    bad = _frame("raw_daily_quotes", bad_rows).with_columns(pl.lit(bad_day).alias("Date"))
    frames[bad_day] = bad
    one_by_one = [validate_raw("raw_daily_quotes", d, f) for d, f in frames.items()]

    calls = []
    original = validation_result.validate_raw

    def counted(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(validation_result, "validate_raw", counted)
    batch = validation_result.validate_raw_partitions("raw_daily_quotes", frames)
    assert [r.partition for r in batch] == days
    assert [r.passed for r in batch] == [d != bad_day for d in days]
    assert [r.message for r in batch] == [r.message for r in one_by_one]
    # halving a 32-day batch: one pass of all 32 days, then two per level (16, 8, 4, 2 days),
    # then the bad day and its neighbour on their own: 11 passes where one by one took 32
    assert calls.count(None) == 9 and [c for c in calls if c is not None] == [days[20], bad_day]
