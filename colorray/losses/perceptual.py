"""``perceptual`` (family ``"pixel"``): Ledig et al.'s VGG-19 feature loss, as in the HASHeD study.

The RGB images rebuilt from (L, pred_ab) and (L, true_ab) (or, for models that
predict RGB, the predicted and true sRGB 0..1 themselves) are ImageNet-normalized
and passed through a frozen VGG-19 (eval mode) with real ImageNet weights from
``colorray.models.weights`` ("imagenet" = torchvision's ``vgg19`` file in the torch hub
cache, or a path); the loss is the MSE or L1 between their feature maps after
the chosen ReLUs, averaged over those layers. Only the convolutions up to the
deepest chosen layer are built and loaded, so a checkpoint holding just those
``features.*`` tensors suffices. The loss moves itself to its input's
device. Missing weights raise ``PretrainedWeightsMissing``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.models import vgg

from colorray import color
from colorray.losses import LOSSES
from colorray.losses.pixel import ERRORS, PixelLoss
from colorray.metrics import IMAGENET_MEAN, IMAGENET_STD
from colorray.models import weights

DEFAULT_LAYERS = ("relu2_2", "relu3_4", "relu4_4")


def vgg19_relu_indices() -> dict[str, int]:
    """``relu<block>_<conv>`` -> index in torchvision's ``vgg19().features``."""
    indices, position, block, conv = {}, 0, 1, 0
    for item in vgg.cfgs["E"]:
        if item == "M":
            position, block, conv = position + 1, block + 1, 0
        else:
            conv += 1
            indices[f"relu{block}_{conv}"] = position + 1
            position += 2
    return indices


class VGG19Features(nn.Module):
    """Frozen VGG-19 trunk returning the feature maps after the named ReLUs."""

    def __init__(self, layers: Sequence[str], pretrained: str):
        super().__init__()
        known = vgg19_relu_indices()
        unknown = [name for name in layers if name not in known]
        if unknown or not layers:
            raise ValueError(f"perceptual layers must be a non-empty list of {', '.join(known)}; got {list(layers)}")
        self.taps = {known[name] for name in layers}
        self.body = vgg.make_layers(vgg.cfgs["E"])[: max(self.taps) + 1]
        weights.load_into(self.body, "vgg19", pretrained, lambda key: "features." + key)
        self.body.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> VGG19Features:
        super().train(mode)
        self.body.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, layer in enumerate(self.body):
            x = layer(x)
            if index in self.taps:
                features.append(x)
        return features


class PerceptualLoss(PixelLoss):
    def __init__(self, features: VGG19Features, criterion: str):
        super().__init__()
        self.features = features
        self.error = ERRORS[criterion]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _vgg_features(self, L: torch.Tensor, ab_or_rgb: torch.Tensor) -> list[torch.Tensor]:
        rgb = ab_or_rgb if ab_or_rgb.shape[1] == 3 else color.model_outputs_to_rgb(L, ab_or_rgb)
        return self.features((rgb - self.mean) / self.std)

    def compute(self, pred_ab: torch.Tensor, true_ab: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        self.to(pred_ab.device)
        L = L.float()
        with torch.no_grad():
            targets = self._vgg_features(L, true_ab)
        predictions = self._vgg_features(L, pred_ab)
        per_layer = [self.error(p.float(), t.float()).mean() for p, t in zip(predictions, targets)]
        return torch.stack(per_layer).mean()


@LOSSES.register("perceptual", family="pixel")
def perceptual(
    layers: Sequence[str] = DEFAULT_LAYERS, criterion: str = "mse", pretrained: str = "imagenet"
) -> nn.Module:
    if isinstance(layers, str):
        layers = (layers,)
    if criterion not in ERRORS:
        raise ValueError(f"perceptual criterion must be one of {', '.join(ERRORS)}, got {criterion!r}")
    return PerceptualLoss(VGG19Features(tuple(layers), pretrained), criterion)
