"""``adversarial`` (family ``"adversarial"``): the GAN objective on a critic's (patch) logits.

Called ``loss(critic_logits, target_is_real)``; ``mode="vanilla"`` is the
binary cross-entropy with logits of pix2pix, ``mode="lsgan"`` the least-squares
GAN's MSE to 1 (real) or 0 (fake).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorray.losses import LOSSES

CRITERIA = {
    "vanilla": F.binary_cross_entropy_with_logits,
    "lsgan": F.mse_loss,
}


class AdversarialLoss(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.criterion = CRITERIA[mode]

    def forward(self, critic_logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        logits = critic_logits.float()
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        return self.criterion(logits, target)


@LOSSES.register("adversarial", family="adversarial")
def adversarial(mode: str = "vanilla") -> nn.Module:
    if mode not in CRITERIA:
        raise ValueError(f"adversarial mode must be one of {', '.join(CRITERIA)}, got {mode!r}")
    return AdversarialLoss(mode)
