"""The contract every feature family of the default catalog honours, checked on one market.

The families are enumerated from ``default_catalog()``: a family added to the catalog gets
every test here without new test code. On the contract market (every raw source present,
longer than the longest lookback) each family must

- emit exactly its catalog columns and dtypes, one row per listed (date, code), no NaN/inf,
  with a value somewhere in every column, and only the dates it is asked for;
- be point in time: changing every raw row published after t (by its source's publication
  rule in ``RAW_SOURCES``) leaves every row dated <= t bit-identical, and a nightly run that
  sees only what was published by t gives the backfill's row for t;
- need no more history than its declared ``lookback``;
- run on empty sources: no rows when every source is empty, the full universe when only the
  bars are there.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import polars as pl
import pytest

from atft_pipeline.features import (
    flow,
    margin_daily,
    margin_weekly,
    options,
    short_selling,
    statements,
)
from atft_pipeline.features.catalog import FeatureFamily
from atft_pipeline.features.registry import default_catalog
from atft_pipeline.stages.windows import lookback_window
from tests.helpers import (
    BARS,
    FINS,
    assert_contract,
    assert_matches,
    assert_no_source_values,
    contract_tables,
    history_window,
    long_gap_codes,
    perturb_after,
    real_tables,
    run,
    sessions_of,
    until,
)

# The dates point-in-time behaviour is checked at, as positions in the market's sessions:
# one inside the longest lookback's warm-up, one where every family has values.
PERTURBED_AT = (200, -60)
# History beyond a family's lookback may move a value by rounding only, except where the
# family keeps state that forgets its start gradually.
LOOKBACK_RTOL = {"technical": 1e-4}  # EMA seeds (spans <= 50) have decayed below 1e-4
# Families whose every column comes from a source slower than the bars: without that source
# their quantities are null and their flags and counts are 0 (``NO_SOURCE_VALUE``).
SLOW_SOURCE_FAMILIES = (
    statements.FAMILY,
    margin_weekly.FAMILY,
    margin_daily.FAMILY,
    short_selling.FAMILY,
    flow.FAMILY,
    options.FAMILY,
)


def _families() -> list[FeatureFamily]:
    return default_catalog().enabled()


def each_family(test):
    return pytest.mark.parametrize("family", _families(), ids=lambda f: f.name)(test)


def changed_columns(before: pl.DataFrame, after: pl.DataFrame) -> list[str]:
    """The columns whose values differ (every column when the rows themselves differ)."""
    if before.select("date", "code").equals(after.select("date", "code")):
        return [c for c in before.columns if not before[c].equals(after[c])]
    return list(before.columns)


@lru_cache(maxsize=None)
def backfill(name: str) -> pl.DataFrame:
    """The family over the whole contract market (computed once per process)."""
    tables = contract_tables()
    days = sessions_of(tables)
    return run(default_catalog().family(name), tables, days, days)


@each_family
def test_columns_dtypes_and_universe(family):
    tables = contract_tables()
    out = backfill(family.name)
    assert_contract(out, family, tables, sessions_of(tables))
    assert family.lookback >= max(spec.lookback for spec in family.features)
    # A column that is null everywhere on a market with every source is a silently broken
    # feature.
    empty = [c for c in family.columns if out[c].null_count() == out.height]
    assert not empty


@each_family
def test_emits_only_requested_dates(family):
    tables = contract_tables()
    days = sessions_of(tables)
    tail = days[-5:]
    assert run(family, tables, tail, days).equals(
        backfill(family.name).filter(pl.col("date").is_in(tail))
    )
    assert run(family, tables, [], days).is_empty()


def market_at(at: int):
    """The contract market, its sessions and the session at position ``at``."""
    tables = contract_tables()
    days = sessions_of(tables)
    return tables, days, days[at]


@each_family
@pytest.mark.parametrize("at", PERTURBED_AT)
def test_nothing_published_after_t_changes_a_row_dated_t_or_earlier(family, at):
    tables, days, t = market_at(at)
    base = backfill(family.name)
    moved = run(family, perturb_after(tables, t), days, days)
    changed = changed_columns(base.filter(pl.col("date") <= t), moved.filter(pl.col("date") <= t))
    assert not changed, f"rows dated on or before {t} changed in {changed}"
    # the rewrite reaches the family: its rows after t do change
    assert not base.filter(pl.col("date") > t).equals(moved.filter(pl.col("date") > t))


@each_family
@pytest.mark.parametrize("at", PERTURBED_AT)
def test_nightly_run_equals_backfill(family, at):
    """A run on t that reads only what was published by t gives the backfill's rows for t."""
    tables, days, t = market_at(at)
    nightly = run(family, until(tables, t), [t], days[: days.index(t) + 1])
    changed = changed_columns(backfill(family.name).filter(pl.col("date") == t), nightly)
    assert not changed, f"the nightly run on {t} differs from the backfill in {changed}"


