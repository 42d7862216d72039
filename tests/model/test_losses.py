"""Training losses against brute-force formulas and independent libraries (scipy, empyrical)."""

from __future__ import annotations

import empyrical
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import norm, pearsonr, rankdata, spearmanr

from atft_pipeline.model import (
    CombinedLoss,
    LossConfig,
    long_short_sharpe,
    per_date_ic,
    per_date_rank_ic_surrogate,
    pinball_loss,
    rank_within_groups,
    transform_targets,
)

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def panel(n_dates: int = 3, per_date: int = 15, horizons: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = n_dates * per_date
    pred = torch.randn(n, horizons, generator=g, dtype=torch.float64)
    target = 0.5 * pred + torch.randn(n, horizons, generator=g, dtype=torch.float64)
    date_index = torch.arange(n_dates).repeat_interleave(per_date)
    perm = torch.randperm(n, generator=g)  # rows of a date need not be contiguous
    return pred[perm], target[perm], date_index[perm]


def per_date_reference(fn, pred, target, date_index):
    """Mean over horizons of the mean over dates of fn(pred_d, target_d) on finite targets."""
    p, y, d = pred.detach().numpy(), target.numpy(), date_index.numpy()
    per_horizon = []
    for h in range(p.shape[1]):
        values = []
        for date in np.unique(d):
            rows = (d == date) & np.isfinite(y[:, h])
            values.append(fn(p[rows, h], y[rows, h]))
        per_horizon.append(np.mean(values))
    return float(np.mean(per_horizon))


# --------------------------------------------------------------------------- pinball


def test_pinball_equals_brute_force_and_masks_nan():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 3, 5, generator=g).sort(dim=-1).values.requires_grad_()
    y = torch.randn(7, 3, generator=g)
    y[2, 0] = y[5, 2] = float("nan")
    loss = pinball_loss(q, y, QUANTILES)
    per_horizon = []
    for h in range(3):
        cells = []
        for i in range(7):
            if np.isnan(float(y[i, h])):
                continue
            errs = [float(y[i, h] - q.detach()[i, h, j]) for j in range(5)]
            cells.append(
                np.mean([max(t * e, (t - 1) * e) for t, e in zip(QUANTILES, errs, strict=True)])
            )
        per_horizon.append(np.mean(cells))
    assert float(loss) == pytest.approx(np.mean(per_horizon), rel=1e-6)
    loss.backward()
    assert torch.isfinite(q.grad).all()
    assert (q.grad[2, 0] == 0).all() and (q.grad[5, 2] == 0).all()
    # An explicit mask acts exactly like a NaN target.
    valid = torch.ones_like(y, dtype=torch.bool)
    valid[0, 1] = False
    y_nan = y.clone()
    y_nan[0, 1] = float("nan")
    assert float(pinball_loss(q, y, QUANTILES, valid)) == pytest.approx(
        float(pinball_loss(q, y_nan, QUANTILES))
    )


def test_pinball_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[N, H, Q\]"):
        pinball_loss(torch.zeros(4, 2, 5), torch.zeros(4, 3), QUANTILES)
    with pytest.raises(ValueError, match="quantile levels"):
        pinball_loss(torch.zeros(4, 2, 3), torch.zeros(4, 2), QUANTILES)


# --------------------------------------------------------------------------- ranks


def test_rank_within_groups_matches_scipy_with_ties_and_gaps():
    values = torch.tensor([3.0, 1.0, 1.0, 2.0, 5.0, 5.0, 5.0, 0.0, 9.0, 4.0])
    groups = torch.tensor([0, 0, 1, 0, 1, 1, 0, 2, 2, 0])
    valid = torch.tensor([True, True, True, True, True, True, True, True, False, True])
    ranks = rank_within_groups(values, groups, 4, valid)
    for g in range(3):
        rows = ((groups == g) & valid).numpy()
        np.testing.assert_allclose(ranks.numpy()[rows], rankdata(values.numpy()[rows]))
    assert torch.isnan(ranks[8])


# --------------------------------------------------------------------------- IC terms


def test_ic_and_rank_ic_match_scipy_per_date():
    pred, target, date_index = panel()
    target[3, 0] = float("nan")
    target[10:14, 1] = 0.0  # ties
    ic = per_date_ic(pred, target, date_index)
    rank_ic = per_date_rank_ic_surrogate(pred, target, date_index)
    assert float(ic) == pytest.approx(
        per_date_reference(lambda a, b: pearsonr(a, b)[0], pred, target, date_index)
    )
    assert float(rank_ic) == pytest.approx(
        per_date_reference(lambda a, b: pearsonr(a, rankdata(b))[0], pred, target, date_index)
    )


