"""``rebalanced_ce`` (family ``"bins"``): Zhang et al.'s class-rebalanced multinomial cross-entropy.

Called ``loss(logits, true_ab, L)`` with logits (N, Q, h, w) over ``bins``
(default ``color.ab_bins()``; the training objective passes the model's own,
e.g. Zhang et al.'s 313, onto which the prior is moved) and normalized true ab (N, 2, H, W), H >= h. The true ab is
average-pooled to (h, w), soft-encoded onto its ``neighbours`` nearest bins
with a Gaussian of ``sigma`` (ab units), and each pixel's cross-entropy
-sum_k w_k log softmax(logits)[bin_k] (a gather on the sparse encoding) is
weighted by the rebalancing weight of the pixel's nearest bin, then averaged
over pixels. The weights come from ``prior`` (counts per bin, a tensor or a
.npy path) smoothed by ``prior_sigma`` and mixed with the uniform
distribution by ``mix``. Without a prior the loss refuses to be built rather
than quietly train unweighted; ``rebalance=False`` asks for the plain
(unweighted) cross-entropy, every pixel weighing 1, and ignores any prior.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colorray import color
from colorray.data.prior import PRIOR_HELP, load_prior
from colorray.losses import LOSSES


class RebalancedCrossEntropy(nn.Module):
    def __init__(self, class_weights: torch.Tensor, bins: torch.Tensor, neighbours: int, sigma: float):
        super().__init__()
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.register_buffer("bins", bins, persistent=False)
        self.neighbours = neighbours
        self.sigma = sigma

    def forward(self, logits: torch.Tensor, true_ab: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        num_bins = self.bins.shape[0]
        if logits.ndim != 4 or logits.shape[1] != num_bins or true_ab.ndim != 4 or true_ab.shape[1] != 2:
            raise ValueError(
                f"rebalanced_ce needs logits (N, {num_bins}, h, w) and true_ab (N, 2, H, W), "
                f"got {tuple(logits.shape)} and {tuple(true_ab.shape)}"
            )
        target_ab = color.denormalize_ab(F.adaptive_avg_pool2d(true_ab.float(), logits.shape[-2:]))
        index, weight = color.soft_encode(target_ab, self.bins.to(logits.device), self.neighbours, self.sigma)
        log_probs = torch.log_softmax(logits.float(), dim=1)
        per_pixel = -(weight * log_probs.gather(1, index)).sum(1)
        pixel_weight = self.class_weights.to(logits.device)[index[:, 0]]
        return (pixel_weight * per_pixel).mean()


@LOSSES.register("rebalanced_ce", family="bins")
def rebalanced_ce(
    prior: torch.Tensor | np.ndarray | str | Path | None = None,
    mix: float = 0.5,
    prior_sigma: float = 5.0,
    neighbours: int = 5,
    sigma: float = 5.0,
    bins: torch.Tensor | None = None,
    rebalance: bool = True,
) -> nn.Module:
    bins = color.ab_bins() if bins is None else bins.detach().float().cpu()
    if not 1 <= neighbours <= bins.shape[0] or sigma <= 0:
        raise ValueError(
            f"rebalanced_ce needs 1 <= neighbours <= {bins.shape[0]} and sigma > 0, got {neighbours} and {sigma}"
        )
    if not rebalance:
        class_weights = torch.ones(bins.shape[0])
    elif prior is None or (isinstance(prior, str) and not prior):
        raise ValueError(f"loss 'rebalanced_ce' rebalances by an ab prior and none was given: {PRIOR_HELP}; "
                         "for plain cross-entropy set loss.options.rebalanced_ce.rebalance=false")
    else:
        class_weights = color.rebalance_weights(color.prior_on_bins(load_prior(prior), bins), bins, mix, prior_sigma)
    return RebalancedCrossEntropy(class_weights, bins, neighbours, sigma)
