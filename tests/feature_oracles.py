"""Independent reference computations for the market, sector, graph and earnings feature tests.

Everything here is plain numpy over dense [session × code] matrices built straight from the
endpoint tables, so it shares no code with the Polars implementation it checks.
"""

from __future__ import annotations

import datetime as dt
import warnings
from functools import lru_cache

import numpy as np
import polars as pl

from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.features.catalog import FeatureFamily
from atft_pipeline.features.registry import compute_family
from atft_pipeline.jquants.endpoints import ENDPOINTS
from atft_pipeline.sandbox.market import MarketConfig, generate_market

BARS = "equities/bars/daily"
MASTER = "equities/master"
TOPIX = "indices/bars/daily/topix"
FINS = "fins/summary"
SANDBOX = MarketConfig(n_stocks=40, start=dt.date(2021, 1, 4), end=dt.date(2022, 6, 30))


@lru_cache(maxsize=1)
def sandbox_tables() -> dict[str, pl.DataFrame]:
    """The sandbox market's tables, with a few bar rows removed (days missing from the feed)
    so the session grid is exercised."""
    tables = dict(generate_market(SANDBOX).tables)
    bars = tables[BARS]
    codes = sorted(bars["Code"].unique())
    days = sorted(bars["Date"].unique())
    gaps = [
        (codes[1], days[100]), (codes[1], days[101]), (codes[2], days[200]), (codes[3], days[290])
    ]
    drop = pl.any_horizontal(
        (pl.col("Code") == code) & (pl.col("Date") == day) for code, day in gaps
    )
    tables[BARS] = bars.filter(~drop)
    return tables


def sessions_of(tables: dict[str, pl.DataFrame]) -> list[dt.date]:
    return sorted(tables[BARS]["Date"].unique().to_list())


def run(family: FeatureFamily, tables, dates, calendar) -> pl.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # polars: as-of sortedness with `by`
        return compute_family(family, raw_frames_from_tables(tables), list(dates), list(calendar))


def assert_contract(frame: pl.DataFrame, family: FeatureFamily, tables, dates) -> None:
    """Exact columns and dtypes, no NaN/inf, one row per listed (date, code) on ``dates``."""
    assert frame.columns == ["date", "code", *family.columns]
    for spec in family.features:
        assert frame.schema[spec.name] == spec.dtype, spec.name
        if spec.dtype.is_float():
            column = frame[spec.name]
            assert not (column.is_nan() | column.is_infinite()).any(), spec.name
    universe = (
        tables[BARS].filter(pl.col("Date").is_in(list(dates)))
        .select(pl.col("Date").alias("date"), pl.col("Code").alias("code"))
        .sort("date", "code")
    )
    assert frame.select("date", "code").equals(universe)


def real_tables(directory, n_codes: int, n_days: int) -> dict[str, pl.DataFrame]:
    """A slice of the real replay: the ``n_codes`` codes with most rows, last ``n_days``."""
    from atft_pipeline.sandbox.replay import read_replay

    tables = read_replay(directory)
    bars = tables[BARS]
    days = sorted(bars["Date"].unique())[-n_days:]
    by_rows = bars.group_by("Code").len().sort(["len", "Code"], descending=[True, False])
    codes = by_rows["Code"][:n_codes]
    keep_codes = pl.col("Code").is_in(codes.to_list())
    out = {
        BARS: bars.filter(keep_codes & pl.col("Date").is_in(days)),
        TOPIX: tables[TOPIX].filter(pl.col("Date").is_in(days)),
        MASTER: tables[MASTER].filter(keep_codes & (pl.col("Date") <= days[-1])),
    }
    return out


