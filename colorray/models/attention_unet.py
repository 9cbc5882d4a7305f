"""``attention_unet``: a U-Net with additive attention gates on its skips (Oktay et al. 2018).

``encoder="plain"`` is the pix2pix U-Net of ``unet`` with gates (the DTU
study's attention GAN); ``encoder="resnet18"|"resnet34"`` is ``resnet_unet``
with gates (its "pretrained attention UGAN"), ``pretrained`` as there.
"""

from __future__ import annotations

from torch import nn

from colorray.models import MODELS
from colorray.models.resnet_unet import resnet_unet_model
from colorray.models.unet import pix2pix_unet

RESNET_ENCODERS = {"resnet18": 18, "resnet34": 34}
PLAIN_DEFAULTS = {"ngf": 64, "num_downs": 8, "dropout": True}


@MODELS.register("attention_unet", output="ab")
def attention_unet(
    encoder: str = "plain", ngf: int = 64, num_downs: int = 8, dropout: bool = True, pretrained: str = "none"
) -> nn.Module:
    if encoder == "plain":
        if pretrained != "none":
            raise ValueError("attention_unet: pretrained weights need encoder='resnet18' or 'resnet34'")
        return pix2pix_unet(ngf, num_downs, dropout, attention=True, name="attention_unet")
    if encoder not in RESNET_ENCODERS:
        raise ValueError(f"attention_unet encoder must be one of plain, {', '.join(RESNET_ENCODERS)}; got {encoder!r}")
    plain_options = {"ngf": ngf, "num_downs": num_downs, "dropout": dropout}
    if plain_options != PLAIN_DEFAULTS:
        raise ValueError(f"attention_unet: ngf, num_downs and dropout apply only to encoder='plain', not {encoder!r}")
    return resnet_unet_model(RESNET_ENCODERS[encoder], pretrained, attention=True, name="attention_unet")
