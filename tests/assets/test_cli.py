"""The paths a new user walks with ``atft run``: each mistake ends with one line naming the
setting and exit status 2 before anything runs; a short range fetches its history; an
upstream 403 stops the stages that depend on the source."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import pytest

from assets.cli import fit_table, main
from atft_pipeline import calendar
from atft_pipeline.planning import plan_run
from atft_pipeline.settings import Settings
from atft_pipeline.stages.scope import resolve_scope

_VARIABLES = ("JQUANTS_API_KEY", "JQUANTS_BASE_URL", "JQUANTS_PLAN", "ATFT_START_DATE", "ATFT_POSTGRES_URL",
              "MLFLOW_TRACKING_URI")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ATFT_HOME and no other J-Quants / ATFT variables."""
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATFT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _usage_error(capsys, argv: list[str]) -> str:
    """Run ``atft argv``; assert it is a one- or two-line usage error; return the message."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert err.startswith("error: ") and len(err.strip().splitlines()) <= 2, err
    return err


def _config(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_unknown_config_key_names_the_key_and_the_valid_ones(home, tmp_path, capsys):
    err = _usage_error(capsys, ["run", "--config", _config(tmp_path, "dataset:\n  famillies: [price]\n")])
    assert "unknown key 'dataset.famillies'" in err
    assert "families, disabled, min_history_days" in err
    assert not home.exists()  # nothing ran, nothing was written


def test_tune_with_a_bad_search_file_or_no_dataset_is_one_line(home, tmp_path, capsys):
    search = _config(tmp_path, "study: s\ntrials: 2\nparameters:\n  - {key: model.widht, type: int, low: 1, high: 2}\n")
    err = _usage_error(capsys, ["tune", "--search", search])
    assert "search key 'model.widht'" in err
    err = _usage_error(capsys, ["tune"])  # configs/tuning.yaml is valid; the home has no dataset
    assert "no stored ml_dataset" in err and "atft run" in err


def test_end_before_start(home, capsys):
    err = _usage_error(capsys, ["run", "--start", "2023-06-01", "--end", "2023-05-01"])
    assert "--end 2023-05-01 is before --start 2023-06-01" in err
    assert not home.exists()


def test_unknown_plan_lists_the_plans(home, monkeypatch, capsys):
    monkeypatch.setenv("JQUANTS_PLAN", "gold")
    err = _usage_error(capsys, ["run"])
    assert "JQUANTS_PLAN='gold'" in err and "free, light, standard, premium" in err


def test_config_family_the_plan_lacks(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JQUANTS_PLAN", "free")
    err = _usage_error(capsys, ["run", "--config", _config(tmp_path, "dataset:\n  families: [price, margin_weekly]\n")])
    assert "margin_weekly (needs JQUANTS_PLAN=standard or above)" in err
    assert "price" not in err.split("feed:")[1]  # only the family the plan lacks
    assert not home.exists()


def test_start_before_the_first_partition_names_atft_start_date(home, capsys):
    err = _usage_error(capsys, ["run", "--start", "2020-06-01", "--end", "2021-02-01"])
    assert "--start 2020-06-01 is before ATFT_START_DATE (2021-01-04)" in err
    assert "set ATFT_START_DATE=2020-06-01" in err
    assert not home.exists()


def test_end_after_the_sandbox_data(home, capsys):
    err = _usage_error(capsys, ["run", "--start", "2023-06-01", "--end", "2024-06-01"])
    assert "after the sandbox market's last session (2023-12-29)" in err


def test_debug_shows_the_traceback(home):
    with pytest.raises(Exception, match="is before --start"):
        main(["--debug", "run", "--start", "2023-06-01", "--end", "2023-05-01"])


def test_plan_fetches_each_sources_history_and_skips_models_a_short_range_cannot_train(tmp_path):
    scope = resolve_scope(Settings(home=tmp_path))
    plan = plan_run(scope, dt.date(2023, 6, 1), dt.date(2023, 6, 30))
    quotes, options = plan.raw_days["raw_daily_quotes"], plan.raw_days["raw_index_options"]
    longest = max(f.history for f in scope.enabled_families if "raw_daily_quotes" in f.sources)
    assert quotes[0] == calendar.shift_trading_days(plan.start, -longest)
    assert len([d for d in quotes if d < plan.start]) == longest
    assert len([d for d in quotes if d > plan.end]) == 21  # targets look 21 sessions ahead
    assert len([d for d in options if d < plan.start]) == scope.catalog.family("options").lookback
    assert f"fetching {longest} sessions of history before 2023-06-01" in plan.notes[0]
    assert set(plan.skipped) >= {"normalization_stats", "atft_model", "latest_predictions"}
    assert "22 session(s), too few" in plan.notes[-1]
    # the whole sandbox range trains: nothing skipped
    assert plan_run(scope, dt.date(2021, 1, 4), dt.date(2023, 12, 29)).skipped == {}


def test_summary_table_fits_100_columns_without_breaking_a_name():
    import polars as pl

    table = pl.DataFrame({
        "model": ["atft_gat_fan", "lightgbm"], "split": ["test", "val"],
        **{c: [0.0123456, -1.5] for c in ("rank_ic", "ic", "rank_icir", "sharpe_gross", "sharpe_net",
                                          "hit_rate", "rank_ic_vs_oracle")},
    })
    text = fit_table(table, width=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "atft_gat_fan" in text and "vs_oracle" in text and "0.0123" in text


# --------------------------------------------------------------------------------------
# Whole runs against a small sandbox market

_START = dt.date(2021, 1, 4)


@lru_cache(maxsize=1)
def _market():
    from atft_pipeline.sandbox.market import MarketConfig, generate_market

    return generate_market(MarketConfig(n_stocks=10, start=_START, end=dt.date(2023, 12, 29)))


@pytest.fixture
def sandbox(home, monkeypatch):
    """Serve the small market; ``sandbox(faults)`` points the environment at it."""
    from contextlib import ExitStack

    from atft_pipeline.sandbox.faults import parse_faults
    from atft_pipeline.sandbox.server import ServerSettings, create_app, serve_in_thread

    with ExitStack() as stack:
        def start(faults: str = "") -> None:
            app = create_app(_market().tables, settings=ServerSettings(faults=parse_faults(faults)))
            server = stack.enter_context(serve_in_thread(app))
            monkeypatch.setenv("JQUANTS_API_KEY", "sandbox")
            monkeypatch.setenv("JQUANTS_BASE_URL", server.base_url)

        yield start


def _stage_lines(out: str) -> dict[str, str]:
    """Stage -> its line and the detail lines wrapped under it."""
    stages: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("  ") and not line.startswith("    ") and len(line.split()) > 2:
            name = line.split()[0]
            stages[name] = line
        elif line.startswith("      ") and stages:
            stages[name] += "\n" + line
    return stages


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_short_range_on_a_fresh_home_fetches_its_history(home, sandbox, tmp_path, capsys):
    """Two families keep it cheap: the history fetched is the longest lookback of the enabled
    families per source (the full graph is the same code path with more sources)."""
    from atft_pipeline.storage import PartitionStore

    sandbox()
    config = _config(tmp_path, "dataset:\n  families: [price, sector]\n")
    assert main(["run", "--start", "2023-06-01", "--end", "2023-06-30", "--config", config]) == 0
    out = capsys.readouterr().out
    price = resolve_scope(Settings(home=home)).catalog.family("price").lookback
    assert f"fetching {price} sessions of history before 2023-06-01 for the features' lookback" in out
    lines = _stage_lines(out)
    for stage in ("raw_daily_quotes", "raw_listed_info", "features_price", "features_sector", "targets",
                  "ml_dataset"):
        assert lines[stage].split()[1] == "ok", lines[stage]
    for stage in ("normalization_stats", "atft_model", "evaluation_report", "latest_predictions"):
        assert "skipped" in lines[stage] and "too short for the splits" in lines[stage]
    store = PartitionStore(home / "data")
    june = [d.isoformat() for d in calendar.trading_days(dt.date(2023, 6, 1), dt.date(2023, 6, 30))]
    assert store.partitions("ml_dataset") == june
    first = calendar.shift_trading_days(dt.date(2023, 6, 1), -price).isoformat()
    assert store.partitions("raw_daily_quotes")[0] == first  # price's lookback
    assert store.partitions("raw_listed_info")[0] == calendar.shift_trading_days(dt.date(2023, 6, 1), -60).isoformat()
    assert store.partitions("raw_statements")[0] == "2023-06-01"  # no enabled family reads its history
    assert store.read("features_price", "2023-06-01")["logret_250d"].drop_nulls().len() > 0
    assert not store.exists("normalization_stats")
    assert len(out.splitlines()) < 60
    assert (home / "logs").is_dir() and "DEBUG" not in out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_upstream_403_stops_its_dependants(home, sandbox, tmp_path, monkeypatch, capsys):
    from atft_pipeline.storage import PartitionStore

    sandbox("forbid=markets/short-ratio")
    monkeypatch.setenv("ATFT_START_DATE", "2023-06-01")
    config = _config(tmp_path, "dataset:\n  families: [price, short_selling]\n")
    assert main(["run", "--start", "2023-06-01", "--end", "2023-06-07", "--config", config]) == 1
    out = capsys.readouterr().out
    print(out)
    lines = _stage_lines(out)
    assert "FAILED" in lines["raw_short_selling"] and "403" in out
    assert lines["features_price"].split()[1] == "ok"
    assert "skipped" in lines["features_short_selling"] and "upstream raw_short_selling (failed)" in out
    for stage in ("ml_dataset", "normalization_stats", "atft_model", "latest_predictions"):
        assert "skipped" in lines[stage], lines[stage]
    assert "failed: raw_short_selling" in out
    store = PartitionStore(home / "data")
    assert store.partitions("features_short_selling") == [] and store.partitions("ml_dataset") == []


def test_a_failing_blocking_check_prints_its_description(tmp_path):
    from dagster import (
        AssetCheckResult,
        AssetCheckSpec,
        Definitions,
        MaterializeResult,
        asset,
    )

    from assets.partitions import trading_day_partitions
    from assets.runner import materialize_range
    from atft_pipeline.storage import PartitionStore
    from tests.helpers import atft_test_instance

    partitions = trading_day_partitions(dt.date(2023, 1, 4), dt.date(2023, 1, 31))

    @asset(partitions_def=partitions, check_specs=[AssetCheckSpec("columns_equal_catalog", asset="table",
                                                                  blocking=True)])
    def table(context):
        return MaterializeResult(check_results=[AssetCheckResult(
            passed=False, metadata={"partitions": "2023-01-04", "missing_columns": "ret_5d",
                                    "example_rows": "code 1301: ret_5d absent"})])

    @asset(partitions_def=partitions, deps=[table])
    def downstream(context):
        raise AssertionError("must not run")

    lines: list[str] = []
    with atft_test_instance() as instance:
        result = materialize_range(
            Definitions(assets=[table, downstream]), instance, ["table", "downstream"], dt.date(2023, 1, 4),
            dt.date(2023, 1, 4), PartitionStore(tmp_path), progress=lines.append,
        )
    text = "\n".join(lines)
    assert not result.success and "check columns_equal_catalog on table failed" in text
    assert "missing_columns: ret_5d" in text and "example_rows: code 1301: ret_5d absent" in text
    assert "downstream" in text and "upstream table (failed)" in text
