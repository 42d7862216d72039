"""FAN's decomposition by DFT matrix products equals the FFT formulation it replaced."""

from __future__ import annotations

import pytest
import torch

from atft_pipeline.model.fan import fan_decompose


def fft_reference(x: torch.Tensor, k: int, include_dc: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k bins by time-domain amplitude via torch.fft (rfft, top-k, irfft)."""
    steps = x.shape[-2]
    n_bins = steps // 2 + 1
    spectrum = torch.fft.rfft(x, dim=-2)
    scale = torch.full((n_bins, 1), 2.0 / steps, dtype=x.dtype)
    scale[0] = 1.0 / steps
    if steps % 2 == 0:
        scale[-1] = 1.0 / steps
    amplitude = spectrum.detach().abs() * scale
    if not include_dc:
        amplitude[..., 0, :] = -1.0
    top = amplitude.topk(k, dim=-2).indices
    keep = torch.zeros_like(amplitude, dtype=torch.bool).scatter_(-2, top, True)
    x_non = torch.fft.irfft(torch.where(keep, spectrum, 0), n=steps, dim=-2)
    return x_non, x - x_non


@pytest.mark.parametrize("shape", [(6, 20, 9), (3, 2, 21, 5), (4, 60, 3), (2, 7, 4)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("include_dc", [False, True])
def test_matches_the_fft_reference_values_and_gradients(shape, k, include_dc):
    g = torch.Generator().manual_seed(sum(shape) + k)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    weights = torch.randn(*shape, generator=g, dtype=torch.float64)
    x_ours = x.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    ours = fan_decompose(x_ours, k, include_dc)
    reference = fft_reference(x_ref, k, include_dc)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=0.0)  # ours runs in float32
    (ours[0] * weights).sum().backward()
    (reference[0] * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=2e-6, rtol=0.0)


def test_all_zero_channels_have_no_frequency_part():
    x = torch.zeros(3, 20, 4)
    x[:, :, 1] = torch.sin(torch.arange(20.0) * 2 * torch.pi * 3 / 20)
    x_non, residual = fan_decompose(x, 2)
    assert (x_non[:, :, [0, 2, 3]] == 0).all()
    torch.testing.assert_close(x_non[:, :, 1], x[:, :, 1], atol=1e-5, rtol=0.0)
    torch.testing.assert_close(residual + x_non, x)


@pytest.mark.parametrize("include_dc", [False, True])
def test_pairwise_and_argmax_rankings_keep_the_same_bins(monkeypatch, include_dc):
    """Short windows rank bins by pairwise comparison, long ones by repeated argmax: the same
    bins either way, exact ties (all-zero and constant channels) to the lower frequency."""
    from atft_pipeline.model import fan

    g = torch.Generator().manual_seed(3)
    x = torch.randint(-2, 3, (64, 12, 5), generator=g).float()
    x[:8] = 0.0
    x[8:16] = 1.5
    pairwise = fan_decompose(x, 3, include_dc)
    monkeypatch.setattr(fan, "_PAIRWISE_MAX_CANDIDATES", 0)
    argmax = fan_decompose(x, 3, include_dc)
    for a, b in zip(pairwise, argmax, strict=True):
        assert torch.equal(a, b)
    assert (pairwise[0][:8] == 0).all()
