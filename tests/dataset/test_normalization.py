from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import norm, rankdata

from atft_pipeline.dataset.normalization import (
    MAD_TO_STD,
    apply_normalization,
    compute_normalization_stats,
    cross_sectional_normalize,
    model_inputs,
)


@pytest.fixture
def rows() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    n = 5_003
    a = rng.standard_t(3, size=n) * 2 + 1
    b = rng.normal(size=n)
    b[rng.random(n) < 0.2] = np.nan  # nulls
    flag = (rng.random(n) < 0.05).astype(float)  # MAD = 0
    return pl.DataFrame(
        {"date": np.repeat(np.arange(n // 7 + 1), 7)[:n], "a": a, "b": b, "flag": flag}
    ).with_columns(pl.col("b").fill_nan(None))


def test_stats_equal_brute_force_numpy_over_all_rows(rows):
    stats = compute_normalization_stats(rows.lazy(), ["a", "b", "flag"], block=2)
    by = {r["feature"]: r for r in stats.iter_rows(named=True)}
    for c in ("a", "b"):
        x = rows[c].drop_nulls().to_numpy()
        med = np.median(x)
        mad = np.median(np.abs(x - med))
        assert by[c]["median"] == pytest.approx(med, abs=1e-12)
        assert by[c]["scale"] == pytest.approx(mad * MAD_TO_STD, abs=1e-12)
        assert by[c]["rows"] == rows.height
    assert by["b"]["null_fraction"] == pytest.approx(rows["b"].null_count() / rows.height)
    # zero-MAD flag falls back to its standard deviation
    assert by["flag"]["scale"] == pytest.approx(np.std(rows["flag"].to_numpy(), ddof=1))


def test_apply_normalization_clips_and_keeps_nulls(rows):
    stats = compute_normalization_stats(rows.lazy(), ["a", "b"])
    out = apply_normalization(rows.lazy(), stats).collect()
    assert out["b"].null_count() == rows["b"].null_count()
    assert out["a"].max() <= 5.0 + 1e-6 and out["a"].min() >= -5.0 - 1e-6
    s = stats.filter(pl.col("feature") == "a").row(0, named=True)
    i = 17
    expected = (min(max(rows["a"][i], s["clip_low"]), s["clip_high"]) - s["median"]) / s["scale"]
    assert out["a"][i] == pytest.approx(expected, rel=1e-5)


def test_cross_sectional_normalize_uses_only_same_date_values(rows):
    out = cross_sectional_normalize(rows.lazy(), ["a"]).collect()
    day = rows.filter(pl.col("date") == 3)["a"].to_numpy()
    z = (day - day.mean()) / day.std(ddof=1)
    np.testing.assert_allclose(out.filter(pl.col("date") == 3)["a"].to_numpy(), np.clip(z, -5, 5), rtol=1e-5)


# --------------------------------------------------------------------------- model inputs


@pytest.fixture
def panel_rows() -> pl.DataFrame:
    """Four dates of 40 stocks: ties, nulls, NaN, ±inf and one large outlier per date."""
    rng = np.random.default_rng(11)
    n_dates, n_stocks = 4, 40
    a = rng.standard_t(4, size=(n_dates, n_stocks)) + np.arange(n_dates)[:, None]  # level per date
    a[:, 0] = 60.0  # beyond 5 std of its date
    a[:, 1:4] = 0.5  # ties
    b = rng.normal(size=(n_dates, n_stocks))
    b[:, 5], b[:, 6], b[:, 7] = np.nan, np.inf, -np.inf
    frame = pl.DataFrame(
        {
            "date": np.repeat(np.arange(n_dates), n_stocks),
            "code": np.tile(np.arange(n_stocks), n_dates),
            "a": a.ravel(),
            "b": b.ravel(),
            "level": np.repeat(np.arange(n_dates, dtype=float), n_stocks),  # market-wide
        }
    )
    nulls = (pl.col("code") == 8) | ((pl.col("code") == 9) & (pl.col("date") == 2))
    return frame.with_columns(pl.when(nulls).then(None).otherwise(pl.col("b")).alias("b"))


def _per_date_reference(frame: pl.DataFrame, column: str, fn) -> np.ndarray:
    """fn over each date's finite values (numpy / scipy); 0 where the value is missing."""
    out = np.zeros(frame.height)
    dates = frame["date"].to_numpy()
    x = frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    for day in np.unique(dates):
        rows = (dates == day) & np.isfinite(x)
        out[rows] = fn(x[rows])
    return out


def _inputs(frame: pl.DataFrame, method: str, columns=("a", "b", "level")) -> pl.DataFrame:
    stats = compute_normalization_stats(frame.lazy(), list(columns))
    return model_inputs(frame.lazy(), columns, stats, method).collect()


def test_rank_inputs_are_per_date_normal_scores_of_finite_values(panel_rows):
    out = _inputs(panel_rows, "cross_sectional_rank")
    assert out.columns == ["a", "b", "level"] and set(out.dtypes) == {pl.Float32}
    for column in ("a", "b", "level"):
        expected = _per_date_reference(
            panel_rows, column, lambda x: norm.ppf((rankdata(x) - 0.5) / x.size)
        )
        np.testing.assert_allclose(out[column].to_numpy(), expected, rtol=1e-6, atol=1e-6)
    assert (out["level"] == 0).all()  # what every stock shares that day carries no ranking
    b = out["b"].to_numpy().reshape(4, 40)
    assert (b[:, 5:9] == 0).all() and b[2, 9] == 0  # NaN, ±inf and null: missing, then 0
    ties = out["a"].to_numpy().reshape(4, 40)[:, 1:4]
    assert (ties == ties[:, :1]).all()


def test_z_inputs_are_clipped_per_date_z_scores_of_finite_values(panel_rows):
    out = _inputs(panel_rows, "cross_sectional_z")
    for column in ("a", "b"):
        expected = _per_date_reference(
            panel_rows, column, lambda x: np.clip((x - x.mean()) / x.std(ddof=1), -5, 5)
        )
        np.testing.assert_allclose(out[column].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (out["a"].to_numpy().reshape(4, 40)[:, 0] == 5.0).all()  # the outlier is clipped
    assert (out["level"] == 0).all()
    assert (out["b"].to_numpy().reshape(4, 40)[:, 5:9] == 0).all()


def test_time_series_inputs_are_the_robust_normalization_with_nulls_zero(rows):
    stats = compute_normalization_stats(rows.lazy(), ["a", "b"])
    out = model_inputs(rows.lazy(), ["b", "a"], stats, "time_series").collect()
    expected = apply_normalization(rows.lazy(), stats).collect()
    assert out.columns == ["b", "a"]
    assert out.equals(expected.select(pl.col("b", "a").fill_null(0.0)))


@pytest.mark.parametrize("method", ["cross_sectional_z", "cross_sectional_rank"])
def test_cross_sectional_inputs_use_only_their_own_date(panel_rows, method):
    out = _inputs(panel_rows, method)
    other = pl.col("date") != 1
    changed = panel_rows.with_columns(
        pl.when(other).then(-3.0 * pl.col(c) + 100.0).otherwise(pl.col(c)).alias(c)
        for c in ("a", "b")
    )
    # drop some of another date's rows too: the date's cross-section is its own rows
    changed = changed.filter(~(other & (pl.col("code") > 30)))
    again = _inputs(changed, method)
    mine = (panel_rows["date"] == 1).to_numpy()
    assert again.filter((changed["date"] == 1).to_numpy()).equals(out.filter(mine))
    assert not again.filter((changed["date"] == 0).to_numpy())["a"].equals(
        out.filter((panel_rows["date"] == 0).to_numpy()).head(31)["a"]
    )


def test_unknown_input_normalization_is_refused(panel_rows):
    with pytest.raises(ValueError, match="unknown input normalization"):
        _inputs(panel_rows, "cross_sectional")
