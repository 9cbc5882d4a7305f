"""``eccv16`` and ``eccv16_vgg19``: Zhang et al.'s classification colorizers (ECCV 2016), output "bins".

``eccv16`` is the paper's network: eight blocks of 3x3 conv + ReLU (x2 or x3)
closed by BatchNorm, strided down to 1/8 by blocks 1-3, dilation 2 in blocks
5 and 6, then a 4x4 transposed conv back to 1/4 resolution and a 1x1 conv to
logits over the Q in-gamut ab bins of ``colorray.color.ab_bins``.
``eccv16_vgg19`` (the Texas A&M study's choice) replaces blocks 1-4 with
torchvision's VGG-19 up to relu4_4, optionally ImageNet-pretrained.
``width`` multiplies the paper's 64..512 channels (of the Zhang head only in
the VGG variant, whose trunk keeps VGG's shape).

Zhang et al.'s released weights (the PyTorch port's
``colorization_release_v2-9b330a0b.pth``: ``model1.0.weight`` ... ``model8.6.weight``,
``model_out.weight``) fit ``eccv16`` layer for layer: ``eccv16(pretrained="zhang")``
(fetched like ImageNet weights, ``colorray.models.weights``) or
``pretrained=PATH`` starts from them, and ``release_export`` turns the file into an
export, so ``colorize``, Evaluate and Serve take it as a model. Such a network
has ``bins="zhang"``: its input is ``(L - 50) / 100`` and it predicts 313 bins
whose centres (``model_out``'s weights) it carries as a buffer; colorray's own
``bins="gamut"`` networks take ``L/50 - 1`` and predict ``color.ab_bins()``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from colorray import color
from colorray.models import MODELS, weights
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
RELEASE_URL = "https://colorizers.s3.us-east-2.amazonaws.com/colorization_release_v2-9b330a0b.pth"
RELEASE_IMAGE_SIZE = 256  # the port's demo resizes to 256x256
ZHANG_BIN_COUNT = 313
BIN_SETS = ("gamut", "zhang")


def zhang_trunk(width: float) -> nn.Sequential:
    """Blocks 1-4: 1 -> 512 channels at 1/8 resolution."""
    c = [scaled(n, width) for n in (64, 128, 256, 512)]
    return nn.Sequential(
        conv_relu_stack(1, c[0], 2, stride=2),
        conv_relu_stack(c[0], c[1], 2, stride=2),
        conv_relu_stack(c[1], c[2], 3, stride=2),
        conv_relu_stack(c[2], c[3], 3),
    )


def zhang_head(in_ch: int, width: float, num_bins: int) -> nn.Sequential:
    """Blocks 5-8 from 1/8 resolution: dilated blocks, a plain block, up to 1/4, logits over the ab bins."""
    c, c_up = scaled(512, width), scaled(256, width)
    return nn.Sequential(
        conv_relu_stack(in_ch, c, 3, dilation=2),
        conv_relu_stack(c, c, 3, dilation=2),
        conv_relu_stack(c, c, 3),
        upsampling_stack(c, c_up, 2, batch_norm=False),
        nn.Conv2d(c_up, num_bins, 1),
    )


class BinClassifier(nn.Module):
    """``trunk`` to 1/8 resolution then ``head`` to logits at 1/4: (N, Q, ceil(H/4), ceil(W/4)).

    ``bins`` (Q, 2) are the centres the logits are over: ``color.ab_bins()`` by
    default (not saved: the code makes them), or Zhang et al.'s 313 (saved with
    the weights), which also selects their input normalization.
    """

    def __init__(self, trunk: nn.Module, head: nn.Module, name: str, zhang_bins: torch.Tensor | None = None):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.name = name
        self.zhang_input = zhang_bins is not None
        self.register_buffer("bins", zhang_bins if self.zhang_input else color.ab_bins(), persistent=self.zhang_input)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        check_channels(L, 1, self.name)
        x, (h, w) = pad_to_multiple(color.zhang_normalize_l(L) if self.zhang_input else L, ECCV16_STRIDE)
        logits = self.head(self.trunk(x))
        return crop_to(logits, (math.ceil(h / OUTPUT_STRIDE), math.ceil(w / OUTPUT_STRIDE)))


def is_release(state: object) -> bool:
    """Whether a loaded file is Zhang et al.'s released state dict (``model1.0.weight`` ... ``model_out.weight``)."""
    return isinstance(state, dict) and "model1.0.weight" in state and "model_out.weight" in state