@each_family
def test_lookback_sessions_of_history_are_enough(family):
    """With only ``lookback`` sessions of raw partitions before the first emitted date, the
    last 20 dates equal the backfill's (same nulls, values to rounding)."""
    tables = contract_tables()
    days = sessions_of(tables)
    tail = days[-20:]
    calendar = days[-(family.lookback + len(tail)) :]
    assert len(calendar) < len(days), "the contract market must be longer than the lookback"
    part = run(family, history_window(tables, calendar[0], calendar[-1]), tail, calendar)
    full = backfill(family.name).filter(pl.col("date").is_in(tail))
    assert part.select("date", "code").equals(full.select("date", "code"))
    rtol = LOOKBACK_RTOL.get(family.name, 1e-6)
    for name in family.columns:
        got = part[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        want = full[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        assert_matches(got, want, name, rtol=rtol, atol=rtol)


@pytest.mark.parametrize(
    "family",
    [f for f in _families() if "raw_statements" in f.sources],
    ids=lambda f: f.name,
)
def test_nightly_run_without_the_late_statements_equals_backfill(family):
    """On a day with disclosures after 18:00 (or without a time), the evening's run has not
    got them (the 24:30 update brings them); its rows still equal the backfill's."""
    tables = contract_tables()
    days = sessions_of(tables)
    time = pl.col("DiscTime").str.slice(0, 5)
    late_days = (
        tables[FINS]
        .filter((time.is_null() | (time > "18:00")) & pl.col("DiscDate").is_in(days[300:]))
        ["DiscDate"].unique().sort().to_list()
    )
    assert len(late_days) >= 3
    for t in late_days[:3]:
        nightly = run(family, until(tables, t), [t], days[: days.index(t) + 1])
        changed = changed_columns(backfill(family.name).filter(pl.col("date") == t), nightly)
        assert not changed, f"the nightly run on {t} differs from the backfill in {changed}"


@pytest.mark.parametrize("name", ["price", "technical"])
def test_long_halt_nightly_equals_backfill_for_250_day_features(name):
    """A stock halted for 15 sessions and one missing from the feed for 15 sessions inside
    the last 250: on the last session, a nightly run (what was published by then, only the
    family's lookback of raw partitions) gives the backfill's 250-bar values, and they are
    values, not nulls."""
    tables = contract_tables()
    days = sessions_of(tables)
    t = days[-1]
    family = default_catalog().family(name)
    window = lookback_window([t], family.lookback, days[0])
    nightly = run(family, history_window(until(tables, t), window[0], t), [t], window)
    full = backfill(name).filter(pl.col("date") == t)
    long_windows = [s.name for s in family.features if s.lookback >= 249]
    assert long_windows
    for code in long_gap_codes(tables):
        got = nightly.filter(pl.col("code") == code).select(long_windows).row(0)
        want = full.filter(pl.col("code") == code).select(long_windows).row(0)
        assert None not in want, f"{code}: a 250-bar window over a 15-session gap is null"
        assert_matches(np.array(got, float), np.array(want, float), f"{name} {code}", rtol=1e-6)


@each_family
def test_every_source_empty_gives_no_rows(family):
    days = sessions_of(contract_tables())[-30:]
    out = run(family, {}, days, days)
    assert_contract(out, family)
    assert out.is_empty()


@each_family
def test_bars_alone_give_the_full_universe(family):
    tables = {BARS: contract_tables()[BARS]}
    days = sessions_of(tables)
    dates = days[-30:]
    out = run(family, tables, dates, days)
    assert_contract(out, family, tables, dates)


@pytest.mark.parametrize("family", SLOW_SOURCE_FAMILIES, ids=lambda f: f.name)
def test_without_its_slow_source_quantities_are_null_and_flags_zero(family):
    tables = {BARS: contract_tables()[BARS]}
    days = sessions_of(tables)
    out = run(family, tables, days, days)
    assert_contract(out, family, tables, days)
    assert_no_source_values(out, family)


@pytest.mark.realdata
@pytest.mark.parametrize("family", SLOW_SOURCE_FAMILIES, ids=lambda f: f.name)
def test_real_replay_without_these_sources(realdata_dir, family):
    """The real replay has bars but none of these sources: the family still honours its
    contract on real bars (splits, halts), with quantities null and flags 0."""
    tables = real_tables(realdata_dir, n_codes=100, n_days=300)
    days = sessions_of(tables)
    out = run(family, tables, days)
    assert_contract(out, family)
    assert_no_source_values(out, family)
