"""Building blocks shared by the architectures: padding to a stride multiple, input checks, width scaling and common conv blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad H and W up to a multiple of ``multiple``; returns the padded tensor and original size."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x[..., : size[0], : size[1]]


def check_channels(x: torch.Tensor, channels: int, model: str) -> None:
    """Raise a clear error unless ``x`` is a batch (N, channels, H, W)."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{model} expects input of shape (N, {channels}, H, W), got {tuple(x.shape)}")


def scaled(channels: int, width: float) -> int:
    """A paper's channel count times the width multiplier ``width`` (at least one channel)."""
    if width <= 0:
        raise ValueError(f"width must be a positive multiplier, got {width}")
    return max(1, round(channels * width))


def upsample(scale_factor: int = 2) -> nn.Upsample:
    return nn.Upsample(scale_factor=scale_factor, mode="bilinear", align_corners=False)


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def conv_relu_stack(
    in_ch: int, out_ch: int, num_convs: int, stride: int = 1, dilation: int = 1, batch_norm: bool = True
) -> nn.Sequential:
    """Zhang et al.'s block: ``num_convs`` x (3x3 conv + ReLU), the last conv strided, then BatchNorm."""
    layers: list[nn.Module] = []
    for index in range(num_convs):
        last = index == num_convs - 1
        layers += [
            nn.Conv2d(
                in_ch if index == 0 else out_ch,
                out_ch,
                3,
                stride=stride if last else 1,
                padding=dilation,
                dilation=dilation,
            ),
            nn.ReLU(inplace=True),
        ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    return nn.Sequential(*layers)


def upsampling_stack(in_ch: int, out_ch: int, num_convs: int, batch_norm: bool) -> nn.Sequential:
    """A 4x4 stride-2 transposed conv + ReLU doubling the resolution, then ``conv_relu_stack``."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1),
        nn.ReLU(inplace=True),
        *conv_relu_stack(out_ch, out_ch, num_convs, batch_norm=batch_norm),
    )