def release_key(key: str) -> str:
    """A key of Zhang et al.'s ``ECCVGenerator`` as this module names it (the layers match one to one)."""
    block, rest = key.split(".", 1)
    number = int(block.removeprefix("model"))
    if number <= 4:
        return f"trunk.{number - 1}.{rest}"
    if number <= 7:
        return f"head.{number - 5}.{rest}"
    index, suffix = rest.split(".", 1)
    return f"head.4.{suffix}" if index == "6" else f"head.3.{rest}"


def from_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Zhang et al.'s released state dict as the state dict of ``eccv16(bins="zhang")``."""
    converted = {release_key(k): v for k, v in state.items() if k.startswith("model") and k != "model_out.weight"}
    for key in [k for k in converted if k.endswith(".running_var")]:  # files older than BatchNorm's counter
        converted.setdefault(key.replace("running_var", "num_batches_tracked"), torch.tensor(0))
    converted["bins"] = color.zhang_bins(state["model_out.weight"])
    return converted


def load_release(model: nn.Module, pretrained: str) -> None:
    path = weights.fetch(RELEASE_URL, "Zhang et al.'s ECCV16") if pretrained == "zhang" else Path(pretrained)
    state = weights.read_state_dict(path, "Zhang et al.'s ECCV16")
    if not is_release(state):
        raise ValueError(f"{path} is not Zhang et al.'s released ECCV16 state dict (no model1.0.weight and "
                         "model_out.weight)")
    try:
        model.load_state_dict(from_release(state))
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit eccv16: {str(error).splitlines()[0]}") from None


def release_export(state: dict[str, torch.Tensor]) -> dict:
    """The export payload of Zhang et al.'s released network (``colorray.export`` format fields)."""
    return {"model": "eccv16", "options": {"bins": "zhang"}, "output_space": "bins",
            "image_size": RELEASE_IMAGE_SIZE, "state_dict": from_release(state),
            "metrics": {}, "created": "", "temperature": color.ANNEALED_MEAN_T}


@MODELS.register("eccv16", output="bins")
def eccv16(width: float = 1.0, bins: str = "gamut", pretrained: str = "none") -> nn.Module:
    """``pretrained``: 'none', 'zhang' (the release file, fetched once) or a path to it; it implies ``bins='zhang'``."""
    if bins not in BIN_SETS:
        raise ValueError(f"eccv16 bins must be one of {', '.join(BIN_SETS)}, got {bins!r}")
    if pretrained != "none" and width != 1.0:
        raise ValueError(f"Zhang et al.'s weights are for width 1.0, got width={width}")
    zhang = bins == "zhang" or pretrained != "none"
    centres = torch.zeros(ZHANG_BIN_COUNT, 2) if zhang else None  # filled by the weights loaded next
    num_bins = ZHANG_BIN_COUNT if zhang else color.ab_bins().shape[0]
    model = BinClassifier(zhang_trunk(width), zhang_head(scaled(512, width), width, num_bins), "eccv16", centres)
    if pretrained != "none":
        load_release(model, pretrained)
        model.implied_options = {"bins": "zhang"}  # so that its export rebuilds a 313-bin network
    return model


@MODELS.register("eccv16_vgg19", output="bins")
def eccv16_vgg19(pretrained: str = "none", width: float = 1.0) -> nn.Module:
    head = zhang_head(512, width, color.ab_bins().shape[0])
    return BinClassifier(vgg19_trunk(pretrained), head, "eccv16_vgg19")
