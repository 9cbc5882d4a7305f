"""``rgb_cnn``: the Michigan study's 8-block dilated CNN predicting sRGB directly (output "rgb").

Each block is conv-ReLU-conv-ReLU-BatchNorm: blocks 1-3 halve the resolution
(stride 2 on their second conv) to 1/8, blocks 4-6 stay there with dilation 2
in blocks 5 and 6, blocks 7 and 8 start with a 4x4 stride-2 transposed conv
(back to 1/2), and a last transposed conv + sigmoid gives RGB at full
resolution. ``width`` multiplies the 64..512 channels.
"""

from __future__ import annotations

import torch
from torch import nn

from colorray.models import MODELS
from colorray.models.layers import (
    check_channels,
    conv_relu_stack,
    crop_to,
    pad_to_multiple,
    scaled,
    upsampling_stack,
)

RGB_CNN_STRIDE = 8
BLOCK_CHANNELS = (64, 128, 256, 512, 512, 512, 256, 128)


class DilatedRGBCNN(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [scaled(n, width) for n in BLOCK_CHANNELS]
        self.blocks = nn.Sequential(
            conv_relu_stack(1, c[0], 2, stride=2),
            conv_relu_stack(c[0], c[1], 2, stride=2),
            conv_relu_stack(c[1], c[2], 2, stride=2),
            conv_relu_stack(c[2], c[3], 2),
            conv_relu_stack(c[3], c[4], 2, dilation=2),
            conv_relu_stack(c[4], c[5], 2, dilation=2),
            upsampling_stack(c[5], c[6], 1, batch_norm=True),
            upsampling_stack(c[6], c[7], 1, batch_norm=True),
        )
        self.to_rgb = nn.Sequential(nn.ConvTranspose2d(c[7], 3, 4, stride=2, padding=1), nn.Sigmoid())

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        check_channels(L, 1, "rgb_cnn")
        x, size = pad_to_multiple(L, RGB_CNN_STRIDE)
        return crop_to(self.to_rgb(self.blocks(x)), size)


@MODELS.register("rgb_cnn", output="rgb")
def rgb_cnn(width: float = 1.0) -> nn.Module:
    return DilatedRGBCNN(width)
