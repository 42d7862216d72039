"""What the tests share: running a feature family, the sandbox market and slices of the real
replay, point-in-time rewrites of endpoint tables by each source's publication rule,
independent numpy references, hand-built bars, and a small synthetic ``ml_dataset``.

The numpy references work on dense [session × code] matrices or per-stock arrays built
straight from the endpoint tables, so they share no code with the Polars implementation they
check.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from dagster import DagsterInstance, instance_for_test

from assets.instance import event_log_storage_config
from atft_pipeline import calendar
from atft_pipeline.dataset.normalization import compute_normalization_stats
from atft_pipeline.dataset.raw_frames import raw_frames_from_tables
from atft_pipeline.features import margin_daily
from atft_pipeline.features.catalog import HORIZONS, META_COLUMNS, TARGET_COLUMNS, FeatureFamily
from atft_pipeline.features.registry import compute_family
from atft_pipeline.jquants.endpoints import ENDPOINTS
from atft_pipeline.jquants.reference import MARKET_SEGMENTS, SECTOR33
from atft_pipeline.jquants.sources import RAW_SOURCES, RawSource
from atft_pipeline.sandbox.market import MarketConfig, generate_market

REPO_ROOT = Path(__file__).resolve().parent.parent

BARS = "equities/bars/daily"
MASTER = "equities/master"
TOPIX = "indices/bars/daily/topix"
FINS = "fins/summary"
SANDBOX = MarketConfig(n_stocks=40, start=dt.date(2021, 1, 4), end=dt.date(2022, 6, 30))
# Longer than the longest family lookback (400 sessions), so that cutting the history to a
# family's lookback really drops rows.
CONTRACT_MARKET = MarketConfig(
    n_stocks=24,
    start=dt.date(2020, 7, 1),
    end=dt.date(2022, 6, 30),
    # both margin-interest regimes: weekly rows, then daily rows with PubDate
    margin_interest_daily_from=dt.date(2022, 3, 1),
    # late filings (after 18:00 or without a time), restatements and more splits throughout
    event_window_start=dt.date(2020, 7, 2),
    event_late_filing_share=0.5,
)
LONG_GAP = 15  # sessions of the contract market's long halt and long feed gap


# --------------------------------------------------------------------------------------
# Running a family and checking its contract


def run(family: FeatureFamily, tables, dates, calendar_days=None) -> pl.DataFrame:
    """The family's rows on ``dates`` from endpoint ``tables``, over the trading days
    ``calendar_days`` (default: ``dates``)."""
    calendar_days = dates if calendar_days is None else calendar_days
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # polars: as-of sortedness with `by`
        return compute_family(
            family, raw_frames_from_tables(tables), list(dates), list(calendar_days)
        )


def assert_contract(frame: pl.DataFrame, family: FeatureFamily, tables=None, dates=None) -> None:
    """Exact columns and dtypes, no NaN/inf; with ``tables``, one row per listed (date, code)
    on ``dates``."""
    assert frame.columns == ["date", "code", *family.columns]
    for spec in family.features:
        assert frame.schema[spec.name] == spec.dtype, spec.name
        if spec.dtype.is_float():
            column = frame[spec.name]
            assert not (column.is_nan() | column.is_infinite()).any(), spec.name
    if tables is not None:
        universe = (
            tables[BARS].filter(pl.col("Date").is_in(list(dates)))
            .select(pl.col("Date").alias("date"), pl.col("Code").alias("code"))
            .sort("date", "code")
        )
        assert frame.select("date", "code").equals(universe)


def table(path: str, rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ENDPOINTS[path].schema())


def value(frame: pl.DataFrame, day: dt.date, code: str, column: str):
    return frame.filter((pl.col("date") == day) & (pl.col("code") == code))[column].item()


def close_enough(got, want, rel=2e-6) -> bool:
    if want is None or (isinstance(want, float) and not math.isfinite(want)):
        return got is None
    return got is not None and math.isclose(got, want, rel_tol=rel, abs_tol=1e-6)


# Without its source a family's quantities are null; flags and counts are 0, "sessions
# since the last alert" is "at least the cap" once a stock has that much history, and the
# rank of equal (zero) short positions is the average rank.
NO_SOURCE_VALUE = {
    "mrgd_days_since_alert": float(margin_daily.SINCE_ALERT_CAP),
    "shrt_pos_sum_rank": 0.5,
}


def assert_no_source_values(frame: pl.DataFrame, family) -> None:
    for spec in family.features:
        column = frame[spec.name].drop_nulls()
        assert (column == NO_SOURCE_VALUE.get(spec.name, 0.0)).all(), spec.name


# --------------------------------------------------------------------------------------
# The sandbox market and the real replay


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


@lru_cache(maxsize=1)
def contract_tables() -> dict[str, pl.DataFrame]:
    """The market every family's contract is checked on (built once per process): every raw
    source present, with a few bar rows removed (days missing from the feed), and two long
    gaps inside the last 250 sessions, so that a 250-bar window of the last dates spans more
    than 250 sessions: one stock halted for ``LONG_GAP`` sessions (rows without prices) and
    one missing from the feed for as long (no rows)."""
    tables = dict(generate_market(CONTRACT_MARKET).tables)
    bars = tables[BARS]
    codes = sorted(bars["Code"].unique())
    days = sorted(bars["Date"].unique())
    gaps = [(codes[1], days[300]), (codes[2], days[301]), (codes[3], days[450])]
    halted_code, missing_code = long_gap_codes(tables)
    gaps += [(missing_code, day) for day in days[-120 : -120 + LONG_GAP]]
    drop = pl.any_horizontal(
        (pl.col("Code") == code) & (pl.col("Date") == day) for code, day in gaps
    )
    halted = (pl.col("Code") == halted_code) & pl.col("Date").is_in(
        days[-150 : -150 + LONG_GAP]
    )
    # a halted row, as the market writes one: no prices or volumes, no limit flags
    quantities = [c for c, t in bars.schema.items() if t.is_float() and c != "AdjFactor"]
    flags = [c for c, t in bars.schema.items() if t == pl.Boolean]
    tables[BARS] = bars.filter(~drop).with_columns(
        *(pl.when(halted).then(None).otherwise(pl.col(c)).alias(c) for c in quantities),
        *(pl.when(halted).then(False).otherwise(pl.col(c)).alias(c) for c in flags),
    )
    return tables


def long_gap_codes(tables: dict[str, pl.DataFrame]) -> tuple[str, str]:
    """The contract market's stock with the long halt and the one with the long feed gap."""
    codes = sorted(tables[BARS]["Code"].unique())
    return codes[4], codes[5]


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