def test_correlations_are_per_date_not_pooled():
    # Date 0: prediction = target (IC +1); date 1: prediction = −target (IC −1). Date 1's
    # targets sit far higher, so the pooled correlation is strongly positive.
    y0 = torch.linspace(-1, 1, 10, dtype=torch.float64)
    y1 = torch.linspace(9, 11, 10, dtype=torch.float64)
    target = torch.cat([y0, y1]).unsqueeze(-1)
    pred = torch.cat([y0, -y1 + 30.0]).unsqueeze(-1)
    date_index = torch.tensor([0] * 10 + [1] * 10)
    pooled = pearsonr(pred.view(-1).numpy(), target.view(-1).numpy())[0]
    assert pooled > 0.9
    assert float(per_date_ic(pred, target, date_index)) == pytest.approx(0.0, abs=1e-9)
    assert float(per_date_rank_ic_surrogate(pred, target, date_index)) == pytest.approx(
        0.0, abs=1e-9
    )
    assert float(per_date_ic(pred[:10], target[:10], date_index[:10])) == pytest.approx(1.0)


def test_rank_surrogate_is_spearman_for_evenly_spaced_predictions_and_robust_to_outliers():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(30, 1, generator=g, dtype=torch.float64)
    pred = torch.randperm(30, generator=g).to(torch.float64).unsqueeze(-1)  # evenly spaced
    date_index = torch.zeros(30, dtype=torch.long)
    rank_ic = per_date_rank_ic_surrogate(pred, target, date_index)
    assert float(rank_ic) == pytest.approx(spearmanr(pred.view(-1), target.view(-1))[0])
    stretched = torch.exp(5 * target)  # monotone: ranks unchanged, Pearson changes
    assert float(per_date_rank_ic_surrogate(pred, stretched, date_index)) == pytest.approx(
        float(rank_ic)
    )
    assert float(per_date_ic(pred, stretched, date_index)) != pytest.approx(
        float(per_date_ic(pred, target, date_index))
    )


def test_dates_below_min_count_are_left_out():
    pred, target, date_index = panel(n_dates=2, per_date=12, horizons=1)
    # Leave date 1 with only 3 valid targets.
    target[(date_index == 1).nonzero().view(-1)[3:]] = float("nan")
    with_small = per_date_ic(pred, target, date_index, min_count=3)
    only_date0 = per_date_ic(pred, target, date_index, min_count=4)
    rows = date_index == 0
    assert float(only_date0) == pytest.approx(pearsonr(pred[rows, 0], target[rows, 0])[0])
    assert float(with_small) != pytest.approx(float(only_date0))


def test_correlation_gradients_are_exact():
    pred, target, date_index = panel(n_dates=2, per_date=6, horizons=2)
    target[1, 1] = float("nan")
    pred.requires_grad_()
    for fn in (per_date_ic, per_date_rank_ic_surrogate, long_short_sharpe):
        assert torch.autograd.gradcheck(lambda p, fn=fn: fn(p, target, date_index), (pred,))


# --------------------------------------------------------------------------- Sharpe


def test_sharpe_matches_brute_force_and_empyrical():
    pred, target, date_index = panel(n_dates=5, per_date=20, horizons=2)
    target[4, 1] = float("nan")
    sharpe = long_short_sharpe(pred, target, date_index)
    p, y, d = pred.numpy(), target.numpy(), date_index.numpy()
    per_horizon = []
    for h in range(2):
        daily = []
        for date in range(5):
            rows = (d == date) & np.isfinite(y[:, h])
            z = (p[rows, h] - p[rows, h].mean()) / p[rows, h].std()
            daily.append(np.sum(z / np.abs(z).sum() * y[rows, h]))
        daily = np.array(daily)
        reference = daily.mean() / daily.std(ddof=1)
        assert reference == pytest.approx(empyrical.sharpe_ratio(daily, annualization=1))
        per_horizon.append(reference)
    assert float(sharpe) == pytest.approx(np.mean(per_horizon))


