"""The U-Net skeleton shared by ``unet``, ``resnet_unet`` and ``attention_unet``.

An encoder returns its feature maps finest first; the deepest is decoded by
stages that each double the resolution and join the next finer map (the skip),
optionally re-weighted by an additive attention gate (Oktay et al. 2018).
"""

from __future__ import annotations

import torch
from torch import nn

from colorray.models.layers import check_channels, crop_to, pad_to_multiple


class AttentionGate(nn.Module):
    """Additive attention: skip features scaled by sigmoid(psi(relu(W_x skip + W_g gate))) per pixel."""

    def __init__(self, skip_channels: int, gate_channels: int):
        super().__init__()
        inner = max(1, skip_channels // 2)
        self.skip_proj = nn.Sequential(nn.Conv2d(skip_channels, inner, 1, bias=False), nn.BatchNorm2d(inner))
        self.gate_proj = nn.Sequential(nn.Conv2d(gate_channels, inner, 1, bias=False), nn.BatchNorm2d(inner))
        self.attention = nn.Sequential(nn.ReLU(), nn.Conv2d(inner, 1, 1), nn.Sigmoid())

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return skip * self.attention(self.skip_proj(skip) + self.gate_proj(gate))


class DecoderStage(nn.Module):
    """``up`` (doubles the resolution, ``up_channels`` out), concat with the (gated) skip, then ``fuse``."""

    def __init__(self, up: nn.Module, fuse: nn.Module, skip_channels: int, up_channels: int, attention: bool):
        super().__init__()
        self.up = up
        self.gate = AttentionGate(skip_channels, up_channels) if attention else None
        self.fuse = fuse

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if self.gate is not None:
            skip = self.gate(skip, x)
        return self.fuse(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """Pad L to ``multiple``, encode, decode stage by stage against the skips, apply ``head``, crop back."""

    def __init__(self, encoder: nn.Module, stages: list[DecoderStage], head: nn.Module, multiple: int, name: str):
        super().__init__()
        self.encoder = encoder
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.multiple = multiple
        self.name = name

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        check_channels(L, 1, self.name)
        x, size = pad_to_multiple(L, self.multiple)
        *skips, x = self.encoder(x)
        for stage, skip in zip(self.stages, reversed(skips)):
            x = stage(x, skip)
        return crop_to(self.head(x), size)
