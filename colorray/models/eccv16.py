"""``eccv16`` and ``eccv16_vgg19``: Zhang et al.'s classification colorizers (ECCV 2016), output "bins".

``eccv16`` is the paper's network: eight blocks of 3x3 conv + ReLU (x2 or x3)
closed by BatchNorm, strided down to 1/8 by blocks 1-3, dilation 2 in blocks
5 and 6, then a 4x4 transposed conv back to 1/4 resolution and a 1x1 conv to
logits over the Q in-gamut ab bins of ``colorray.color.ab_bins``.
``eccv16_vgg19`` (the Texas A&M study's choice) replaces blocks 1-4 with
torchvision's VGG-19 up to relu4_4, optionally ImageNet-pretrained.
``width`` multiplies the paper's 64..512 channels (of the Zhang head only in
the VGG variant, whose trunk keeps VGG's shape).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from colorray import color
from colorray.models import MODELS
from colorray.models.backbones import vgg19_trunk
from colorray.models.layers import (
    check_channels,
    conv_relu_stack,
    crop_to,
    pad_to_multiple,
    scaled,
    upsampling_stack,
)

ECCV16_STRIDE = 8
OUTPUT_STRIDE = 4


def zhang_trunk(width: float) -> nn.Sequential:
    """Blocks 1-4: 1 -> 512 channels at 1/8 resolution."""
    c = [scaled(n, width) for n in (64, 128, 256, 512)]
    return nn.Sequential(
        conv_relu_stack(1, c[0], 2, stride=2),
        conv_relu_stack(c[0], c[1], 2, stride=2),
        conv_relu_stack(c[1], c[2], 3, stride=2),
        conv_relu_stack(c[2], c[3], 3),
    )


def zhang_head(in_ch: int, width: float) -> nn.Sequential:
    """Blocks 5-8 from 1/8 resolution: dilated blocks, a plain block, up to 1/4, logits over the ab bins."""
    c, c_up = scaled(512, width), scaled(256, width)
    num_bins = color.ab_bins().shape[0]
    return nn.Sequential(
        conv_relu_stack(in_ch, c, 3, dilation=2),
        conv_relu_stack(c, c, 3, dilation=2),
        conv_relu_stack(c, c, 3),
        upsampling_stack(c, c_up, 2, batch_norm=False),
        nn.Conv2d(c_up, num_bins, 1),
    )


class BinClassifier(nn.Module):
    """``trunk`` to 1/8 resolution then ``head`` to logits at 1/4: (N, Q, ceil(H/4), ceil(W/4))."""

    def __init__(self, trunk: nn.Module, head: nn.Module, name: str):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.name = name

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        check_channels(L, 1, self.name)
        x, (h, w) = pad_to_multiple(L, ECCV16_STRIDE)
        logits = self.head(self.trunk(x))
        return crop_to(logits, (math.ceil(h / OUTPUT_STRIDE), math.ceil(w / OUTPUT_STRIDE)))


@MODELS.register("eccv16", output="bins")
def eccv16(width: float = 1.0) -> nn.Module:
    return BinClassifier(zhang_trunk(width), zhang_head(scaled(512, width), width), "eccv16")


@MODELS.register("eccv16_vgg19", output="bins")
def eccv16_vgg19(pretrained: str = "none", width: float = 1.0) -> nn.Module:
    return BinClassifier(vgg19_trunk(pretrained), zhang_head(512, width), "eccv16_vgg19")