def traded_bars(bars: pl.DataFrame, code: str) -> dict[str, np.ndarray]:
    """The code's bars with prices, in date order, as float arrays (trading value: Va, else
    raw C × Vo)."""
    rows = bars.filter((pl.col("Code") == code) & pl.col("AdjC").is_not_null()).sort("Date")
    turnover = rows.select(pl.coalesce("Va", pl.col("C") * pl.col("Vo")))
    return {
        "date": np.array(rows["Date"].to_list(), dtype=object),
        "open": rows["AdjO"].to_numpy().astype(float),
        "high": rows["AdjH"].to_numpy().astype(float),
        "low": rows["AdjL"].to_numpy().astype(float),
        "close": rows["AdjC"].to_numpy().astype(float),
        "volume": rows["AdjVo"].to_numpy().astype(float),
        "turnover": turnover.to_series().to_numpy().astype(float),
        "raw_close": rows["C"].to_numpy().astype(float),
    }


def lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if k < len(x):
        out[k:] = x[: len(x) - k]
    return out


def trailing(x: np.ndarray, window: int, fn: Callable[..., np.ndarray]) -> np.ndarray:
    """``fn(blocks, axis=-1)`` over every full trailing window (a window holding NaN gives
    NaN); ``fn`` is a numpy reduction such as ``np.mean``."""
    out = np.full(len(x), np.nan)
    if len(x) >= window:
        blocks = np.lib.stride_tricks.sliding_window_view(x, window)
        ok = np.isfinite(blocks).all(axis=1)
        if ok.any():
            out[window - 1 :][ok] = fn(blocks[ok], axis=-1)
    return out


def column_on(out: pl.DataFrame, code: str, column: str, dates) -> np.ndarray:
    """``column`` of ``code`` on ``dates`` (NaN where null)."""
    rows = out.filter(pl.col("code") == code).select("date", column)
    got = dict(zip(rows["date"], rows[column], strict=True))
    return np.array([np.nan if got[d] is None else got[d] for d in dates], dtype=float)


