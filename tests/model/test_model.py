"""ATFT-GAT-FAN blocks and the full model: shapes, maths, phases, graph isolation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import norm

from atft_pipeline.jquants.reference import MARKET_SEGMENTS, SECTOR33, SECTOR33_OTHER
from atft_pipeline.model import (
    ATFTGATFAN,
    PHASES,
    CombinedLoss,
    FrequencyAdaptiveNormalization,
    GatedLinearUnit,
    GatedResidualNetwork,
    GraphAttentionBlock,
    InterpretableMultiHeadAttention,
    LossConfig,
    LSTMEncoder,
    ModelConfig,
    QuantileHeads,
    StaticContexts,
    TemporalFusionBlock,
    VariableSelectionNetwork,
    fan_decompose,
    non_crossing_quantiles,
)
from atft_pipeline.model.config import (
    N_SECTORS,
    N_SEGMENTS,
    SECTOR_IDS,
    SEGMENT_IDS,
    UNKNOWN_SEGMENT_ID,
)

N_FEATURES = 12


def small_config(**overrides) -> ModelConfig:
    values = dict(hidden=16, attn_heads=2, gat_heads=(2, 2)) | overrides
    return ModelConfig.demo(N_FEATURES, **values)


def make_batch(config: ModelConfig, n_dates: int = 2, per_date: int = 8, seed: int = 0):
    """Stocks of ``n_dates`` dates stacked; per date a ring graph (both directions) over all
    stocks but the last, which stays isolated."""
    g = torch.Generator().manual_seed(seed)
    n = n_dates * per_date
    x = torch.randn(n, config.window, config.n_features, generator=g)
    static_ids = torch.stack(
        [
            torch.randint(0, config.n_sectors, (n,), generator=g),
            torch.randint(0, config.n_segments, (n,), generator=g),
        ],
        dim=1,
    )
    date_index = torch.arange(n_dates).repeat_interleave(per_date)
    edges = []
    for d in range(n_dates):
        ring = torch.arange(per_date - 1) + d * per_date
        nxt = torch.roll(ring, -1)
        edges += [torch.stack([ring, nxt]), torch.stack([nxt, ring])]
    edge_index = torch.cat(edges, dim=1)
    edge_attr = torch.rand(edge_index.shape[1], 1, generator=g) * 2 - 1
    return x, static_ids, date_index, edge_index, edge_attr


# --------------------------------------------------------------------------- config


def test_config_is_strict_and_frozen():
    with pytest.raises(ValidationError, match="extra"):
        ModelConfig(n_features=5, hiddden=8)
    config = ModelConfig(n_features=5)
    with pytest.raises(ValidationError):
        config.hidden = 8  # type: ignore[misc]
    assert config.n_sectors == len(SECTOR33) + 1 == 34
    assert config.n_segments == len(MARKET_SEGMENTS) + 1


def test_input_normalization_and_target_scale_are_validated():
    config = ModelConfig(n_features=5)
    assert (config.input_normalization, config.target_scale) == ("time_series", "returns")
    for method in ("time_series", "cross_sectional_z", "cross_sectional_rank"):
        assert ModelConfig(n_features=5, input_normalization=method).input_normalization == method
    with pytest.raises(ValidationError, match="input_normalization"):
        ModelConfig(n_features=5, input_normalization="cross_sectional")
    with pytest.raises(ValidationError, match="target_scale"):
        ModelConfig(n_features=5, target_scale="zscore")
    # a checkpoint written before these fields existed loads as the old behaviour
    old = config.model_dump(mode="json")
    del old["input_normalization"], old["target_scale"]
    assert ModelConfig.model_validate(old) == config


def test_static_id_tables_fill_the_vocabularies():
    assert sorted(SECTOR_IDS.values()) == list(range(N_SECTORS))
    assert SECTOR_IDS[SECTOR33_OTHER] == N_SECTORS - 1 and set(SECTOR33) < set(SECTOR_IDS)
    assert sorted([*SEGMENT_IDS.values(), UNKNOWN_SEGMENT_ID]) == list(range(N_SEGMENTS))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(hidden=30, attn_heads=4), "attn_heads"),
        (dict(hidden=32, gat_heads=(3, 2)), "GAT"),
        (dict(quantiles=(0.1, 0.9)), "median"),
        (dict(quantiles=(0.5, 0.25, 0.75)), "increasing"),
        (dict(window=6, fan_top_k=4), "fan_top_k"),
        (dict(horizons=(1, 1)), "horizons"),
    ],
)
def test_config_rejects_inconsistent_values(overrides, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig(n_features=5, **overrides)


def test_presets_and_parameter_counts():
    demo, prod = ModelConfig.demo(330), ModelConfig.production(330)
    assert (demo.hidden, demo.window) == (32, 10)
    assert (prod.hidden, prod.window) == (256, 60)
    assert ModelConfig.demo(330, hidden=64).hidden == 64
    model = ATFTGATFAN(demo)
    counted = sum(p.numel() for p in model.parameters())
    assert demo.parameter_count() == model.parameter_count() == counted
    assert counted < 1_000_000
    assert prod.parameter_count() > 10 * counted


# --------------------------------------------------------------------------- gating blocks


def test_glu_matches_formula():
    torch.manual_seed(0)
    glu = GatedLinearUnit(5, 3)
    x = torch.randn(4, 5)
    a, b = (x @ glu.linear.weight.T + glu.linear.bias).split(3, dim=-1)
    torch.testing.assert_close(glu(x), a * torch.sigmoid(b))


def test_grn_broadcasts_static_context_over_time():
    torch.manual_seed(0)
    grn = GatedResidualNetwork(6, 8, 4, context_size=3).eval()
    x, c = torch.randn(2, 5, 6), torch.randn(2, 3)
    out = grn(x, c)
    assert out.shape == (2, 5, 4)
    for t in range(5):
        torch.testing.assert_close(out[:, t], grn(x[:, t], c))
    assert not torch.allclose(out, grn(x, c + 1.0))
    with pytest.raises(ValueError, match="context"):
        grn(x)
    with pytest.raises(ValueError, match="no context"):
        GatedResidualNetwork(6, 8, 4)(x, c)


# --------------------------------------------------------------------------- variable selection


def test_variable_selection_equals_weighted_sum_of_per_variable_embeddings():
    torch.manual_seed(0)
    vsn = VariableSelectionNetwork(7, 8, context_size=4).eval()
    x, c = torch.randn(3, 5, 7), torch.randn(3, 4)
    selected, weights = vsn(x, c)
    assert selected.shape == (3, 5, 8) and weights.shape == (3, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))
    assert (weights > 0).all()
    brute = (weights.unsqueeze(-1) * vsn.embed(x)).sum(dim=2)  # materialised [B, T, F, d]
    torch.testing.assert_close(selected, vsn.transform(brute))
    _, other = vsn(x, c * 3.0)
    assert not torch.allclose(weights, other)  # the static context steers selection
    with pytest.raises(ValueError, match="7 input variables"):
        vsn(torch.randn(3, 5, 6), c)


# --------------------------------------------------------------------------- FAN


def _sinusoids(steps: int, specs):
    t = torch.arange(steps, dtype=torch.float64)
    return sum(a * torch.cos(2 * math.pi * f * t / steps + ph) for f, a, ph in specs)


def test_fan_removes_exactly_the_top_k_sinusoids():
    steps = 40
    # Two instances x two channels, each a different set of three sinusoids + an offset.
    specs = [
        [
            [(1, 3.0, 0.3), (4, 2.0, 1.1), (9, 1.0, -0.7)],
            [(2, 2.5, 0.0), (5, 1.5, 2.0), (13, 0.8, 0.4)],
        ],
        [
            [(3, 1.2, 0.5), (7, 2.2, -1.0), (11, 0.9, 0.2)],
            [(1, 0.7, 1.5), (6, 3.1, 0.1), (19, 1.9, 0.9)],
        ],
    ]
    periodic = torch.stack(
        [torch.stack([_sinusoids(steps, ch) for ch in inst], dim=-1) for inst in specs]
    )
    offset = torch.tensor([0.5, -2.0], dtype=torch.float64)
    x = (periodic + offset).float()  # [2, T, 2]
    x_non, residual = fan_decompose(x, k=3)
    torch.testing.assert_close(x_non, periodic.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(residual, (x - periodic.float()), atol=1e-5, rtol=0)
    torch.testing.assert_close(residual, offset.float().expand_as(residual), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_non + residual, x)


def test_fan_with_noise_keeps_exactly_the_top_k_bins():
    steps, rng = 60, np.random.default_rng(0)
    periodic = _sinusoids(steps, [(2, 3.0, 0.2), (5, 2.0, -1.0), (11, 1.0, 0.6)]).numpy()
    noise = 0.01 * rng.standard_normal(steps)
    x = torch.tensor(periodic + noise, dtype=torch.float32).view(1, steps, 1)
    x_non, residual = fan_decompose(x, k=3)
    spectrum = np.fft.rfft(periodic + noise)
    kept = np.zeros_like(spectrum)
    kept[[2, 5, 11]] = spectrum[[2, 5, 11]]
    expected = np.fft.irfft(kept, n=steps)
    np.testing.assert_allclose(x_non.view(-1).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(residual.view(-1).numpy(), periodic + noise - expected, atol=1e-5)
    np.testing.assert_allclose(x_non.view(-1).numpy(), periodic, atol=0.01)  # ≈ the sinusoids


def test_fan_dc_choice_and_amplitude_ranking():
    steps = 20
    x = (_sinusoids(steps, [(3, 1.0, 0.0)]) + 5.0).float().view(1, steps, 1)
    without_dc, _ = fan_decompose(x, k=1)
    with_dc, residual = fan_decompose(x, k=1, include_dc=True)
    torch.testing.assert_close(
        without_dc.view(-1), _sinusoids(steps, [(3, 1.0, 0.0)]).float(), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(with_dc, torch.full_like(x, 5.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        residual.view(-1), _sinusoids(steps, [(3, 1.0, 0.0)]).float(), atol=1e-5, rtol=0
    )
    # Nyquist (amplitude 1.0) vs an interior sinusoid of amplitude 1.5: raw |rFFT| would rank
    # Nyquist first (T·1.0 > T/2·1.5); the time-domain amplitude picks the interior bin.
    nyquist = torch.cos(math.pi * torch.arange(steps, dtype=torch.float64))
    interior = _sinusoids(steps, [(4, 1.5, 0.0)])
    top, _ = fan_decompose((nyquist + interior).float().view(1, steps, 1), k=1)
    torch.testing.assert_close(top.view(-1), interior.float(), atol=1e-5, rtol=0)


def test_fan_validates_k_and_keeps_dtype_and_gradient():
    x = torch.randn(3, 20, 4, requires_grad=True)
    with pytest.raises(ValueError, match="fan k=11"):
        fan_decompose(x, 11)
    fan_decompose(x, 11, include_dc=True)  # DC makes 11 candidates
    x_non, residual = fan_decompose(x, 3)
    (x_non.square().sum() + residual.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert fan_decompose(x.detach().bfloat16(), 3)[0].dtype == torch.bfloat16
    fan = FrequencyAdaptiveNormalization(4, 8, top_k=3)
    non, res = fan.decompose(x.detach())
    assert fan(torch.randn(3, 20, 8), non).shape == (3, 20, 8)


# --------------------------------------------------------------------------- temporal


def test_attention_is_causal_and_interpretable():
    torch.manual_seed(0)
    attn = InterpretableMultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 10, 16)
    out, weights = attn(x)
    assert weights.shape == (2, 4, 10, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 10))
    assert (weights.triu(diagonal=1) == 0).all()
    changed = x.clone()
    changed[:, 6:] += 5.0
    out2, _ = attn(changed)
    torch.testing.assert_close(out2[:, :6], out[:, :6])
    assert not torch.allclose(out2[:, 6:], out[:, 6:])
    # Shared values + averaged heads: out = W_o · (mean_h A_h) · V.
    v = attn.value(x)
    torch.testing.assert_close(out, attn.out(weights.mean(1) @ v))


def test_attention_for_the_last_queries_equals_the_full_attention_rows():
    torch.manual_seed(0)
    attn = InterpretableMultiHeadAttention(16, 4).eval()
    x = torch.randn(3, 10, 16)
    out, weights = attn(x)
    for n_queries in (1, 4):
        last, last_weights = attn(x, n_queries=n_queries)
        torch.testing.assert_close(last, out[:, -n_queries:])
        torch.testing.assert_close(last_weights, weights[:, :, -n_queries:])
    with pytest.raises(ValueError, match="n_queries"):
        attn(x, n_queries=11)


def test_temporal_block_equals_the_full_sequence_decoder_at_the_last_step():
    """The block computes only the forecast step; every step of TFT's decoder, then the last
    row, must give the same state."""
    torch.manual_seed(0)
    hidden, steps = 16, 12
    block = TemporalFusionBlock(hidden, lstm_layers=2, heads=4).eval()
    x = torch.randn(5, steps, hidden)
    contexts = StaticContexts(*(torch.randn(5, hidden) for _ in range(4)))
    state, weights = block(x, contexts)
    encoded = block.encoder(x, contexts.state_h, contexts.state_c)
    enriched = block.enrichment(encoded, contexts.enrichment)
    attended, full_weights = block.attention(enriched)
    fused = block.positionwise(block.attention_gate(attended, enriched))
    sequence = block.output_gate(fused, encoded)
    torch.testing.assert_close(state, sequence[:, -1])
    torch.testing.assert_close(weights, full_weights[:, :, -1])


def test_lstm_encoder_starts_from_static_state():
    torch.manual_seed(0)
    enc = LSTMEncoder(8, layers=2).eval()
    x, h0, c0 = torch.randn(3, 6, 8), torch.randn(3, 8), torch.randn(3, 8)
    out = enc(x, h0, c0)
    assert out.shape == (3, 6, 8)
    assert not torch.allclose(out, enc(x, h0 + 1.0, c0))


# --------------------------------------------------------------------------- graph


def test_graph_block_gate_isolated_nodes_and_gradients():
    torch.manual_seed(0)
    block = GraphAttentionBlock(8, heads=(2, 2)).eval()
    base = torch.randn(5, 8, requires_grad=True)
    edge_index = torch.tensor(
        [[0, 1, 1, 2, 3], [1, 0, 2, 1, 3]]
    )  # 3 only has a self loop, 4 nothing
    edge_attr = torch.tensor([[0.5], [0.5], [-0.3], [-0.3], [1.0]])
    out, alpha = block(base, edge_index, edge_attr)
    assert float(alpha.detach()) == pytest.approx(0.5)
    torch.testing.assert_close(out[3:], base[3:])
    assert not torch.allclose(out[:3], base[:3])
    # The gate is exactly α·base + (1 − α)·gat for nodes with neighbours.
    gat = base
    for i, conv in enumerate(block.convs):
        gat = conv(gat, edge_index, edge_attr)
        gat = torch.nn.functional.elu(gat) if i == 0 else gat
    torch.testing.assert_close(out[:3], 0.5 * base[:3] + 0.5 * gat[:3])
    out[:3].sum().backward()
    assert block.gate_logit.grad is not None and block.gate_logit.grad.abs() > 0
    for conv in block.convs:
        assert conv.lin_l.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="edge_attr"):
        block(base, edge_index, edge_attr.view(-1))


def test_graph_edge_dropout_only_in_training():
    torch.manual_seed(0)
    block = GraphAttentionBlock(8, heads=(2, 2), dropout=0.0, edge_dropout=0.5)
    base = torch.randn(6, 8)
    src = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2])
    edge_index = torch.stack([src, torch.roll(src, 1)])
    edge_attr = torch.rand(8, 1)
    block.eval()
    torch.testing.assert_close(
        block(base, edge_index, edge_attr)[0], block(base, edge_index, edge_attr)[0]
    )
    block.train()
    outs = [block(base, edge_index, edge_attr)[0] for _ in range(5)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])


# --------------------------------------------------------------------------- heads


def test_quantiles_never_cross_and_follow_the_formula():
    assert (
        non_crossing_quantiles(torch.randn(50, 4, 5) * 100, median_index=2).diff(dim=-1) >= 0
    ).all()
    raw = torch.randn(50, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    q = non_crossing_quantiles(raw, median_index=2)
    assert (q.diff(dim=-1) > 0).all()
    sp = torch.nn.functional.softplus
    torch.testing.assert_close(q[..., 2], raw[..., 2])
    torch.testing.assert_close(q[..., 4], raw[..., 2] + sp(raw[..., 3]) + sp(raw[..., 4]))
    torch.testing.assert_close(q[..., 0], raw[..., 2] - sp(raw[..., 1]) - sp(raw[..., 0]))


@pytest.mark.parametrize(
    ("target_scale", "sigma"),
    [("returns", 0.02 * np.sqrt([1, 5, 20])), ("unit", np.ones(3))],
)
def test_heads_start_at_the_target_scale(target_scale, sigma):
    quantiles = (0.05, 0.25, 0.5, 0.75, 0.95)
    config = ModelConfig(n_features=5, horizons=(1, 5, 20), target_scale=target_scale)
    np.testing.assert_allclose(config.initial_target_std, sigma)
    heads = QuantileHeads(16, (1, 5, 20), quantiles, config.initial_target_std)
    with torch.no_grad():
        heads.projection.weight.zero_()  # leave the bias: the initial quantile gaps
    q = heads(torch.randn(3, 16))
    expected = np.outer(sigma, norm.ppf(quantiles))
    np.testing.assert_allclose(q[0].detach().numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="one positive target_std per horizon"):
        QuantileHeads(16, (1, 5, 20), quantiles, (1.0, 1.0))


# --------------------------------------------------------------------------- full model


def test_forward_shapes_and_outputs():
    config = small_config()
    model = ATFTGATFAN(config, phase="gat").eval()
    x, sid, di, ei, ea = make_batch(config)
    out = model(x, sid, di, ei, ea)
    b = x.shape[0]
    assert out.quantiles.shape == (b, 4, 5) and out.point.shape == (b, 4)
    torch.testing.assert_close(out.point, out.quantiles[..., 2])
    assert (out.quantiles.diff(dim=-1) > 0).all()
    assert out.selection_weights.shape == (b, config.window, N_FEATURES)
    torch.testing.assert_close(out.selection_weights.sum(-1), torch.ones(b, config.window))
    assert out.attention_weights.shape == (b, 2, config.window)
    torch.testing.assert_close(out.attention_weights.sum(-1), torch.ones(b, 2))
    assert out.static_weights.shape == (b, 2)
    assert float(out.gate.detach()) == pytest.approx(0.5)
    model.set_phase("fan")
    assert model(x, sid, di).gate is None


def _grad_norm(module: torch.nn.Module) -> float | None:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return None if not grads else float(sum(g.abs().sum() for g in grads))


def _backward(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(*batch)
    out.quantiles.sum().backward()
    return out


@pytest.mark.slow
def test_phases_really_switch_the_forward_path():
    torch.manual_seed(0)
    config = small_config()
    model = ATFTGATFAN(config).train()
    batch = make_batch(config)

    model.set_phase("baseline")
    _backward(model, batch)
    assert _grad_norm(model.fan) is None and _grad_norm(model.graph) is None
    assert _grad_norm(model.selection) > 0

    model.set_phase("fan")
    _backward(model, batch)
    assert _grad_norm(model.fan) > 0 and _grad_norm(model.graph) is None

    model.set_phase("gat")
    _backward(model, batch)
    assert _grad_norm(model.fan) > 0
    assert model.graph.gate_logit.grad.abs() > 0
    for conv in model.graph.convs:
        assert conv.lin_l.weight.grad.abs().sum() > 0 and conv.att.grad.abs().sum() > 0

    model.eval()
    outputs = {}
    for phase in PHASES:
        model.set_phase(phase)
        outputs[phase] = model(*batch).quantiles
    assert not torch.allclose(outputs["baseline"], outputs["fan"])
    assert not torch.allclose(outputs["fan"], outputs["gat"])
    torch.testing.assert_close(outputs["gat"], outputs["finetune"])  # same path, other lr

    # In baseline, FAN and GAT parameters do not influence the output at all.
    model.set_phase("baseline")
    with torch.no_grad():
        for p in [*model.fan.parameters(), *model.graph.parameters()]:
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(model(*batch).quantiles, outputs["baseline"])

    with pytest.raises(ValueError, match="unknown phase"):
        model.set_phase("gnn")


@pytest.mark.slow
def test_dropout_only_in_training():
    torch.manual_seed(0)
    config = small_config(dropout=0.3)
    model = ATFTGATFAN(config, phase="gat")
    batch = make_batch(config)
    model.eval()
    torch.testing.assert_close(model(*batch).quantiles, model(*batch).quantiles)
    model.train()
    assert not torch.allclose(model(*batch).quantiles, model(*batch).quantiles)


def test_dates_do_not_leak_into_each_other():
    """Rows of one date are unaffected by anything about another date's stocks."""
    config = small_config()
    model = ATFTGATFAN(config, phase="gat").eval()
    x, sid, di, ei, ea = make_batch(config, n_dates=2, per_date=8)
    out = model(x, sid, di, ei, ea).quantiles
    x2, sid2 = x.clone(), sid.clone()
    x2[8:] = torch.randn_like(x2[8:]) * 3
    sid2[8:, 0] = (sid2[8:, 0] + 5) % config.n_sectors
    out2 = model(x2, sid2, di, ei, ea).quantiles
    torch.testing.assert_close(out2[:8], out[:8])
    assert not torch.allclose(out2[8:], out[8:])
    # ...while a neighbour on the same date does matter.
    x3 = x.clone()
    x3[1] += 3.0
    assert not torch.allclose(model(x3, sid, di, ei, ea).quantiles[0], out[0])


