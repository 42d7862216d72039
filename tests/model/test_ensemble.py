"""ATFTEnsemble: the members' mean, whatever phase each member is in."""

from __future__ import annotations

import pytest
import torch

from atft_pipeline.model import ATFTEnsemble, ATFTGATFAN, ModelConfig

N_FEATURES, WINDOW, ROWS = 6, 5, 12


@pytest.fixture(scope="module")
def config() -> ModelConfig:
    return ModelConfig.demo(
        N_FEATURES, window=WINDOW, hidden=8, attn_heads=2, gat_heads=(2, 2), fan_top_k=1
    )


def member(config: ModelConfig, seed: int, phase: str) -> ATFTGATFAN:
    torch.manual_seed(seed)
    return ATFTGATFAN(config, phase=phase).eval()


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, WINDOW, N_FEATURES, generator=generator)
    static_ids = torch.stack(
        [torch.randint(0, 10, (ROWS,), generator=generator), torch.zeros(ROWS, dtype=torch.long)],
        dim=1,
    )
    date_index = torch.repeat_interleave(torch.arange(2), ROWS // 2)
    # a ring within each date
    half = ROWS // 2
    source = torch.arange(ROWS)
    target = (source % half + 1) % half + (source // half) * half
    edge_index = torch.stack([torch.cat([source, target]), torch.cat([target, source])])
    edge_attr = torch.full((edge_index.shape[1], 1), 0.5)
    return x, static_ids, date_index, edge_index, edge_attr


def test_forward_is_the_mean_of_the_members_in_their_own_phases(config, inputs):
    members = [member(config, 0, "baseline"), member(config, 1, "fan"), member(config, 2, "gat")]
    ensemble = ATFTEnsemble(members).eval()
    assert ensemble.needs_graph and ensemble.member_phases == ["baseline", "fan", "gat"]
    with torch.no_grad():
        outs = [m(*inputs) for m in members]
        out = ensemble(*inputs)
    expected = torch.stack([o.quantiles for o in outs]).mean(dim=0)
    torch.testing.assert_close(out.quantiles, expected, rtol=0, atol=0)
    median = config.quantiles.index(0.5)
    torch.testing.assert_close(out.point, expected[..., median], rtol=0, atol=0)
    assert (out.quantiles.diff(dim=-1) > 0).all()  # still a valid set of quantiles
    # the members really differ: the mean is not any one of them
    assert all(not torch.allclose(o.quantiles, expected) for o in outs)
    torch.testing.assert_close(
        out.selection_weights, torch.stack([o.selection_weights for o in outs]).mean(dim=0)
    )
    torch.testing.assert_close(out.selection_weights.sum(dim=-1), torch.ones(ROWS, WINDOW))
    assert out.gate is not None and torch.equal(out.gate, outs[2].gate)  # the one graph member
    assert ensemble.parameter_count() == sum(m.parameter_count() for m in members)


def test_one_member_is_that_member_and_no_graph_is_needed_without_gat(config, inputs):
    alone = member(config, 3, "fan")
    ensemble = ATFTEnsemble([alone]).eval()
    assert not ensemble.needs_graph
    x, static_ids, date_index, _, _ = inputs
    with torch.no_grad():
        a, b = alone(x, static_ids, date_index), ensemble(x, static_ids, date_index)
    assert torch.equal(a.quantiles, b.quantiles) and b.gate is None


def test_members_must_share_a_config(config):
    other = ModelConfig.demo(N_FEATURES, window=WINDOW, hidden=16, attn_heads=2, fan_top_k=1)
    with pytest.raises(ValueError, match="share one ModelConfig"):
        ATFTEnsemble([member(config, 0, "baseline"), ATFTGATFAN(other)])
    with pytest.raises(ValueError, match="at least one member"):
        ATFTEnsemble([])
