"""Training losses: quantile (pinball) loss and per-date ranking terms.

A batch holds the stocks of several dates stacked on one axis; ``date_index [N]`` says which
date each row belongs to. Every correlation and every long-short return is computed WITHIN
a date (DESIGN §7) and only then averaged over dates: pooling rows across dates would reward
predicting the market's day-to-day level instead of ranking stocks.

Conventions shared by every function here:

* ``pred [N, H]`` / ``target [N, H]``: one column per horizon. A target that is NaN (unknown,
  e.g. the horizon runs past the data) or excluded by ``valid [N, H]`` is *masked*: it adds
  nothing to any term and produces no NaN gradient (it is never replaced by 0 as a value).
* Per (date, horizon) statistics need ``min_count`` valid stocks; dates below it are left out.
* Per-horizon results are averaged over dates, then combined over horizons with
  ``horizon_weights`` (equal by default) renormalised over horizons that have data.
* A term with no usable data is an exact 0 that keeps the autograd graph intact.

``CombinedLoss`` first maps each (date, horizon)'s targets with ``transform_targets``
(``LossConfig.target_transform``); the terms then see the transformed targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from atft_pipeline.model.config import LossConfig, TargetTransform

_EPS = 1e-12


# --------------------------------------------------------------------------- group helpers


def _valid_mask(target: Tensor, valid: Tensor | None) -> Tensor:
    ok = torch.isfinite(target)
    if valid is not None:
        if valid.shape != target.shape:
            raise ValueError(
                f"valid mask {tuple(valid.shape)} does not match target {tuple(target.shape)}"
            )
        ok = ok & valid.bool()
    return ok


def _date_groups(date_index: Tensor, n_dates: int | None, n_horizons: int) -> tuple[Tensor, int]:
    """Group id of every (row, horizon) cell: date·H + h, flattened like ``[N, H]``."""
    if date_index.dim() != 1:
        raise ValueError(f"date_index must be [N], got {tuple(date_index.shape)}")
    if date_index.numel() and int(date_index.min()) < 0:
        raise ValueError("date_index must be ≥ 0")
    if n_dates is None:
        n_dates = int(date_index.max()) + 1 if date_index.numel() else 0
    elif date_index.numel() and int(date_index.max()) >= n_dates:
        raise ValueError(f"date_index has values ≥ n_dates={n_dates}")
    horizon = torch.arange(n_horizons, device=date_index.device)
    return (date_index.long().unsqueeze(-1) * n_horizons + horizon).flatten(), n_dates


def _check_pair(pred: Tensor, target: Tensor, date_index: Tensor) -> None:
    if pred.dim() != 2 or pred.shape != target.shape or pred.shape[0] != date_index.shape[0]:
        raise ValueError(
            f"pred and target must both be [N, H] with N = len(date_index); got "
            f"{tuple(pred.shape)}, {tuple(target.shape)}, date_index {tuple(date_index.shape)}"
        )


def _group_sum(values: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    return values.new_zeros(n_groups).index_add_(0, groups, values)


def _group_centered(
    values: Tensor, groups: Tensor, n_groups: int, weight: Tensor, count: Tensor
) -> Tensor:
    """``values`` minus its group mean over the weighted (valid) rows; 0 on invalid rows."""
    mean = _group_sum(values * weight, groups, n_groups) / count.clamp_min(1.0)
    return (values - mean[groups]) * weight


def group_pearson(
    a: Tensor, b: Tensor, groups: Tensor, n_groups: int, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """Pearson correlation of ``a`` and ``b`` within each group, over ``valid`` rows.

    Shapes: ``a, b, groups, valid [M]`` -> ``(corr [n_groups], count [n_groups])``. ``b`` may
    hold NaN on invalid rows. Two-pass (centred) for accuracy; differentiable in ``a`` and ``b``.
    """
    weight = valid.to(a.dtype)
    a = torch.where(valid, a, 0.0)
    b = torch.where(valid, b, 0.0)
    count = _group_sum(weight, groups, n_groups)
    ca = _group_centered(a, groups, n_groups, weight, count)
    cb = _group_centered(b, groups, n_groups, weight, count)
    n = count.clamp_min(1.0)
    cov = _group_sum(ca * cb, groups, n_groups) / n
    var_a = _group_sum(ca * ca, groups, n_groups) / n
    var_b = _group_sum(cb * cb, groups, n_groups) / n
    return cov / (torch.sqrt(var_a + _EPS) * torch.sqrt(var_b + _EPS)), count


def rank_within_groups(values: Tensor, groups: Tensor, n_groups: int, valid: Tensor) -> Tensor:
    """1-based ranks of ``values`` within each group, ties averaged (scipy ``rankdata``).

    Shapes: ``[M] -> [M]``; NaN on invalid rows. Not differentiable (ranks are constants).
    """
    if values.numel() == 0:
        return values.new_empty(0)
    # Order rows by (group, value); invalid rows go to a trailing pseudo-group.
    g = torch.where(valid, groups, n_groups)
    v = torch.where(valid, values, 0.0).detach()
    order = torch.argsort(v, stable=True)
    order = order[torch.argsort(g[order], stable=True)]
    sorted_groups, sorted_values = g[order], v[order]
    counts = torch.bincount(g, minlength=n_groups + 1)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(values.numel(), device=values.device, dtype=torch.float64)
    rank = position - starts[sorted_groups] + 1.0
    # Ties: a run of equal (group, value) shares the mean of its ranks.
    new_run = torch.ones_like(sorted_groups, dtype=torch.bool)
    new_run[1:] = (sorted_groups[1:] != sorted_groups[:-1]) | (
        sorted_values[1:] != sorted_values[:-1]
    )
    run = torch.cumsum(new_run, 0) - 1
    n_runs = int(run[-1]) + 1
    run_mean = rank.new_zeros(n_runs).index_add_(0, run, rank) / torch.bincount(
        run, minlength=n_runs
    )
    ranks = torch.empty_like(rank)
    ranks[order] = run_mean[run]
    return torch.where(valid, ranks.to(values.dtype), torch.nan)


def transform_targets(
    target: Tensor,
    date_index: Tensor,
    transform: TargetTransform,
    *,
    n_dates: int | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """``target [N, H]`` mapped within each (date, horizon) over its valid cells.

    * ``raw``: unchanged (the same tensor);
    * ``demean``: minus the mean;
    * ``zscore``: minus the mean, over the std (ddof 0); 0 where the std is 0 (one stock, or
      all equal);
    * ``normal_score``: Φ⁻¹((rank − 0.5) / n), ranks 1..n with ties averaged — a date's targets
      become the same n standard-normal scores whatever their distribution, so fat-tailed days
      and horizons weigh alike.

    A cell that is NaN or outside ``valid`` takes no part and comes back NaN. Only the cells of
    the same date and horizon enter a cell's value (nothing crosses dates). Computed in float64,
    returned in ``target``'s dtype; not differentiable (targets are data).
    """
    if transform == "raw":
        return target
    if target.dim() != 2 or target.shape[0] != date_index.shape[0]:
        raise ValueError(
            f"target must be [N, H] with N = len(date_index); got {tuple(target.shape)}, "
            f"date_index {tuple(date_index.shape)}"
        )
    groups, n_dates = _date_groups(date_index, n_dates, target.shape[1])
    n_groups = n_dates * target.shape[1]
    ok = _valid_mask(target, valid).flatten()
    weight = ok.double()
    y = torch.where(ok, target.flatten().double(), 0.0)
    count = _group_sum(weight, groups, n_groups)
    if transform == "normal_score":
        rank = rank_within_groups(y, groups, n_groups, ok)
        out = torch.special.ndtri((rank - 0.5) / count[groups].clamp_min(1.0))
    elif transform in ("demean", "zscore"):
        out = _group_centered(y, groups, n_groups, weight, count)
        if transform == "zscore":
            std = torch.sqrt(_group_sum(out * out, groups, n_groups) / count.clamp_min(1.0))[groups]
            # a constant date's centred values are rounding noise, not a spread to scale up
            out = torch.where(std > _EPS, out / std.clamp_min(_EPS), 0.0)
    else:
        raise ValueError(f"unknown target transform {transform!r}")
    return torch.where(ok, out, torch.nan).view_as(target).to(target.dtype)


def _mean_over_dates(values: Tensor, ok: Tensor, horizon_weights: Tensor | None) -> Tensor:
    """``values, ok [D, H]`` -> Σ_h w_h·mean_{ok dates}(values[:, h]) / Σ_{h with data} w_h."""
    values = torch.where(ok, values, 0.0)
    n = ok.sum(0)
    per_horizon = values.sum(0) / n.clamp_min(1)
    return _combine_horizons(per_horizon, n > 0, horizon_weights)


def _combine_horizons(
    per_horizon: Tensor, has_data: Tensor, horizon_weights: Tensor | None
) -> Tensor:
    w = torch.ones_like(per_horizon) if horizon_weights is None else horizon_weights.to(per_horizon)
    w = torch.where(has_data, w, 0.0)
    total = w.sum()
    return (w * torch.where(has_data, per_horizon, 0.0)).sum() / torch.where(total > 0, total, 1.0)


# --------------------------------------------------------------------------- loss terms


def pinball_loss(
    quantile_pred: Tensor,
    target: Tensor,
    quantiles: Sequence[float] | Tensor,
    valid: Tensor | None = None,
    horizon_weights: Tensor | None = None,
) -> Tensor:
    """Quantile loss ρ_τ(e) = max(τ·e, (τ − 1)·e), e = y − q̂_τ.

    Shapes: ``quantile_pred [N, H, Q]``, ``target [N, H]``, ``quantiles [Q]`` -> scalar: mean
    over quantiles, mean over valid rows per horizon, weighted mean over horizons.
    """
    if quantile_pred.dim() != 3 or quantile_pred.shape[:2] != target.shape:
        raise ValueError(
            f"quantile_pred must be [N, H, Q] over target [N, H], got "
            f"{tuple(quantile_pred.shape)} and {tuple(target.shape)}"
        )
    tau = torch.as_tensor(quantiles, dtype=quantile_pred.dtype, device=quantile_pred.device)
    if tau.shape != quantile_pred.shape[-1:]:
        raise ValueError(f"{tau.numel()} quantile levels for {quantile_pred.shape[-1]} outputs")
    ok = _valid_mask(target, valid)
    error = torch.where(ok, target, 0.0).unsqueeze(-1) - quantile_pred
    loss = torch.maximum(tau * error, (tau - 1.0) * error).mean(-1)  # [N, H]
    n = ok.sum(0)
    per_horizon = torch.where(ok, loss, 0.0).sum(0) / n.clamp_min(1)
    return _combine_horizons(per_horizon, n > 0, horizon_weights)


def per_date_ic(
    pred: Tensor,
    target: Tensor,
    date_index: Tensor,
    *,
    n_dates: int | None = None,
    valid: Tensor | None = None,
    min_count: int = 2,
    horizon_weights: Tensor | None = None,
) -> Tensor:
    """Mean over dates of the per-date Pearson correlation of ``pred`` and ``target``."""
    _check_pair(pred, target, date_index)
    groups, n_dates = _date_groups(date_index, n_dates, pred.shape[1])
    ok = _valid_mask(target, valid)
    return _per_date_correlation(pred, target, groups, n_dates, ok, min_count, horizon_weights)


def per_date_rank_ic_surrogate(
    pred: Tensor,
    target: Tensor,
    date_index: Tensor,
    *,
    n_dates: int | None = None,
    valid: Tensor | None = None,
    min_count: int = 2,
    horizon_weights: Tensor | None = None,
) -> Tensor:
    """Differentiable stand-in for RankIC: per date, Pearson(pred, rank of target), averaged.

    Ranking the target (ties averaged) makes the term insensitive to the target's outliers,
    as Spearman is; the prediction stays unranked so the gradient exists. It equals the
    date's Spearman correlation whenever the predictions are equally spaced (an increasing
    affine function of their own ranks).
    """
    _check_pair(pred, target, date_index)
    groups, n_dates = _date_groups(date_index, n_dates, pred.shape[1])
    ok = _valid_mask(target, valid)
    ranked = rank_within_groups(target.flatten(), groups, n_dates * pred.shape[1], ok.flatten())
    return _per_date_correlation(
        pred, ranked.view_as(target), groups, n_dates, ok, min_count, horizon_weights
    )


def _per_date_correlation(
    pred: Tensor,
    target: Tensor,
    groups: Tensor,
    n_dates: int,
    ok: Tensor,
    min_count: int,
    horizon_weights: Tensor | None,
) -> Tensor:
    n_horizons = pred.shape[1]
    corr, count = group_pearson(
        pred.flatten(), target.flatten(), groups, n_dates * n_horizons, ok.flatten()
    )
    shape = (n_dates, n_horizons)
    return _mean_over_dates(
        corr.view(shape), (count >= max(min_count, 2)).view(shape), horizon_weights
    )


def long_short_sharpe(
    pred: Tensor,
    target: Tensor,
    date_index: Tensor,
    *,
    n_dates: int | None = None,
    valid: Tensor | None = None,
    min_count: int = 2,
    horizon_weights: Tensor | None = None,
) -> Tensor:
    """Sharpe ratio (mean/std over the batch's dates, ddof=1, not annualised) of a
    prediction-weighted long-short book.

    Each date, stock i gets weight w_i = z_i / Σ_j |z_j| with z the date's z-scored prediction:
    a dollar-neutral book of unit gross exposure, long above the date's mean prediction and
    short below it. The date's return is Σ_i w_i·y_i. Needs ≥ 2 usable dates per horizon,
    else 0.

    Why not soft top/bottom-decile weights: their gradient is concentrated on the few stocks
    near the decile thresholds and scales with 1/temperature; measured on small batches it
    was two orders of magnitude larger than the IC term's and derailed training. z-scored
    weights spread the gradient over every stock, like the IC terms.
    """
    _check_pair(pred, target, date_index)
    n_horizons = pred.shape[1]
    groups, n_dates = _date_groups(date_index, n_dates, n_horizons)
    n_groups = n_dates * n_horizons
    ok = _valid_mask(target, valid).flatten()
    weight = ok.to(pred.dtype)
    p = torch.where(ok, pred.flatten(), 0.0)
    y = torch.where(ok, target.flatten(), 0.0)
    count = _group_sum(weight, groups, n_groups)
    centred = _group_centered(p, groups, n_groups, weight, count)
    std = torch.sqrt(_group_sum(centred**2, groups, n_groups) / count.clamp_min(1.0) + _EPS)
    z = centred / std[groups]
    gross = _group_sum(z.abs(), groups, n_groups).clamp_min(_EPS)
    daily = (_group_sum(z * y, groups, n_groups) / gross).view(n_dates, n_horizons)
    usable = (count >= max(min_count, 2)).view(n_dates, n_horizons)
    days = usable.sum(0)
    mean = torch.where(usable, daily, 0.0).sum(0) / days.clamp_min(1)
    var = (torch.where(usable, daily - mean, 0.0) ** 2).sum(0) / (days - 1).clamp_min(1)
    return _combine_horizons(mean / torch.sqrt(var + _EPS), days >= 2, horizon_weights)


# --------------------------------------------------------------------------- combined


class CombinedLoss(nn.Module):
    """The training objective (DESIGN §7), all terms on by default.

    ``forward(quantiles [N, H, Q], point [N, H], target [N, H], date_index [N], valid=None,
    n_dates=None)`` returns a dict of scalar tensors:

    * ``quantile`` — pinball loss (minimised);
    * ``rank_ic`` — per-date RankIC surrogate, ``ic`` — per-date IC, ``sharpe`` — long-short
      Sharpe over the batch's dates (all three maximised, computed on ``point``);
    * ``total`` = w_q·quantile − w_r·rank_ic − w_i·ic − w_s·S/√(1 + S²), S = sharpe.

    Every term sees the targets after ``config.target_transform`` (per date and horizon, see
    ``transform_targets``): with ``zscore`` / ``normal_score`` the quantile heads learn
    quantiles of the date's standardized score, not of the return (the model then needs
    ``ModelConfig.target_scale = "unit"``), and the Sharpe term's "returns" are scores.

    The Sharpe term enters squashed: S/√(1 + S²) rises monotonically with S (maximising it
    maximises S) but is bounded, so its gradient fades once S is large. Raw mean/std over
    a few dates has a 1/std gradient; when a batch's daily returns happen to be alike it
    swamped the other terms (measured: per-date IC on a learnable synthetic signal stalled at
    0.58 instead of 0.98 with weight 0.005).

    Everything is computed in float32 (the model may run under bf16 autocast).
    """

    def __init__(self, config: LossConfig, quantiles: Sequence[float], n_horizons: int) -> None:
        super().__init__()
        self.config = config
        self.register_buffer(
            "quantiles", torch.tensor(quantiles, dtype=torch.float32), persistent=False
        )
        weights = config.horizon_weights
        if weights is not None and len(weights) != n_horizons:
            raise ValueError(f"{len(weights)} horizon_weights for {n_horizons} horizons")
        self.register_buffer(
            "horizon_weights",
            torch.ones(n_horizons)
            if weights is None
            else torch.tensor(weights, dtype=torch.float32),
            persistent=False,
        )

    def forward(
        self,
        quantiles: Tensor,
        point: Tensor,
        target: Tensor,
        date_index: Tensor,
        valid: Tensor | None = None,
        n_dates: int | None = None,
    ) -> dict[str, Tensor]:
        c = self.config
        quantiles, point, target = quantiles.float(), point.float(), target.float()
        target = transform_targets(
            target, date_index, c.target_transform, n_dates=n_dates, valid=valid
        )
        common = dict(
            n_dates=n_dates,
            valid=valid,
            min_count=c.min_stocks_per_date,
            horizon_weights=self.horizon_weights,
        )
        terms = {
            "quantile": pinball_loss(
                quantiles, target, self.quantiles, valid, self.horizon_weights
            ),
            "rank_ic": per_date_rank_ic_surrogate(point, target, date_index, **common),
            "ic": per_date_ic(point, target, date_index, **common),
            "sharpe": long_short_sharpe(point, target, date_index, **common),
        }
        terms["total"] = (
            c.quantile_weight * terms["quantile"]
            - c.rank_ic_weight * terms["rank_ic"]
            - c.ic_weight * terms["ic"]
            - c.sharpe_weight * terms["sharpe"] / torch.sqrt(1.0 + terms["sharpe"] ** 2)
        )
        return terms
