"""Torchvision backbones (ResNet-18/34, VGG-19) adapted to one-channel L input.

Pretrained weights come only through ``colorray.models.weights.load_into``
(``pretrained="none"|"imagenet"|PATH``): they are loaded into the RGB layers
first and the first conv is then collapsed to one channel by summing its RGB
filters, which keeps its response to a gray image unchanged.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs as vgg_configs
from torchvision.models.vgg import make_layers as make_vgg_layers

from colorray.models import weights

RESNET_BUILDERS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34}
RESNET_STAGE_CHANNELS = (64, 128, 256, 512)
VGG19_RELU4_4 = 27  # features[:27] ends at relu4_4: 512 channels at 1/8 resolution


def one_channel_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """``conv`` taking one input channel, its filters the sum of the RGB filters."""
    gray = nn.Conv2d(
        1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        gray.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            gray.bias.copy_(conv.bias)
    return gray


class ResNetEncoder(nn.Module):
    """A torchvision ResNet's stem and first ``num_stages`` stages on one-channel input.

    ``forward`` returns the input and every resolution's features, finest
    first: [input, stem (1/2), layer1 (1/4), layer2 (1/8), layer3, layer4].
    Submodules keep torchvision's names, so its checkpoints load by name.
    """

    def __init__(self, depth: int = 18, num_stages: int = 4, pretrained: str = "none"):
        super().__init__()
        if depth not in RESNET_BUILDERS:
            raise ValueError(f"resnet depth must be one of {sorted(RESNET_BUILDERS)}, got {depth!r}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"a resnet has stages 1..4, got num_stages={num_stages}")
        resnet = RESNET_BUILDERS[depth]()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.num_stages = num_stages
        for index in range(1, num_stages + 1):
            setattr(self, f"layer{index}", getattr(resnet, f"layer{index}"))
        weights.load_into(self, f"resnet{depth}", pretrained)
        self.conv1 = one_channel_conv(self.conv1)
        self.channels = (1, 64, *RESNET_STAGE_CHANNELS[:num_stages])

    def forward(self, L: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(L)))
        features = [L, x]
        x = self.maxpool(x)
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


def vgg19_trunk(pretrained: str = "none") -> nn.Sequential:
    """VGG-19's convolutional features up to relu4_4 (512 channels, 1/8 resolution) on one-channel input."""
    trunk = make_vgg_layers(vgg_configs["E"])[:VGG19_RELU4_4]
    weights.load_into(trunk, "vgg19", pretrained, lambda key: "features." + key)
    trunk[0] = one_channel_conv(trunk[0])
    return trunk
