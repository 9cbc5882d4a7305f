"""``resnet_regressor``: ResNet-18 trunk + upsampling head regressing ab (the Michigan Lab CNN, the Places poster's model).

The trunk is torchvision's ResNet-18 on one channel, cut after ``layer2``
(128 channels at 1/8 resolution); the head is three rounds of conv and
bilinear x2 upsampling back to full resolution, ending in a conv to ab and tanh.
"""

from __future__ import annotations

import torch
from torch import nn

from colorray.models import MODELS
from colorray.models.backbones import ResNetEncoder
from colorray.models.layers import (
    check_channels,
    conv_bn_relu,
    crop_to,
    pad_to_multiple,
    upsample,
)

TRUNK_STAGES = 2
TRUNK_STRIDE = 8


class ResNetRegressor(nn.Module):
    def __init__(self, pretrained: str = "none"):
        super().__init__()
        self.trunk = ResNetEncoder(18, num_stages=TRUNK_STAGES, pretrained=pretrained)
        self.head = nn.Sequential(
            conv_bn_relu(self.trunk.channels[-1], 128),
            upsample(),
            conv_bn_relu(128, 64),
            conv_bn_relu(64, 64),
            upsample(),
            conv_bn_relu(64, 32),
            nn.Conv2d(32, 2, 3, padding=1),
            upsample(),
            nn.Tanh(),
        )

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        check_channels(L, 1, "resnet_regressor")
        x, size = pad_to_multiple(L, TRUNK_STRIDE)
        return crop_to(self.head(self.trunk(x)[-1]), size)


@MODELS.register("resnet_regressor", output="ab")
def resnet_regressor(pretrained: str = "none") -> nn.Module:
    return ResNetRegressor(pretrained)
