"""``fusion``: Iizuka et al.'s "Let there be Color!" (SIGGRAPH 2016), the DTU study's CNN + classifier.

A shared low-level network (six 3x3 convs, stride 2 three times: 1/8) feeds
two paths: the mid-level network on the full input, and the global-features
network on the same input resized (antialiased) to 224x224 (four convs to 7x7, then fully
connected layers to a 512-d hidden vector and the 256-d global vector). The
fusion layer appends the global vector to every mid-level location and mixes
with a 1x1 conv; the colorization network upsamples to 1/2 resolution and to
ab (tanh), bilinearly resized to full resolution. A classification head on the
512-d hidden vector gives ``num_classes`` logits. Returns ``(ab, class_logits)``.
``width`` multiplies every channel and hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorray.models import MODELS
from colorray.models.layers import (
    check_channels,
    conv_bn_relu,
    crop_to,
    pad_to_multiple,
    scaled,
    upsample,
)

FUSION_STRIDE = 8
GLOBAL_INPUT_SIZE = 224
GLOBAL_GRID = GLOBAL_INPUT_SIZE // 32


def linear_relu(in_features: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, out_features), nn.ReLU(inplace=True))


class FusionColorizer(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"fusion needs num_classes >= 1, got {num_classes}")
        c = {n: scaled(n, width) for n in (32, 64, 128, 256, 512, 1024)}
        self.low_level = nn.Sequential(
            conv_bn_relu(1, c[64], stride=2),
            conv_bn_relu(c[64], c[128]),
            conv_bn_relu(c[128], c[128], stride=2),
            conv_bn_relu(c[128], c[256]),
            conv_bn_relu(c[256], c[256], stride=2),
            conv_bn_relu(c[256], c[512]),
        )
        self.mid_level = nn.Sequential(conv_bn_relu(c[512], c[512]), conv_bn_relu(c[512], c[256]))
        self.global_features = nn.Sequential(
            conv_bn_relu(c[512], c[512], stride=2),
            conv_bn_relu(c[512], c[512]),
            conv_bn_relu(c[512], c[512], stride=2),
            conv_bn_relu(c[512], c[512]),
            nn.Flatten(),
            linear_relu(GLOBAL_GRID * GLOBAL_GRID * c[512], c[1024]),
            linear_relu(c[1024], c[512]),
        )
        self.global_vector = linear_relu(c[512], c[256])
        self.classifier = nn.Sequential(linear_relu(c[512], c[256]), nn.Linear(c[256], num_classes))
        self.fusion = nn.Sequential(nn.Conv2d(2 * c[256], c[256], 1), nn.ReLU(inplace=True))
        self.colorization = nn.Sequential(
            conv_bn_relu(c[256], c[128]),
            upsample(),
            conv_bn_relu(c[128], c[64]),
            conv_bn_relu(c[64], c[64]),
            upsample(),
            conv_bn_relu(c[64], c[32]),
            nn.Conv2d(c[32], 2, 3, padding=1),
            upsample(),
            nn.Tanh(),
        )

    def forward(self, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_channels(L, 1, "fusion")
        x, size = pad_to_multiple(L, FUSION_STRIDE)
        mid = self.mid_level(self.low_level(x))
        small = F.interpolate(
            L, size=(GLOBAL_INPUT_SIZE, GLOBAL_INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
        hidden = self.global_features(self.low_level(small))
        vector = self.global_vector(hidden)[:, :, None, None].expand(-1, -1, *mid.shape[-2:])
        ab = self.colorization(self.fusion(torch.cat([mid, vector], dim=1)))
        return crop_to(ab, size), self.classifier(hidden)


@MODELS.register("fusion", output="ab")
def fusion(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return FusionColorizer(width, num_classes)