class Panel:
    """Dense [session × code] matrices of a bars table on a session list."""

    def __init__(self, bars: pl.DataFrame, sessions: list[dt.date]) -> None:
        self.sessions = list(sessions)
        self.codes = sorted(bars["Code"].unique().to_list())
        s_index = {d: i for i, d in enumerate(self.sessions)}
        c_index = {c: i for i, c in enumerate(self.codes)}
        shape = (len(self.sessions), len(self.codes))
        self.close = np.full(shape, np.nan)
        self.volume = np.full(shape, np.nan)
        self.turnover = np.full(shape, np.nan)
        self.listed = np.zeros(shape, dtype=bool)
        for row in bars.iter_rows(named=True):
            i, j = s_index[row["Date"]], c_index[row["Code"]]
            self.listed[i, j] = True
            close = row["AdjC"]
            self.close[i, j] = close if close is not None and close > 0 else np.nan
            self.volume[i, j] = np.nan if row["AdjVo"] is None else row["AdjVo"]
            va = row["Va"]
            if va is None and row["C"] is not None and row["Vo"] is not None:
                va = row["C"] * row["Vo"]
            self.turnover[i, j] = np.nan if va is None else va
        self.ret1 = np.full(shape, np.nan)
        self.ret1[1:] = self.close[1:] / self.close[:-1] - 1.0
        self._cache: dict[tuple, np.ndarray] = {}

    def session(self, day: dt.date) -> int:
        return self.sessions.index(day)

    def code(self, code: str) -> int:
        return self.codes.index(code)

    def ret(self, n: int) -> np.ndarray:
        """n-session return from the last known close on or before t-n to today's close."""
        if n == 1:
            return self.ret1
        if ("ret", n) not in self._cache:
            ff = forward_fill(self.close)
            out = np.full_like(self.close, np.nan)
            out[n:] = self.close[n:] / ff[:-n] - 1.0
            self._cache["ret", n] = out
        return self._cache["ret", n]

    def sma_flag(self, window: int, min_obs: int) -> np.ndarray:
        """close > mean of the observed closes of the last ``window`` sessions (≥ min_obs)."""
        if ("sma", window, min_obs) in self._cache:
            return self._cache["sma", window, min_obs]
        out = np.full_like(self.close, np.nan)
        for t in range(len(self.sessions)):
            block = self.close[max(0, t - window + 1) : t + 1]
            count = np.isfinite(block).sum(axis=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(block, axis=0)
            ok = (count >= min_obs) & np.isfinite(self.close[t])
            out[t, ok] = (self.close[t, ok] > mean[ok]).astype(float)
        self._cache["sma", window, min_obs] = out
        return out


def forward_fill(matrix: np.ndarray) -> np.ndarray:
    out = matrix.copy()
    for t in range(1, out.shape[0]):
        missing = np.isnan(out[t])
        out[t, missing] = out[t - 1, missing]
    return out


def window(matrix: np.ndarray, t: int, length: int) -> np.ndarray:
    return matrix[max(0, t - length + 1) : t + 1]


def regression(y: np.ndarray, x: np.ndarray, min_obs: int) -> dict[str, float] | None:
    """OLS y = a + b x over the pairs where both are observed (numpy lstsq)."""
    ok = np.isfinite(y) & np.isfinite(x)
    if ok.sum() < min_obs:
        return None
    y, x = y[ok], x[ok]
    design = np.column_stack([np.ones_like(x), x])
    (alpha, beta), *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - alpha - beta * x
    return {
        "alpha": alpha,
        "beta": beta,
        "resid_std": float(np.sqrt(resid @ resid / (ok.sum() - 2))),
        "corr": float(np.corrcoef(x, y)[0, 1]),
    }


def asof_master(master: pl.DataFrame, code: str, day: dt.date) -> dict | None:
    """The latest master row of ``code`` with Date <= day (plain filtering)."""
    rows = master.filter((pl.col("Code") == code) & (pl.col("Date") <= day)).sort("Date")
    return rows.row(-1, named=True) if rows.height else None


def until(tables: dict[str, pl.DataFrame], t: dt.date) -> dict[str, pl.DataFrame]:
    """The tables as a nightly run on t sees them: nothing dated after t."""
    out = {}
    for path, table in tables.items():
        date_field = ENDPOINTS[path].date_field
        out[path] = table.filter(pl.col(date_field) <= t) if date_field in table.columns else table
    return out


def perturb_after(tables: dict[str, pl.DataFrame], t: dt.date) -> dict[str, pl.DataFrame]:
    """Every row dated (by its endpoint's date field) after t changed: numbers scaled,
    strings altered, and one extra row per table appended after t."""
    out = {}
    for path, table in tables.items():
        endpoint = ENDPOINTS[path]
        date_field = endpoint.date_field or "Date"
        if date_field not in table.columns or table.is_empty():
            out[path] = table
            continue
        later = pl.col(date_field) > t
        changes = []
        for name, dtype in table.schema.items():
            if name in (date_field, "Code"):
                continue
            if dtype == pl.Float64:
                moved_value = pl.col(name) * 1.7 + 3.0
            elif dtype == pl.String:
                moved_value = pl.lit("9050")
            else:
                continue
            changes.append(pl.when(later).then(moved_value).otherwise(pl.col(name)).alias(name))
        moved = table.with_columns(changes)
        if path == FINS:  # a new report right after t, and a revision
            extra = moved.filter(later).head(2).with_columns(
                pl.lit("FYFinancialStatements_Consolidated_JP").alias("DocType"),
                pl.lit("12:00:00").alias("DiscTime"),
            )
            moved = pl.concat([moved, extra])
        out[path] = moved
    return out
