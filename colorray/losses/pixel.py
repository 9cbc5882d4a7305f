"""Pixel losses on normalized ab (family ``"pixel"``): l1, mse, smooth_l1, tv, color_weighted.

All are called ``loss(pred_ab, true_ab, L)`` and compute in float32 whatever
the prediction's dtype. The generic ones (l1, mse, smooth_l1, tv) also take
sRGB 0..1 predictions of the models that predict RGB (N, 3, H, W). ``color_weighted`` is the Places study's loss: each
pixel's L1 or L2 error weighted by the inverse frequency of its true color,
i.e. Zhang et al.'s rebalancing weight of the pixel's nearest ab bin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from colorray import color
from colorray.data.prior import PRIOR_HELP, load_prior
from colorray.losses import LOSSES

ERRORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": lambda pred, true: (pred - true).abs(),
    "mse": lambda pred, true: (pred - true).pow(2),
}


class PixelLoss(nn.Module):
    """Base of the pixel family: checks shapes, casts to float32, calls ``compute``."""

    channels: tuple[int, ...] = (2, 3)  # ab, or RGB for the models that predict RGB

    def forward(self, pred_ab: torch.Tensor, true_ab: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        if pred_ab.shape != true_ab.shape or pred_ab.ndim != 4 or pred_ab.shape[1] not in self.channels:
            shapes = " or ".join(f"(N, {c}, H, W)" for c in self.channels)
            raise ValueError(
                f"{type(self).__name__} needs pred_ab and true_ab of one shape {shapes}, "
                f"got {tuple(pred_ab.shape)} and {tuple(true_ab.shape)}"
            )
        return self.compute(pred_ab.float(), true_ab.float(), L)

    def compute(self, pred_ab: torch.Tensor, true_ab: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ElementwiseLoss(PixelLoss):
    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    def compute(self, pred_ab: torch.Tensor, true_ab: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        return self.criterion(pred_ab, true_ab)


class TotalVariationLoss(PixelLoss):
    """Anisotropic total variation of the prediction: mean |vertical| + mean |horizontal| differences."""

    def compute(self, pred_ab: torch.Tensor, true_ab: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        vertical = (pred_ab[..., 1:, :] - pred_ab[..., :-1, :]).abs().mean()
        horizontal = (pred_ab[..., :, 1:] - pred_ab[..., :, :-1]).abs().mean()
        return vertical + horizontal


class ColorWeightedLoss(PixelLoss):
    """mean over pixels of w(nearest bin of true ab) * error averaged over a and b; E_prior[w] = 1."""

    channels = (2,)

    def __init__(self, class_weights: torch.Tensor, bins: torch.Tensor, base: str):
        super().__init__()
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.register_buffer("bins", bins, persistent=False)
        self.error = ERRORS[base]

    def compute(self, pred_ab: torch.Tensor, true_ab: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        bins = self.bins.to(true_ab.device)
        weight = color.pixel_rebalance_weights(color.denormalize_ab(true_ab), self.class_weights, bins)
        return (weight * self.error(pred_ab, true_ab).mean(1, keepdim=True)).mean()


@LOSSES.register("l1", family="pixel")
def l1() -> nn.Module:
    return ElementwiseLoss(nn.L1Loss())


@LOSSES.register("mse", family="pixel")
def mse() -> nn.Module:
    return ElementwiseLoss(nn.MSELoss())


@LOSSES.register("smooth_l1", family="pixel")
def smooth_l1(beta: float = 0.1) -> nn.Module:
    """Huber-like loss; ``beta`` in normalized ab units (0.1 = 11 ab units; torch's 1.0 would be MSE/2 here)."""
    if beta <= 0:
        raise ValueError(f"smooth_l1 needs beta > 0, got {beta}")
    return ElementwiseLoss(nn.SmoothL1Loss(beta=beta))


@LOSSES.register("tv", family="pixel")
def tv() -> nn.Module:
    return TotalVariationLoss()


@LOSSES.register("color_weighted", family="pixel")
def color_weighted(
    prior: torch.Tensor | np.ndarray | str | Path | None = None,
    base: str = "l1",
    mix: float = 0.5,
    sigma: float = 5.0,
) -> nn.Module:
    if prior is None or (isinstance(prior, str) and not prior):
        raise ValueError(f"loss 'color_weighted' needs an ab prior: {PRIOR_HELP}")
    if base not in ERRORS:
        raise ValueError(f"color_weighted base must be one of {', '.join(ERRORS)}, got {base!r}")
    bins = color.ab_bins()
    return ColorWeightedLoss(color.rebalance_weights(load_prior(prior), bins, mix, sigma), bins, base)