def test_sharpe_needs_two_dates_and_is_scale_free():
    pred, target, date_index = panel(n_dates=1, per_date=20, horizons=1)
    pred.requires_grad_()
    one_day = long_short_sharpe(pred, target, date_index)
    assert float(one_day) == 0.0
    one_day.backward()
    assert (pred.grad == 0).all()
    pred, target, date_index = panel(n_dates=4, per_date=20, horizons=1)
    base = float(long_short_sharpe(pred, target, date_index))
    assert float(long_short_sharpe(3 * pred + 1, 10 * target, date_index)) == pytest.approx(base)


# --------------------------------------------------------------------------- target transforms


def _reference_transform(y: np.ndarray, transform: str) -> np.ndarray:
    """One (date, horizon)'s finite targets, transformed with numpy / scipy."""
    if transform == "demean":
        return y - y.mean()
    if transform == "zscore":
        return (y - y.mean()) / y.std() if np.ptp(y) > 0 else np.zeros_like(y)
    return norm.ppf((rankdata(y) - 0.5) / y.size)


def _targets_with_gaps():
    _, target, date_index = panel(n_dates=4, per_date=13, horizons=3, seed=5)
    target[[0, 5, 9], 0] = float("nan")
    target[11, 2] = float("nan")
    first = (date_index == 1).nonzero().flatten()
    target[first[:4], 1] = 0.25  # ties
    target[date_index == 2, 2] = 0.1  # a constant (date, horizon)
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[3, 1] = False  # masked without being NaN
    return target, date_index, valid


@pytest.mark.parametrize("transform", ["demean", "zscore", "normal_score"])
def test_target_transform_matches_numpy_per_date_and_horizon(transform):
    target, date_index, valid = _targets_with_gaps()
    out = transform_targets(target, date_index, transform, valid=valid).numpy()
    y, d, ok = target.numpy(), date_index.numpy(), valid.numpy() & np.isfinite(target.numpy())
    assert np.isnan(out[~ok]).all()
    for date in np.unique(d):
        for h in range(y.shape[1]):
            rows = (d == date) & ok[:, h]
            np.testing.assert_allclose(
                out[rows, h], _reference_transform(y[rows, h], transform), rtol=1e-9, atol=1e-12
            )
    constant = out[(d == 2) & ok[:, 2], 2]
    assert transform == "demean" or (constant == 0).all()  # no spread to scale: 0, not noise


def test_normal_score_is_unit_scale_and_ties_share_a_score():
    target, date_index, valid = _targets_with_gaps()
    out = transform_targets(target.float(), date_index, "normal_score", valid=valid)
    assert out.dtype == torch.float32
    tied = out[(date_index == 1).nonzero().flatten()[:4], 1]
    assert torch.equal(tied, tied[:1].expand(4)) and not torch.isnan(tied).any()
    # every (date, horizon) with distinct values holds the same n normal scores, whatever scale
    scaled = transform_targets(1000.0 * target, date_index, "normal_score", valid=valid)
    plain = transform_targets(target, date_index, "normal_score", valid=valid)
    torch.testing.assert_close(scaled, plain, equal_nan=True)


@pytest.mark.parametrize("transform", ["demean", "zscore", "normal_score"])
def test_target_transform_does_not_leak_across_dates(transform):
    target, date_index, valid = _targets_with_gaps()
    out = transform_targets(target, date_index, transform, valid=valid)
    other = date_index != 0
    changed = target.clone()
    changed[other] = 7.0 - 5.0 * changed[other]  # other dates: new level, scale and order
    changed[other.nonzero().flatten()[0], 0] = float("nan")
    again = transform_targets(changed, date_index, transform, valid=valid)
    mine = date_index == 0
    torch.testing.assert_close(again[mine], out[mine], equal_nan=True)
    assert not torch.allclose(again[other].nan_to_num(), out[other].nan_to_num())
    # rows of one date need not be contiguous, and their order does not matter
    perm = torch.randperm(len(target), generator=torch.Generator().manual_seed(1))
    shuffled = transform_targets(target[perm], date_index[perm], transform, valid=valid[perm])
    torch.testing.assert_close(shuffled, out[perm], equal_nan=True)


def test_raw_is_the_identity_and_unknown_transforms_are_refused():
    target, date_index, valid = _targets_with_gaps()
    assert transform_targets(target, date_index, "raw", valid=valid) is target
    assert LossConfig().target_transform == "raw"
    with pytest.raises(ValidationError, match="target_transform"):
        LossConfig(target_transform="rank")
    with pytest.raises(ValueError, match="unknown target transform"):
        transform_targets(target, date_index, "rank", valid=valid)  # type: ignore[arg-type]


