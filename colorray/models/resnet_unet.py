"""``resnet_unet``: a U-Net whose encoder is torchvision's ResNet-18 or -34 (the DTU study's pretrained-encoder GAN generator).

The decoder climbs from layer4 (1/32) back to full resolution in five stages
(bilinear x2 + conv, concat the skip, conv), joining layer3, layer2, layer1,
the stem and finally the input L itself; a 3x3 conv + tanh gives ab.
``resnet_unet_model`` with ``attention=True`` is ``attention_unet``'s resnet variant.
"""

from __future__ import annotations

from torch import nn

from colorray.models import MODELS
from colorray.models.backbones import ResNetEncoder
from colorray.models.layers import conv_bn_relu, upsample
from colorray.models.unet_parts import DecoderStage, UNet

DECODER_CHANNELS = (256, 128, 64, 64, 32)
RESNET_STRIDE = 32


def resnet_unet_model(depth: int, pretrained: str, attention: bool, name: str) -> UNet:
    encoder = ResNetEncoder(depth, pretrained=pretrained)
    stages, in_ch = [], encoder.channels[-1]
    for skip_ch, out_ch in zip(reversed(encoder.channels[:-1]), DECODER_CHANNELS):
        up = nn.Sequential(upsample(), conv_bn_relu(in_ch, out_ch))
        stages.append(DecoderStage(up, conv_bn_relu(out_ch + skip_ch, out_ch), skip_ch, out_ch, attention))
        in_ch = out_ch
    head = nn.Sequential(nn.Conv2d(in_ch, 2, 3, padding=1), nn.Tanh())
    return UNet(encoder, stages, head, multiple=RESNET_STRIDE, name=name)


@MODELS.register("resnet_unet", output="ab")
def resnet_unet(depth: int = 18, pretrained: str = "none") -> nn.Module:
    return resnet_unet_model(depth, pretrained, attention=False, name="resnet_unet")
