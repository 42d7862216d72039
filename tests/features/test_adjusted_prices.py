"""Adjusted prices are computed in-house: partitions stored night by night, each with the
``Adj*`` the API showed that night, give the same features and targets as a one-shot fetch."""

from __future__ import annotations

import datetime as dt
import json
import math

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pydantic import SecretStr

from atft_pipeline.calendar import shift_trading_days, trading_days
from atft_pipeline.dataset.targets import compute_targets
from atft_pipeline.features.registry import compute_family, default_catalog
from atft_pipeline.jquants.adjustment import AdjustmentError, adjust_bars
from atft_pipeline.jquants.client import ClientConfig, JQuantsClient
from atft_pipeline.jquants.sources import RAW_SOURCES, fetch_raw_days
from atft_pipeline.sandbox.market import MarketConfig, generate_market
from atft_pipeline.sandbox.server import CLOCK_PATH, create_app
from atft_pipeline.settings import SANDBOX_API_KEY

SPLIT_CODE = "54840"  # 1:2 split (AdjFactor 0.5) on EX_DATE in this market
EX_DATE = dt.date(2024, 2, 20)
DAYS = trading_days("2024-02-01", "2024-03-08")
BARS = RAW_SOURCES["raw_daily_quotes"]


@pytest.fixture(scope="module")
def fetched() -> tuple[pl.DataFrame, pl.DataFrame]:
    """(partitions fetched each evening at 19:00, the same days fetched after the last)."""
    market = generate_market(
        MarketConfig(seed=11, n_stocks=40, start=dt.date(2024, 1, 4), end=dt.date(2024, 6, 28))
    )
    split = market.tables["equities/bars/daily"].filter(
        (pl.col("Code") == SPLIT_CODE) & (pl.col("Date") == EX_DATE)
    )
    assert split["AdjFactor"].to_list() == [0.5]
    app = create_app(market.tables)
    config = ClientConfig(
        base_url="http://stand-in/v2", api_key=SecretStr(SANDBOX_API_KEY), rate_limited=False,
        plan="premium",
    )

    async def fetch_all() -> tuple[pl.DataFrame, pl.DataFrame]:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(
                transport=transport, base_url="http://stand-in",
                headers={"x-api-key": SANDBOX_API_KEY},
            ) as admin,
            JQuantsClient(config, transport=transport) as client,
        ):
            async def at(moment: dt.datetime) -> None:
                response = await admin.put(CLOCK_PATH, content=json.dumps(
                    {"clock": moment.isoformat()}))
                assert response.status_code == 200

            nightly = []
            for day in DAYS:
                await at(dt.datetime.combine(day, dt.time(19, 0)))
                nightly.append((await fetch_raw_days(client, BARS, [day]))[day])
            await at(dt.datetime.combine(shift_trading_days(DAYS[-1], 1), dt.time(9, 0)))
            one_shot = await fetch_raw_days(client, BARS, DAYS)
        return pl.concat(nightly), pl.concat(one_shot[d] for d in DAYS)

    import asyncio

    return asyncio.run(fetch_all())


def _row(frame: pl.DataFrame, day: dt.date, column: str) -> float:
    return frame.filter((pl.col("Code") == SPLIT_CODE) & (pl.col("Date") == day))[column].item()


def test_stored_adjusted_columns_of_nightly_partitions_jump_at_the_split(fetched) -> None:
    """The defect the in-house adjustment removes: read as stored, the nightly partitions show
    a -69 % log return on the ex-date (the one-shot fetch shows the true move)."""
    nightly, one_shot = fetched
    before = shift_trading_days(EX_DATE, -1)
    stored_jump = math.log(_row(nightly, EX_DATE, "AdjC") / _row(nightly, before, "AdjC"))
    true_move = math.log(_row(one_shot, EX_DATE, "AdjC") / _row(one_shot, before, "AdjC"))
    assert stored_jump == pytest.approx(math.log(0.5) + true_move, abs=1e-9)
    assert abs(true_move) < 0.15


def test_features_from_nightly_partitions_equal_the_one_shot_fetch(fetched) -> None:
    nightly, one_shot = fetched
    family = default_catalog().family("price")
    got = compute_family(family, {BARS.asset: nightly.lazy()}, DAYS, DAYS)
    expected = compute_family(family, {BARS.asset: one_shot.lazy()}, DAYS, DAYS)
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
    logret = got.filter((pl.col("code") == SPLIT_CODE) & (pl.col("date") == EX_DATE))["logret_1d"]
    true_move = math.log(_row(one_shot, EX_DATE, "C") * 2 / _row(
        one_shot, shift_trading_days(EX_DATE, -1), "C"))
    assert logret.item() == pytest.approx(true_move, abs=1e-6)  # the feature is Float32
    assert abs(logret.item()) < 0.15


def test_targets_from_nightly_partitions_equal_the_one_shot_fetch(fetched) -> None:
    nightly, one_shot = fetched
    dates = DAYS[:-2]
    got = compute_targets(nightly.lazy(), DAYS, dates).collect().sort("date", "code")
    expected = compute_targets(one_shot.lazy(), DAYS, dates).collect().sort("date", "code")
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
    # target_1d two sessions before the ex-date holds the ex-date's move, not -50 %.
    entry_day = shift_trading_days(EX_DATE, -2)
    target = got.filter((pl.col("code") == SPLIT_CODE) & (pl.col("date") == entry_day))
    assert abs(target["target_1d"].item()) < 0.15


def test_adjust_bars_matches_a_direct_product() -> None:
    bars = pl.DataFrame(
        {
            "Date": [dt.date(2024, 1, d) for d in (4, 5, 9, 10, 11)] * 2,
            "Code": ["11110"] * 5 + ["22220"] * 5,
            "C": [100.0, 102, 51, 50, 52, 10, 11, 12, 120, 118],
            "Vo": [10.0, 10, 20, 20, 20, 5, 5, 5, 0.5, 0.5],
            "AdjFactor": [1.0, 1, 0.5, 1, 1, 1, 1, 1, 10, None],
            "AdjC": [0.0] * 10,  # stored values are never read
            "AdjVo": [0.0] * 10,
        }
    ).sample(fraction=1.0, shuffle=True, seed=1)
    out = adjust_bars(bars).sort("Code", "Date")
    # Carried forward from each code's first row: a 1:2 split doubles the later prices.
    assert out["AdjC"].to_list() == pytest.approx(
        [100.0, 102, 102, 100, 104, 10, 11, 12, 12, 11.8]
    )
    assert out["AdjVo"].to_list() == pytest.approx([10.0, 10, 10, 10, 10, 5, 5, 5, 5, 5])
    # Row d depends on factors up to d only: a later split leaves earlier rows as they were.
    later_split = bars.with_columns(
        pl.when(pl.col("Date") == dt.date(2024, 1, 11)).then(0.25).otherwise(pl.col("AdjFactor"))
        .alias("AdjFactor")
    )
    moved = adjust_bars(later_split).sort("Code", "Date")
    early = pl.col("Date") < dt.date(2024, 1, 11)
    assert_frame_equal(moved.filter(early), out.filter(early))
    with pytest.raises(AdjustmentError, match="'AdjO' but not 'O'"):
        adjust_bars(bars.with_columns(AdjO=pl.lit(1.0)))
