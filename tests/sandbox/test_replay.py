"""Replay directories: round trip, reproducible bytes, clear manifest errors, the real data set."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from atft_pipeline.jquants.endpoints import ENDPOINTS, Plan
from atft_pipeline.jquants.parsing import rows_to_frame
from atft_pipeline.sandbox.replay import (
    MANIFEST_NAME,
    ReplayError,
    read_manifest,
    read_replay,
    write_replay,
)

BARS = ENDPOINTS["equities/bars/daily"]
SUMMARY = ENDPOINTS["fins/summary"]
ALERT = ENDPOINTS["markets/margin-alert"]


def _tables() -> dict[str, pl.DataFrame]:
    bars = rows_to_frame(
        BARS,
        [
            {
                "Date": "2024-01-05",
                "Code": "86970",
                "O": 2047.0,
                "C": 2045.5,
                "UL": "0",
                "LL": "1",
                "Vo": 2202500,
                "AdjFactor": 1.0,
                "AdjC": 2045.5,
                "MO": 2040.0,
            },
            {
                "Date": "2024-01-04",
                "Code": "72030",
                "O": None,
                "C": None,
                "UL": "0",
                "LL": "0",
                "Vo": None,
                "AdjFactor": 0.5,
                "AdjC": None,
            },
            {
                "Date": "2024-01-04",
                "Code": "13010",
                "O": 3000,
                "C": 3010,
                "UL": "1",
                "LL": "0",
                "Vo": 100,
                "AdjFactor": 1.0,
                "AdjC": 3010,
            },
        ],
    )
    summary = rows_to_frame(
        SUMMARY,
        [
            {
                "DiscDate": "2024-01-30",
                "DiscTime": "15:00:00",
                "Code": "86970",
                "DiscNo": "1",
                "DocType": "3QFinancialStatements_Consolidated_IFRS",
                "CurPerType": "3Q",
                "Sales": "100529000000",
                "OdP": "",
                "EPS": "66.76",
                "MatChgSub": "false",
                "ChgAcEst": "true",
                "SigChgInC": "",
            }
        ],
    )
    alert = rows_to_frame(
        ALERT,
        [
            {
                "PubDate": "2024-02-08",
                "Code": "13260",
                "AppDate": "2024-02-07",
                "PubReason": {"Restricted": "0", "PrecautionByJSF": "1"},
                "ShrtOut": 11.0,
                "ShrtOutRatio": "*",
                "SLRatio": 1.6,
                "TSEMrgnRegCls": "001",
            }
        ],
    )
    return {BARS.path: bars, SUMMARY.path: summary, ALERT.path: alert}


def test_round_trip_gives_equal_frames_in_canonical_order(tmp_path: Path) -> None:
    tables = _tables()
    out = write_replay(tmp_path / "replay", tables, {"source": "unit test", "start": "2024-01-04"})
    assert out == tmp_path / "replay"
    assert sorted(p.name for p in out.iterdir()) == [
        "equities__bars__daily.parquet",
        "fins__summary.parquet",
        MANIFEST_NAME,
        "markets__margin-alert.parquet",
    ]
    back = read_replay(out)
    assert set(back) == set(tables)
    for path, frame in tables.items():
        assert back[path].schema == ENDPOINTS[path].schema(Plan.PREMIUM)
        # Rows come back sorted by the endpoint key (Date, Code for bars).
        assert_frame_equal(back[path], frame.sort(list(ENDPOINTS[path].key)))
    assert back[BARS.path]["Code"].to_list() == ["13010", "72030", "86970"]
    assert back[ALERT.path]["PubReason.PrecautionByJSF"].to_list() == [True]
    assert back[SUMMARY.path]["OdP"].to_list() == [None]
    manifest = read_manifest(out)
    assert manifest.source == "unit test"
    assert manifest.start == dt.date(2024, 1, 4)
    assert manifest.endpoints[BARS.path] == "equities__bars__daily.parquet"


def test_files_hold_only_the_given_v2_columns(tmp_path: Path) -> None:
    topix = pl.DataFrame({"Date": [dt.date(2024, 1, 4)], "C": [2500.5]})
    out = write_replay(tmp_path / "r", {"indices/bars/daily/topix": topix})
    stored = pl.read_parquet(out / "indices__bars__daily__topix.parquet")
    assert stored.columns == ["Date", "C"]
    # Reading adds the registry's missing columns as nulls, with registry dtypes.
    back = read_replay(out)["indices/bars/daily/topix"]
    assert back.columns == ["Date", "O", "H", "L", "C"]
    assert back["O"].null_count() == 1 and back["C"].to_list() == [2500.5]


def test_identical_tables_give_identical_bytes_whatever_the_row_order(tmp_path: Path) -> None:
    tables = _tables()
    shuffled = {p: f.reverse() for p, f in tables.items()}
    meta = {"source": "x", "extra": {"b": 2, "a": {"z": 1, "y": [1, 2]}}}
    a = write_replay(tmp_path / "a", tables, meta)
    b = write_replay(tmp_path / "b", shuffled, dict(reversed(list(meta.items()))))
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    manifest = (a / MANIFEST_NAME).read_text()
    assert json.loads(manifest)["extra"] == {"a": {"y": [1, 2], "z": 1}, "b": 2}
    assert manifest.index('"api"') < manifest.index('"endpoints"') < manifest.index('"format"')


def test_write_is_atomic_and_refuses_to_clobber(tmp_path: Path) -> None:
    tables = _tables()
    target = write_replay(tmp_path / "r", tables)
    with pytest.raises(ReplayError, match="already exists"):
        write_replay(target, tables)
    # A failing write leaves the existing directory untouched and no staging directory behind.
    bad = {BARS.path: tables[BARS.path].with_columns(pl.lit(1).alias("Volume"))}
    with pytest.raises(
        ReplayError, match=r"\['Volume'\] are not V2 fields of endpoint 'equities/bars/daily'"
    ):
        write_replay(target, bad, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert set(read_replay(target)) == set(tables)
    write_replay(target, {BARS.path: tables[BARS.path]}, overwrite=True)
    assert set(read_replay(target)) == {BARS.path}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    # overwrite never deletes a directory that is not a replay directory.
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ReplayError, match="is not a replay directory"):
        write_replay(precious, tables, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_bad_metadata_and_unknown_endpoints_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(
        ReplayError, match=r"unknown J-Quants V2 endpoint\(s\) \['prices/daily_quotes'\]"
    ):
        write_replay(tmp_path / "a", {"prices/daily_quotes": pl.DataFrame()})
    with pytest.raises(ReplayError, match=r"\['seed'\] are not manifest fields"):
        write_replay(tmp_path / "b", _tables(), {"seed": 1})
    with pytest.raises(ReplayError, match="invalid replay metadata"):
        write_replay(tmp_path / "c", _tables(), {"start": "not a date"})
    assert not any(tmp_path.iterdir())


def _write_manifest(directory: Path, body: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = body if isinstance(body, str) else json.dumps(body)
    (directory / MANIFEST_NAME).write_text(text)
    return directory


GOOD = {"format": "jquants-replay", "version": 1, "api": "v2", "endpoints": {}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**GOOD, "format": "csv"}, r"field 'format': Input should be 'jquants-replay'"),
        ({**GOOD, "version": 2}, r"field 'version': Input should be 1"),
        ({**GOOD, "api": "v1"}, r"field 'api'"),
        ({k: v for k, v in GOOD.items() if k != "endpoints"}, r"field 'endpoints': Field required"),
        ({**GOOD, "created": "2024-01-01"}, r"field 'created': Extra inputs are not permitted"),
        ({**GOOD, "start": "2024-13-01"}, r"field 'start'"),
        (
            {**GOOD, "endpoints": {"listed/info": "listed__info.parquet"}},
            r"unknown J-Quants V2 endpoint\(s\) \['listed/info'\]",
        ),
        (
            {**GOOD, "endpoints": {"equities/master": "../master.parquet"}},
            r"file for endpoint 'equities/master' must be a plain",
        ),
        ("{not json", r"invalid JSON at line 1"),
        ("[1, 2]", r"expected a JSON object, got list"),
    ],
)
def test_manifest_errors_name_the_file_and_field(
    tmp_path: Path, body: object, message: str
) -> None:
    directory = _write_manifest(tmp_path / "r", body)
    with pytest.raises(ReplayError, match=message) as info:
        read_replay(directory)
    assert str(directory / MANIFEST_NAME) in str(info.value)


def test_missing_manifest_file_and_foreign_columns(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"manifest.json: not found"):
        read_replay(tmp_path)
    directory = _write_manifest(
        tmp_path / "r", {**GOOD, "endpoints": {"equities/master": "equities__master.parquet"}}
    )
    with pytest.raises(
        ReplayError,
        match=r"equities__master.parquet: listed in manifest.json for endpoint "
        r"'equities/master' but missing",
    ):
        read_replay(directory)
    # V1 column names are caught rather than silently read as an all-null frame.
    pl.DataFrame(
        {"Date": ["2024-01-04"], "Code": ["72030"], "CompanyName": ["Toyota"]}
    ).write_parquet(directory / "equities__master.parquet")
    with pytest.raises(
        ReplayError,
        match=r"columns \['CompanyName'\] are not V2 fields of endpoint 'equities/master'",
    ):
        read_replay(directory)


def test_stored_strings_are_coerced_to_registry_dtypes(tmp_path: Path) -> None:
    directory = _write_manifest(
        tmp_path / "r", {**GOOD, "endpoints": {"equities/bars/daily": "bars.parquet"}}
    )
    pl.DataFrame(
        {
            "Date": ["20240104", "2024-01-05"],
            "Code": ["72030", "72030"],
            "C": ["2,500.5", "-"],
            "UL": ["1", "0"],
            "Vo": [100, None],
        }
    ).write_parquet(directory / "bars.parquet")
    bars = read_replay(directory)["equities/bars/daily"]
    assert bars.schema == BARS.schema(Plan.PREMIUM)
    assert bars["Date"].to_list() == [dt.date(2024, 1, 4), dt.date(2024, 1, 5)]
    assert bars["C"].to_list() == [2500.5, None]
    assert bars["UL"].to_list() == [True, False]
    assert bars["Vo"].to_list() == [100.0, None]


def test_synthetic_market_export_is_reproducible_per_seed(tmp_path: Path) -> None:
    from atft_pipeline.sandbox.market import MarketConfig, generate_market

    def export(seed: int, name: str) -> Path:
        config = MarketConfig(
            seed=seed, n_stocks=10, start=dt.date(2024, 1, 4), end=dt.date(2024, 4, 30)
        )
        market = generate_market(config)
        meta = {"source": "synthetic", "extra": {"config": config, "summary": market.summary()}}
        return write_replay(tmp_path / name, market.tables, meta)

    a, b, c = export(7, "a"), export(7, "b"), export(8, "c")
    files = sorted(p.name for p in a.iterdir())
    assert len(files) == len(ENDPOINTS) + 1
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "equities__bars__daily.parquet").read_bytes() != (
        c / "equities__bars__daily.parquet"
    ).read_bytes()
    assert (a / MANIFEST_NAME).read_bytes() != (c / MANIFEST_NAME).read_bytes()
    back = read_replay(a)
    market = generate_market(
        MarketConfig(seed=7, n_stocks=10, start=dt.date(2024, 1, 4), end=dt.date(2024, 4, 30))
    )
    for path, frame in market.tables.items():
        assert back[path].schema == frame.schema, path
        assert_frame_equal(
            back[path], frame.sort(back[path].columns, nulls_last=True), check_row_order=False
        )


@pytest.mark.realdata
def test_real_replay_reads_fast_with_registry_dtypes(realdata_dir: Path) -> None:
    started = time.perf_counter()
    tables = read_replay(realdata_dir)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"reading the real replay took {elapsed:.1f} s"
    assert set(tables) == {
        "equities/bars/daily",
        "equities/master",
        "indices/bars/daily/topix",
        "markets/calendar",
    }
    for path, frame in tables.items():
        assert frame.schema == ENDPOINTS[path].schema(Plan.PREMIUM), path
    bars = tables["equities/bars/daily"]
    assert bars.height == 1_791_194
    assert bars["Code"].n_unique() == 1500
    assert bars["Date"].min() == dt.date(2013, 11, 1) and bars["Date"].max() == dt.date(
        2018, 11, 16
    )
    assert bars.filter(pl.col("Date") == dt.date(2016, 10, 14)).height == 284
    # Columns the source lacks (UL/LL, the Premium sessions) are typed nulls, not strings.
    assert bars["UL"].dtype == pl.Boolean and bars["UL"].null_count() == bars.height
    manifest = read_manifest(realdata_dir)
    assert manifest.start == dt.date(2013, 11, 1) and manifest.end == dt.date(2018, 11, 16)


def test_cli_export_writes_the_market_with_its_summary(tmp_path: Path, capsys) -> None:
    from assets.cli import main

    argv = ["sandbox", "export", str(tmp_path / "r"), "--seed", "3", "--n-stocks", "10"]
    argv += ["--start", "2024-01-04", "--end", "2024-04-30"]
    assert main(argv) == 0
    assert f"to {tmp_path / 'r'}" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "r")
    assert set(manifest.endpoints) == set(ENDPOINTS)
    assert (manifest.start, manifest.end) == (dt.date(2024, 1, 4), dt.date(2024, 4, 30))
    assert manifest.extra["market_config"]["seed"] == 3
    summary = manifest.extra["summary"]
    assert summary["n_stocks"] == 10
    bars = read_replay(tmp_path / "r")["equities/bars/daily"]
    assert summary["rows"]["equities/bars/daily"] == bars.height > 0
    # An existing directory is kept unless --overwrite is given.
    assert main(argv) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--n-stocks", "11"]) == 0
    assert read_manifest(tmp_path / "r").extra["summary"]["n_stocks"] == 11
