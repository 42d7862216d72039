"""Training panel: dense tensors from an ml_dataset frame, window gathering, per-date graphs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import norm, rankdata

from atft_pipeline.dataset.normalization import apply_normalization, stats_hash
from atft_pipeline.features.catalog import HORIZONS, TARGET_COLUMNS
from atft_pipeline.features.graph_builder import GraphConfig, correlation_graph
from atft_pipeline.model import ATFTGATFAN, ModelConfig
from atft_pipeline.model.config import N_SECTORS, N_SEGMENTS
from atft_pipeline.training.panel import OTHER_SECTOR_ID, UNKNOWN_SEGMENT_ID, Panel, PanelError
from atft_pipeline.training.predict import check_model_fits_panel
from tests.helpers import (
    N_CLUSTERS,
    RETURN_COLUMN,
    SECTOR_CODES,
    SEGMENT_CODES,
    feature_columns,
    make_dataset,
    make_stats,
)

GRAPH = GraphConfig(window=20, k=4, threshold=0.3, min_obs=14)


@pytest.fixture(scope="module")
def dataset() -> pl.DataFrame:
    return make_dataset()


@pytest.fixture(scope="module")
def panel(dataset) -> Panel:
    return Panel.from_dataset(
        dataset, make_stats(dataset), return_column=RETURN_COLUMN, window=5, graph=GRAPH
    )


def _cell(frame: pl.DataFrame, day: dt.date, code: str) -> dict:
    rows = frame.filter((pl.col("date") == day) & (pl.col("code") == code))
    return rows.row(0, named=True) if rows.height else {}


def test_shapes_axes_and_static_vocabularies(dataset, panel):
    features = feature_columns(dataset)
    d, n = dataset["date"].n_unique(), dataset["code"].n_unique()
    assert panel.features.shape == (d, n, len(features)) and panel.features.dtype == torch.float32
    assert panel.valid.shape == (d, n) and panel.valid.dtype == torch.bool
    assert panel.targets.shape == (d, n, len(HORIZONS)) and panel.targets.dtype == torch.float32
    assert panel.sector_ids.shape == panel.segment_ids.shape == panel.returns.shape == (d, n)
    assert list(panel.dates) == sorted(dataset["date"].unique().to_list())
    assert list(panel.codes) == sorted(dataset["code"].unique().to_list())
    assert panel.feature_columns == tuple(features)
    assert panel.stats_hash == stats_hash(make_stats(dataset))
    # vocabulary: S33 codes in order, then "9999"; market codes in order, then "unknown"
    assert OTHER_SECTOR_ID == 33 == N_SECTORS - 1
    assert UNKNOWN_SEGMENT_ID == len(SEGMENT_CODES) == N_SEGMENTS - 1
    t = panel.n_dates - 1
    assert panel.sector_ids[t, 0] == 0 and panel.sector_ids[t, 7] == SECTOR_CODES.index("3250")
    assert panel.sector_ids[t, 3] == OTHER_SECTOR_ID  # "9999"
    assert panel.segment_ids[t, 5] == 5 and SEGMENT_CODES[5] == "0107"
    assert panel.segment_ids[t, 4] == UNKNOWN_SEGMENT_ID  # "0199" is no known market code
    unknown = dataset.with_columns(pl.lit(None, pl.String).alias("sector33"))
    bare = Panel.from_dataset(
        unknown, make_stats(dataset), return_column=RETURN_COLUMN, window=5, graph=GRAPH
    )
    assert (bare.sector_ids == OTHER_SECTOR_ID).all()


def test_valid_mask_is_row_present_and_in_universe(dataset, panel):
    expected = np.zeros((panel.n_dates, panel.n_stocks), dtype=bool)
    day = {d: i for i, d in enumerate(panel.dates)}
    code = {c: i for i, c in enumerate(panel.codes)}
    for row in dataset.select("date", "code", "universe").iter_rows():
        expected[day[row[0]], code[row[1]]] = row[2]
    assert np.array_equal(panel.valid.numpy(), expected)
    assert not panel.valid[:30, 1].any() and panel.valid[30:, 1].all()  # listed late
    assert not panel.valid[:10, 2].any() and panel.valid[10:, 2].all()  # outside the universe


def test_targets_keep_nan_where_unknown_and_never_zero(dataset, panel):
    targets = panel.targets.numpy()
    for h_index, (h, name) in enumerate(zip(HORIZONS, TARGET_COLUMNS, strict=True)):
        # the last 1 + h dates are unknown for every stock; before that known where a row exists
        assert np.isnan(targets[-(1 + h) :, :, h_index]).all()
        assert np.isfinite(targets[: -(1 + h), 0, h_index]).all()
        assert np.isnan(targets[:30, 1, h_index]).all()  # no rows before listing: NaN, not 0
        assert dataset[name].null_count() == int(np.isnan(targets[..., h_index]).sum()) - 30
    cell = _cell(dataset, panel.dates[40], panel.codes[7])
    assert targets[40, 7, 0] == np.float32(cell["target_1d"])
    assert not (targets == 0).any()


def test_features_are_normalized_nulls_zero_and_returns_raw(dataset, panel):
    stats = make_stats(dataset)
    normalized = apply_normalization(dataset.lazy(), stats).collect()
    t, j = 50, 9
    cell = _cell(normalized, panel.dates[t], panel.codes[j])
    raw = _cell(dataset, panel.dates[t], panel.codes[j])
    for f, name in enumerate(panel.feature_columns):
        expected = 0.0 if cell[name] is None else cell[name]
        assert panel.features[t, j, f].item() == pytest.approx(expected, abs=1e-6), name
    scaled = panel.features[..., panel.feature_columns.index("scaled")]
    assert scaled[panel.valid].abs().mean() < 2.0  # raw values are ~1000
    # a null became exactly 0; a missing row is all zeros
    noise = dataset.select("date", "code", "noise_0").filter(pl.col("noise_0").is_null()).row(0)
    f = panel.feature_columns.index("noise_0")
    assert panel.features[panel.dates.index(noise[0]), panel.codes.index(noise[1]), f] == 0.0
    assert (panel.features[:30, 1] == 0).all()
    # returns are the raw column, before normalization; NaN where no row
    assert panel.returns[t, j].item() == pytest.approx(raw[RETURN_COLUMN], rel=1e-6)
    assert torch.isnan(panel.returns[:30, 1]).all()


def test_date_indices_select_the_window(panel):
    idx = panel.date_indices(panel.dates[10], panel.dates[19])
    assert idx.tolist() == list(range(10, 20))
    assert panel.date_indices(dt.date(1999, 1, 1), dt.date(1999, 12, 31)).size == 0


def test_gather_equals_manual_window_slicing(panel):
    window = panel.window
    date_idx = [2, 57, 31]  # date 2 has a window reaching before the panel's first date
    batch = panel.gather(date_idx, with_graph=False)
    features = panel.features.numpy()
    valid = panel.valid.numpy()
    row = 0
    for local, t in enumerate(date_idx):
        for j in np.flatnonzero(valid[t]):
            expected = np.zeros((window, panel.n_features), dtype=np.float32)
            for s in range(window):
                step = t - (window - 1) + s
                if step >= 0:
                    expected[s] = features[step, j]
            np.testing.assert_array_equal(batch.x[row].numpy(), expected)
            assert batch.date_index[row] == local and batch.stocks[row] == j
            assert batch.static_ids[row].tolist() == [
                panel.sector_ids[t, j],
                panel.segment_ids[t, j],
            ]
            np.testing.assert_array_equal(batch.targets[row].numpy(), panel.targets[t, j].numpy())
            row += 1
    assert row == batch.n_rows == int(valid[date_idx].sum())
    assert batch.dates.tolist() == date_idx and batch.n_dates == 3
    assert torch.equal(batch.target_mask, torch.isfinite(batch.targets))
    assert batch.edge_index is None and batch.edge_attr is None
    # stock 2 (outside the universe on dates < 10) is absent from date 2 but its window rows
    # on later dates still carry its real (non-zero) features
    assert 2 not in batch.stocks[batch.date_index == 0].tolist()


def test_graphs_are_per_date_without_cross_date_edges(panel):
    date_idx = [45, 80, 81]
    batch = panel.gather(date_idx)
    src, dst = batch.edge_index
    assert batch.edge_index.shape[1] > 0 and batch.edge_attr.shape == (batch.edge_index.shape[1], 1)
    assert torch.equal(batch.date_index[src], batch.date_index[dst])  # no cross-date edge
    valid = panel.valid.numpy()
    returns = panel.returns.numpy().astype(np.float64)
    offset = 0
    for local, t in enumerate(date_idx):
        columns = np.flatnonzero(valid[t])
        expected_index, expected_weight = correlation_graph(
            returns[t - GRAPH.window + 1 : t + 1, columns], GRAPH.k, GRAPH.threshold, GRAPH.min_obs
        )
        mine = (batch.date_index[src] == local).numpy()
        np.testing.assert_array_equal(batch.edge_index[:, mine].numpy() - offset, expected_index)
        np.testing.assert_allclose(batch.edge_attr[mine, 0].numpy(), expected_weight, rtol=1e-6)
        # the planted clusters: every edge joins two stocks of the same cluster (i ≡ j mod 4)
        stocks = batch.stocks.numpy()
        pairs = stocks[batch.edge_index[:, mine].numpy()]
        assert ((pairs[0] - pairs[1]) % N_CLUSTERS == 0).all()
        offset += columns.size


def test_to_moves_every_tensor_and_cached_graph(dataset):
    panel = Panel.from_dataset(
        dataset, make_stats(dataset), return_column=RETURN_COLUMN, window=5, graph=GRAPH
    )
    panel.date_graph(50)
    moved = panel.to("meta")  # a device with no data: everything must follow
    assert moved is panel and panel.device == torch.device("meta")
    for name in ("features", "valid", "targets", "sector_ids", "segment_ids", "returns"):
        assert getattr(panel, name).device.type == "meta"
    assert all(
        e.device.type == "meta" and w.device.type == "meta" for e, w in panel._graphs.values()
    )


def test_bad_inputs_are_refused_with_the_column_named(dataset):
    stats = make_stats(dataset)
    build = dict(return_column=RETURN_COLUMN, window=5, graph=GRAPH)
    with pytest.raises(PanelError, match="duplicated"):
        Panel.from_dataset(pl.concat([dataset, dataset.head(1)]), stats, **build)
    with pytest.raises(PanelError, match="scaled"):
        Panel.from_dataset(dataset, stats.filter(pl.col("feature") != "scaled"), **build)
    with pytest.raises(PanelError, match="target_5d"):
        Panel.from_dataset(dataset.drop("target_5d"), stats, **build)
    with pytest.raises(PanelError, match="not a feature"):
        Panel.from_dataset(dataset, stats, **(build | {"return_column": "ret_xx"}))
    with_nan = dataset.with_columns(
        pl.when(pl.col("code") == "13050")
        .then(float("nan"))
        .otherwise(pl.col("noise_1"))
        .alias("noise_1")
    )
    with pytest.raises(PanelError, match="noise_1"):
        Panel.from_dataset(with_nan, stats, **build)


# --------------------------------------------------------------------------- input normalization


def _normal_scores(x: np.ndarray) -> np.ndarray:
    return norm.ppf((rankdata(x) - 0.5) / x.size)


def test_rank_inputs_are_normal_scores_over_each_dates_rows(dataset):
    panel = Panel.from_dataset(
        dataset, make_stats(dataset), return_column=RETURN_COLUMN, window=5, graph=GRAPH,
        input_normalization="cross_sectional_rank",
    )
    assert panel.input_normalization == "cross_sectional_rank"
    # date 5: stock 1 has no row yet, stock 2 has a row outside the universe (it still counts)
    for t in (5, 50):
        rows = dataset.filter(pl.col("date") == panel.dates[t])
        stocks = [panel.codes.index(c) for c in rows["code"]]
        assert 2 in stocks and (t > 30) == (1 in stocks)
        for f, name in enumerate(panel.feature_columns):
            x = rows[name].cast(pl.Float64).to_numpy()  # null -> NaN
            known = np.isfinite(x)
            expected = np.zeros(x.size)
            expected[known] = _normal_scores(x[known])
            got = panel.features[t, stocks, f].numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=name)
    assert (panel.features[:30, 1] == 0).all()  # no row: zeros, as in every method


@pytest.mark.parametrize("method", ["time_series", "cross_sectional_z", "cross_sectional_rank"])
def test_a_dates_inputs_do_not_depend_on_other_dates(dataset, method):
    """Point in time, and the same inputs whether a date is trained on or scored live from its
    trailing window: a panel over fewer dates holds the same features for the dates it shares."""
    stats = make_stats(dataset)
    build = dict(return_column=RETURN_COLUMN, window=5, graph=GRAPH, input_normalization=method)
    full = Panel.from_dataset(dataset, stats, **build)
    cut = dataset["date"].unique().sort()[[40, 60]].to_list()
    part = Panel.from_dataset(dataset.filter(pl.col("date").is_between(*cut)), stats, **build)
    assert part.codes == full.codes
    first = full.dates.index(part.dates[0])
    shared = full.features[first : first + part.n_dates]
    assert torch.equal(part.features, shared)
    # and the features do vary: a date's cross-section is not flattened to zeros
    assert shared[:, :, full.feature_columns.index("signal")].abs().mean() > 0.5


@pytest.mark.parametrize("method", ["cross_sectional_z", "cross_sectional_rank"])
def test_nan_features_are_refused_in_every_method(dataset, method):
    with_nan = dataset.with_columns(
        pl.when(pl.col("code") == "13050").then(float("nan")).otherwise(pl.col("noise_1"))
        .alias("noise_1")
    )
    with pytest.raises(PanelError, match="noise_1"):
        Panel.from_dataset(
            with_nan, make_stats(dataset), return_column=RETURN_COLUMN, window=5, graph=GRAPH,
            input_normalization=method,
        )


def test_a_model_is_refused_a_panel_of_another_input_normalization(panel):
    config = ModelConfig.demo(
        panel.n_features, window=5, hidden=16, attn_heads=2, gat_heads=(2, 2), fan_top_k=1,
        input_normalization="cross_sectional_rank",
    )
    with pytest.raises(ValueError, match="input_normalization 'cross_sectional_rank'"):
        check_model_fits_panel(ATFTGATFAN(config), panel)
    same = config.model_copy(update={"input_normalization": "time_series"})
    check_model_fits_panel(ATFTGATFAN(same), panel)


@pytest.mark.parametrize("method", ["time_series", "cross_sectional_rank"])
def test_a_span_panel_predicts_exactly_what_the_whole_panel_predicts(dataset, method):
    """``for_model(span=…)`` keeps the span and the sessions its windows and graphs read
    before it, so a model predicts the span's dates bit for bit as from the whole history."""
    from atft_pipeline.training.panel import history_sessions
    from atft_pipeline.training.predict import predict

    config = ModelConfig.demo(
        len(feature_columns(dataset)), window=5, hidden=16, attn_heads=2, gat_heads=(2, 2),
        fan_top_k=1, graph_window=20, graph_k=4, input_normalization=method,
    )
    torch.manual_seed(0)
    model = ATFTGATFAN(config).eval()
    model.set_phase("gat")  # the graph path: its 20-session correlations reach furthest back
    stats = make_stats(dataset)
    days = dataset["date"].unique().sort().to_list()
    span = (days[50], days[70])
    whole = Panel.for_model(dataset, stats, config, return_column=RETURN_COLUMN)
    part = Panel.for_model(dataset, stats, config, return_column=RETURN_COLUMN, span=span)
    assert part.dates[0] == days[50 - history_sessions(config)] and part.dates[-1] == span[1]
    assert history_sessions(config) == 19  # the 20-session graph reaches further than the window
    expected = predict(model, whole, whole.date_indices(*span), "val")
    got = predict(model, part, part.date_indices(*span), "val")
    assert expected.height > 0
    assert got.equals(expected)
    # A span near the start keeps what there is.
    early = Panel.for_model(dataset, stats, config, return_column=RETURN_COLUMN,
                            span=(days[3], days[10]))
    assert early.dates[0] == days[0] and early.dates[-1] == days[10]
