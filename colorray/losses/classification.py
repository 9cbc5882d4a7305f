"""``class_ce`` (family ``"class"``): cross-entropy of a fusion net's classification head (Iizuka et al.).

Called ``loss(class_logits, labels)`` with int64 labels where -1 marks an
unlabeled image: those are ignored, and a batch with no label gives 0 while
keeping the graph (so every rank's backward still runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorray.losses import LOSSES

UNLABELED = -1


class ClassCrossEntropy(nn.Module):
    def forward(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if class_logits.ndim != 2 or labels.shape != class_logits.shape[:1]:
            raise ValueError(
                "class_ce needs logits (N, C) and labels (N,), "
                f"got {tuple(class_logits.shape)} and {tuple(labels.shape)}"
            )
        labels = labels.to(device=class_logits.device, dtype=torch.long)
        total = F.cross_entropy(class_logits.float(), labels, ignore_index=UNLABELED, reduction="sum")
        return total / (labels != UNLABELED).sum().clamp(min=1)


@LOSSES.register("class_ce", family="class")
def class_ce() -> nn.Module:
    return ClassCrossEntropy()
