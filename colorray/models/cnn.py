"""``cnn``: the plain small encoder-decoder baseline (the DTU study's baseline CNN); the smoke default."""

from __future__ import annotations

import torch
from torch import nn

from colorray.models import MODELS
from colorray.models.layers import (
    check_channels,
    conv_bn_relu,
    crop_to,
    pad_to_multiple,
    upsample,
)


class EncoderDecoderCNN(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            conv_bn_relu(1, width),
            conv_bn_relu(width, width * 2, stride=2),
            conv_bn_relu(width * 2, width * 4, stride=2),
            conv_bn_relu(width * 4, width * 4, dilation=2),
        )
        self.decoder = nn.Sequential(
            upsample(),
            conv_bn_relu(width * 4, width * 2),
            upsample(),
            conv_bn_relu(width * 2, width),
            nn.Conv2d(width, 2, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        check_channels(L, 1, "cnn")
        x, size = pad_to_multiple(L, 4)
        return crop_to(self.decoder(self.encoder(x)), size)


@MODELS.register("cnn", output="ab")
def cnn(width: int = 32) -> nn.Module:
    return EncoderDecoderCNN(width)