def assert_matches(got, want, name: str, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """Same null pattern and values to ``rtol`` (the family emits Float32: ~6e-8)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    differ = np.isnan(got) != np.isnan(want)
    assert not differ.any(), (
        f"{name}: null pattern differs at {np.flatnonzero(differ)[:5]} "
        f"(got {got[differ][:3]}, want {want[differ][:3]})"
    )
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=atol, err_msg=name)


def assert_warmup(out: pl.DataFrame, family: FeatureFamily, bars: pl.DataFrame, skip=()) -> None:
    """Every price-series column is null before bar ``lookback`` of its stock's series, and
    defined there for some stock (the lookback is exact, not just conservative)."""
    positions = (
        bars.filter(pl.col("AdjC").is_not_null())
        .select(
            pl.col("Date").alias("date"),
            pl.col("Code").alias("code"),
            pl.col("Date").rank("ordinal").over("Code").sub(1).alias("_bar"),
        )
    )
    frame = out.join(positions, on=["date", "code"], how="inner")
    for spec in family.features:
        if spec.name in skip:
            continue
        early = frame.filter(pl.col("_bar") < spec.lookback)[spec.name]
        assert early.null_count() == early.len(), f"{spec.name}: value before warm-up"
        first = frame.filter(pl.col("_bar") == spec.lookback)[spec.name]
        assert first.null_count() < first.len(), f"{spec.name}: null at bar {spec.lookback}"


def real_slice(directory, n_codes: int = 40, n_days: int = 300):
    """The last ``n_days`` of the real replay for ``n_codes`` codes: every code with a halted
    row and every code traded on the sparse feed days, topped up with the most-traded codes.
    Returns (tables, calendar)."""
    from atft_pipeline.sandbox.replay import read_replay

    tables = read_replay(directory)
    calendar = sorted(
        tables["markets/calendar"].filter(pl.col("HolDiv") == "1")["Date"].to_list()
    )[-n_days:]
    bars = tables[BARS].filter(pl.col("Date") >= calendar[0])
    per_day = bars.group_by("Date").len()
    sparse = per_day.filter(pl.col("len") < 0.1 * pl.col("len").max())["Date"]
    special = bars.filter(pl.col("C").is_null() | pl.col("Date").is_in(sparse.implode()))["Code"]
    ranked = bars.group_by("Code").len().sort(["len", "Code"], descending=[True, False])["Code"]
    codes = list(dict.fromkeys([*sorted(special.unique()), *ranked]))[:n_codes]
    return {BARS: bars.filter(pl.col("Code").is_in(codes))}, calendar


# --------------------------------------------------------------------------------------
# Point in time: which rows of an endpoint table a run on day t may see


def _source_of(path: str) -> RawSource | None:
    return next((s for s in RAW_SOURCES.values() if s.endpoint.path == path), None)


def published_after(path: str, t: dt.date) -> pl.Expr | None:
    """Rows of endpoint table ``path`` that land in a raw partition dated after ``t`` (the
    source's publication rule in ``RAW_SOURCES``); None for tables no raw source reads."""
    source = _source_of(path)
    if source is None:
        return None
    return _in_partitions(source, pl.col(source.endpoint.date_field) > source.row_date(t), ">", t)


def _in_partitions(source: RawSource, by_query: pl.Expr, op: str, *days: dt.date) -> pl.Expr:
    """``by_query`` (a condition on the query's date field), except for rows that carry their
    publication date where the source also fetches by it: their partition is ``PubDate``."""
    if source.published_query is None:
        return by_query
    pub = pl.col("PubDate")
    on_pub = pub > days[0] if op == ">" else pub.is_between(*days)
    return pl.when(pub.is_not_null()).then(on_pub).otherwise(by_query)


def until(tables: dict[str, pl.DataFrame], t: dt.date) -> dict[str, pl.DataFrame]:
    """The tables as a nightly run on t sees them: nothing published after t, and none of
    t's statements disclosed after 18:00 or without a time (the 24:30 update brings them)."""
    out = {}
    for path, table in tables.items():
        later = published_after(path, t)
        out[path] = table if later is None else table.filter(~later)
    if FINS in out:
        time = pl.col("DiscTime").str.slice(0, 5)
        late = time.is_null() | (time > "18:00")
        out[FINS] = out[FINS].filter(~((pl.col("DiscDate") == t) & late))
    return out


def history_window(
    tables: dict[str, pl.DataFrame], start: dt.date, end: dt.date
) -> dict[str, pl.DataFrame]:
    """The rows of the raw partitions dated ``start`` .. ``end`` (what a run whose history
    starts at ``start`` reads)."""
    out = {}
    for path, table in tables.items():
        source = _source_of(path)
        if source is None:
            out[path] = table
            continue
        date = pl.col(source.endpoint.date_field)
        by_query = date.is_between(source.row_date(start), source.row_date(end))
        out[path] = table.filter(_in_partitions(source, by_query, "between", start, end))
    return out


def _corrections_allowed(source: RawSource) -> bool:
    """A later row with the same key is a legitimate event (a restatement, a correction)
    where the partition is a publication or disclosure date, not a trade date."""
    return source.date_semantics.startswith(("publication", "disclosure"))


def perturb_after(
    tables: dict[str, pl.DataFrame], t: dt.date, seed: int = 11
) -> dict[str, pl.DataFrame]:
    """Change every row published after t (by its source's publication rule): numbers scaled
    by random factors, flags flipped, splits added, text values shuffled among those rows,
    a fifth of them deleted and, where the source has corrections, late corrections
    appended. Rows published on or before t are left exactly as they are."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, frame in tables.items():
        later = published_after(path, t)
        if later is None or frame.is_empty():
            out[path] = frame
            continue
        hit = pl.Series(frame.select(later).to_series().fill_null(False))
        n_hit = int(hit.sum())
        factor = pl.Series(rng.uniform(0.2, 5.0, frame.height))
        split = pl.Series(rng.random(frame.height) < 0.02)
        changes = []
        for column, dtype in frame.schema.items():
            if column == "AdjFactor":  # a few splits after t, not a random walk of factors
                moved = pl.when(hit & split).then(0.5).otherwise(pl.col(column))
            elif dtype == pl.Float64:
                moved = pl.when(hit).then(pl.col(column) * factor).otherwise(pl.col(column))
            elif dtype == pl.Boolean:
                moved = pl.when(hit).then(~pl.col(column).fill_null(False)).otherwise(pl.col(column))
            elif dtype == pl.String and column != "Code" and n_hit > 1:
                shuffled = frame.filter(hit)[column].gather(rng.permutation(n_hit))
                moved = pl.lit(frame[column].clone().scatter(hit.arg_true(), shuffled))
            else:
                continue
            changes.append(moved.alias(column))
        changed = frame.with_columns(changes)
        draw = pl.Series(rng.random(frame.height))
        kept = changed.filter(~hit | (draw > 0.2))
        if _corrections_allowed(_source_of(path)):
            corrections = changed.filter(hit & (draw > 0.8)).with_columns(
                [pl.col(c) * 1.5 for c, dtype in frame.schema.items() if dtype == pl.Float64]
            )
            kept = pl.concat([kept, corrections])
        out[path] = kept
    return out


# --------------------------------------------------------------------------------------
# Dense [session × code] references


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


# --------------------------------------------------------------------------------------
# Hand-built bars


def bars_rows(code: str, days: list[dt.date], splits: dict[dt.date, float] | None = None, seed=0):
    rng = np.random.default_rng(seed)
    rows, price = [], 1000.0
    for day in days:
        factor = (splits or {}).get(day, 1.0)
        price = price * factor * math.exp(rng.normal(0.0, 0.02))
        volume = float(rng.integers(1_000, 9_000)) / factor
        rows.append(
            {
                "Date": day,
                "Code": code,
                "C": price,
                "AdjC": price,
                "AdjFactor": factor,
                "Vo": volume,
                "AdjVo": volume,
                "Va": price * volume,
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# A small synthetic ml_dataset


SECTOR_CODES = sorted(SECTOR33)
SEGMENT_CODES = sorted(MARKET_SEGMENTS)

RETURN_COLUMN = "logret_1d"
SIGNAL_COLUMN = "signal"
N_CLUSTERS = 4


def make_dataset(
    n_stocks: int = 24, n_dates: int = 120, n_noise: int = 3, seed: int = 0
) -> pl.DataFrame:
    """A small ``ml_dataset``-shaped frame with a planted signal and a correlation structure.

    * ``signal`` (feature) predicts every target: target_h = 0.02·signal + noise·√h, so a model
      that reads the window's last step can reach a high RankIC;
    * ``logret_1d`` (the raw return behind the graphs) has a cluster factor: stocks i and j
      with i ≡ j (mod 4) are correlated at ρ ≈ 0.9, other pairs ≈ 0;
    * ``scaled`` is noise at a large scale and offset (normalization must bring it to O(1));
      noise features have ~10 % nulls;
    * stock 1 lists 30 dates late (no rows before), stock 2 is outside the universe on its
      first 10 dates, stock 3 has sector "9999" and stock 4 an unknown market code;
    * targets are null where they would run past the data (the last 1 + h dates).
    """
    rng = np.random.default_rng(seed)
    start = dt.date(2020, 1, 6)
    days = calendar.trading_days(start, start + dt.timedelta(days=2 * n_dates + 30))[:n_dates]
    codes = [f"{1301 + i:04d}0" for i in range(n_stocks)]
    d, n = len(days), n_stocks
    signal = rng.standard_normal((d, n))
    factors = rng.standard_normal((d, N_CLUSTERS))
    cluster = np.arange(n) % N_CLUSTERS
    logret = 0.01 * (factors[:, cluster] + 0.35 * rng.standard_normal((d, n)))
    columns: dict[str, np.ndarray] = {
        SIGNAL_COLUMN: signal,
        RETURN_COLUMN: logret,
        "scaled": 1_000.0 + 250.0 * rng.standard_normal((d, n)),
    }
    for k in range(n_noise):
        noise = rng.standard_normal((d, n))
        noise[rng.random((d, n)) < 0.1] = np.nan
        columns[f"noise_{k}"] = noise
    targets = {}
    for h, name in zip(HORIZONS, TARGET_COLUMNS, strict=True):
        value = 0.02 * signal + 0.01 * np.sqrt(h) * rng.standard_normal((d, n))
        value[d - 1 - h :] = np.nan  # not known yet at the end of the data
        targets[name] = value
    day_idx, code_idx = np.meshgrid(np.arange(d), np.arange(n), indexing="ij")
    sectors = np.array(SECTOR_CODES)[np.arange(n) % len(SECTOR_CODES)].astype(object)
    sectors[3] = "9999"
    segments = np.array(SEGMENT_CODES)[np.arange(n) % len(SEGMENT_CODES)].astype(object)
    segments[4] = "0199"
    universe = np.ones((d, n), dtype=bool)
    universe[:10, 2] = False
    frame = pl.DataFrame(
        {
            "date": pl.Series(np.array(days, dtype="datetime64[D]")[day_idx.ravel()]).cast(pl.Date),
            "code": np.array(codes)[code_idx.ravel()],
            "sector33": sectors[code_idx.ravel()],
            "market_segment": segments[code_idx.ravel()],
            "universe": universe.ravel(),
            **{k: v.ravel().astype(np.float32) for k, v in columns.items()},
            **{k: v.ravel().astype(np.float32) for k, v in targets.items()},
        }
    ).with_columns(pl.col([*columns, *targets]).fill_nan(None))
    late = (pl.col("code") == codes[1]) & (pl.col("date") < days[30])
    return frame.filter(~late)


def feature_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in META_COLUMNS and c not in TARGET_COLUMNS]


def make_stats(frame: pl.DataFrame, train_end: dt.date | None = None) -> pl.DataFrame:
    rows = frame.lazy() if train_end is None else frame.lazy().filter(pl.col("date") <= train_end)
    return compute_normalization_stats(rows, feature_columns(frame))


# --------------------------------------------------------------------------------------
# Dagster


@contextmanager
def atft_test_instance() -> Iterator[DagsterInstance]:
    """A temporary Dagster instance that stores events as an ``ATFT_HOME`` instance does
    (batched, ``assets/event_storage.py``)."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as home:
        overrides = {"event_log_storage": event_log_storage_config(Path(home))}
        with instance_for_test(overrides=overrides, temp_dir=home) as instance:
            yield instance