def test_forward_rejects_bad_inputs():
    config = small_config()
    model = ATFTGATFAN(config, phase="gat").eval()
    x, sid, di, ei, ea = make_batch(config)
    with pytest.raises(ValueError, match="needs the batch graph"):
        model(x, sid, di)
    cross = torch.cat([ei, torch.tensor([[0], [9]])], dim=1)
    with pytest.raises(ValueError, match="different dates"):
        model(x, sid, di, cross, torch.cat([ea, ea[:1]]))
    with pytest.raises(ValueError, match="outside"):
        model(x, sid, di, torch.tensor([[0], [99]]), ea[:1])
    with pytest.raises(ValueError, match="n_features=12"):
        model(x[..., :5], sid, di, ei, ea)
    with pytest.raises(ValueError, match=f"window={config.window}"):
        model(x[:, :-1], sid, di, ei, ea)
    bad = sid.clone()
    bad[0, 0] = config.n_sectors
    with pytest.raises(ValueError, match="sector ids"):
        model(x, bad, di, ei, ea)
    with pytest.raises(ValueError, match="date_index"):
        model(x, sid, di[:-1], ei, ea)


def test_state_dict_round_trip():
    config = small_config()
    model = ATFTGATFAN(config, phase="gat").eval()
    batch = make_batch(config)
    clone = ATFTGATFAN(config, phase="gat").eval()
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone(*batch).quantiles, model(*batch).quantiles)