@pytest.mark.parametrize("transform", ["raw", "demean", "zscore", "normal_score"])
def test_combined_loss_sees_the_transformed_targets(transform):
    pred, target, date_index = panel(n_dates=3, per_date=12, horizons=2)
    target[4, 1] = float("nan")
    quantiles = pred.unsqueeze(-1) + torch.linspace(-1, 1, 5, dtype=torch.float64)
    weights = dict(rank_ic_weight=0.3, ic_weight=0.2, sharpe_weight=0.1, min_stocks_per_date=5)
    transformed = CombinedLoss(LossConfig(target_transform=transform, **weights), QUANTILES, 2)
    raw = CombinedLoss(LossConfig(**weights), QUANTILES, 2)
    a = transformed(quantiles, quantiles[..., 2], target, date_index)
    mapped = transform_targets(target, date_index, transform)
    b = raw(quantiles, quantiles[..., 2], mapped, date_index)
    for key in a:
        assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6), key
    if transform != "raw":  # the pinball term is not invariant to the transform
        plain = raw(quantiles, quantiles[..., 2], target, date_index)
        assert float(a["quantile"]) != pytest.approx(float(plain["quantile"]), rel=1e-3)


# --------------------------------------------------------------------------- combined


def test_combined_loss_weights_components_and_masks_nan():
    pred, target, date_index = panel(n_dates=3, per_date=12, horizons=4)
    quantiles = (
        pred.unsqueeze(-1) + torch.linspace(-1, 1, 5, dtype=torch.float64)
    ).requires_grad_()
    target[0, 0] = target[7, 3] = float("nan")
    config = LossConfig(rank_ic_weight=0.3, ic_weight=0.2, sharpe_weight=0.1, min_stocks_per_date=5)
    terms = CombinedLoss(config, QUANTILES, 4)(quantiles, quantiles[..., 2], target, date_index)
    assert set(terms) == {"quantile", "rank_ic", "ic", "sharpe", "total"}
    sharpe = float(terms["sharpe"])
    expected = (
        float(terms["quantile"])
        - 0.3 * float(terms["rank_ic"])
        - 0.2 * float(terms["ic"])
        - 0.1 * sharpe / np.sqrt(1 + sharpe**2)
    )
    assert float(terms["total"]) == pytest.approx(expected, rel=1e-5)
    assert sharpe == pytest.approx(
        float(long_short_sharpe(quantiles[..., 2], target, date_index, min_count=5))
    )
    assert float(terms["ic"]) == pytest.approx(
        float(per_date_ic(quantiles[..., 2].double(), target, date_index)), rel=1e-5
    )
    terms["total"].backward()
    assert torch.isfinite(quantiles.grad).all()
    # A NaN target contributes nothing: dropping that row entirely gives the same terms where
    # the row's other horizons are masked too.
    masked = target.clone()
    masked[0] = float("nan")
    keep = torch.arange(len(target)) != 0
    loss = CombinedLoss(config, QUANTILES, 4)
    a = loss(quantiles.detach(), quantiles.detach()[..., 2], masked, date_index)
    b = loss(
        quantiles.detach()[keep], quantiles.detach()[keep][..., 2], target[keep], date_index[keep]
    )
    for key in a:
        assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6, abs=1e-9)


def test_horizon_weights():
    pred, target, date_index = panel(n_dates=3, per_date=12, horizons=2)
    q = pred.unsqueeze(-1) + torch.linspace(-1, 1, 5, dtype=torch.float64)
    first_only = CombinedLoss(
        LossConfig(horizon_weights=(1.0, 0.0), min_stocks_per_date=5), QUANTILES, 2
    )
    single = CombinedLoss(LossConfig(min_stocks_per_date=5), QUANTILES, 1)
    a = first_only(q, q[..., 2], target, date_index)
    b = single(q[:, :1], q[:, :1, 2], target[:, :1], date_index)
    for key in a:
        assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6)
    with pytest.raises(ValueError, match="2 horizon_weights for 4 horizons"):
        CombinedLoss(LossConfig(horizon_weights=(1.0, 0.0)), QUANTILES, 4)


def test_bad_inputs_are_named():
    pred, target, date_index = panel()
    with pytest.raises(ValueError, match="date_index"):
        per_date_ic(pred, target, date_index.view(-1, 1))
    with pytest.raises(ValueError, match=r"\[N, H\]"):
        per_date_ic(pred, target[:, :1], date_index)
    with pytest.raises(ValueError, match="n_dates"):
        per_date_ic(pred, target, date_index, n_dates=2)
