"""``unet``: the pix2pix U-Net generator (``unet_256``) predicting ab; ``unet_rgb``: the same predicting sRGB.

``num_downs`` down blocks (4x4 stride-2 conv + BatchNorm + LeakyReLU 0.2; no
BatchNorm in the outermost and innermost) with ``ngf * min(2**i, 8)`` channels,
mirrored up blocks (4x4 stride-2 transposed conv + BatchNorm + ReLU) joined to
each down block's output, dropout 0.5 in the ``num_downs - 5`` up blocks after
the innermost (three for ``unet_256``), as in pix2pix. ``pix2pix_unet`` with
``attention=True`` is ``attention_unet``'s plain variant. ``unet_rgb`` (the
Michigan study's GAN on RGB) ends in three channels and a sigmoid instead of
two and a tanh.
"""

from __future__ import annotations

import torch
from torch import nn

from colorray.models import MODELS
from colorray.models.unet_parts import DecoderStage, UNet


def down_block(in_ch: int, out_ch: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def up_block(in_ch: int, out_ch: int, dropout: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]
    if dropout:
        layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers)


class DownPath(nn.Module):
    """The down blocks; ``forward`` returns every block's output, finest first."""

    def __init__(self, channels: list[int]):
        super().__init__()
        last = len(channels) - 1
        self.blocks = nn.ModuleList(
            down_block(1 if i == 0 else channels[i - 1], ch, batch_norm=0 < i < last) for i, ch in enumerate(channels)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


def pix2pix_unet(ngf: int, num_downs: int, dropout: bool, attention: bool, name: str, rgb: bool = False) -> UNet:
    if num_downs < 2 or ngf < 1:
        raise ValueError(f"{name} needs num_downs >= 2 and ngf >= 1, got num_downs={num_downs}, ngf={ngf}")
    channels = [ngf * min(2**i, 8) for i in range(num_downs)]
    stages, in_ch = [], channels[-1]
    for depth, skip_ch in enumerate(reversed(channels[:-1])):
        up = up_block(in_ch, skip_ch, dropout=dropout and 1 <= depth <= num_downs - 5)
        stages.append(DecoderStage(up, nn.Identity(), skip_ch, skip_ch, attention))
        in_ch = 2 * skip_ch
    out_ch, activation = (3, nn.Sigmoid()) if rgb else (2, nn.Tanh())
    head = nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1), activation)
    return UNet(DownPath(channels), stages, head, multiple=2**num_downs, name=name)


@MODELS.register("unet", output="ab")
def unet(ngf: int = 64, num_downs: int = 8, dropout: bool = True) -> nn.Module:
    return pix2pix_unet(ngf, num_downs, dropout, attention=False, name="unet")


@MODELS.register("unet_rgb", output="rgb")
def unet_rgb(ngf: int = 64, num_downs: int = 8, dropout: bool = True) -> nn.Module:
    return pix2pix_unet(ngf, num_downs, dropout, attention=False, name="unet_rgb", rgb=True)