@pytest.mark.slow
def test_model_learns_a_cross_sectional_signal():
    """A few optimiser steps on a target driven by one feature raise the per-date IC."""
    torch.manual_seed(0)
    config = small_config(dropout=0.0)
    model = ATFTGATFAN(config, phase="fan")
    x, sid, di, ei, ea = make_batch(config, n_dates=4, per_date=16, seed=1)
    target = (0.02 * x[:, -1, 3]).unsqueeze(-1).expand(-1, 4).clone()
    loss_fn = CombinedLoss(LossConfig(min_stocks_per_date=5), config.quantiles, 4)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        out = model(x, sid, di)
        terms = loss_fn(out.quantiles, out.point, target, di)
        first = first or {k: float(v.detach()) for k, v in terms.items()}
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
    assert float(terms["total"].detach()) < first["total"]
    assert float(terms["ic"].detach()) > 0.9 > 0.1 > first["ic"]


@pytest.mark.slow
def test_runs_under_bf16_autocast():
    """Training on CUDA uses bf16 autocast; the CPU autocast exercises the same casts."""
    config = small_config()
    model = ATFTGATFAN(config, phase="gat").train()
    x, sid, di, ei, ea = make_batch(config)
    target = torch.randn(x.shape[0], 4) * 0.02
    loss_fn = CombinedLoss(LossConfig(min_stocks_per_date=5), config.quantiles, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, sid, di, ei, ea)
        terms = loss_fn(out.quantiles, out.point, target, di)
    assert out.quantiles.dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
