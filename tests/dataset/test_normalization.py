from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from atft_pipeline.dataset.normalization import (
    MAD_TO_STD,
    apply_normalization,
    compute_normalization_stats,
    cross_sectional_normalize,
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
