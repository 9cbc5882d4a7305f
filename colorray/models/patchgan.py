"""``patchgan``: pix2pix's 70x70 PatchGAN discriminator conditioned on L (output "critic").

Its input is L concatenated with a colorization (``in_channels`` 3 for ab, 4
for RGB). ``n_layers`` 4x4 stride-2 convs (``ndf`` doubling up to 8 * ndf),
one stride-1 conv, then a 4x4 conv to one logit per patch; LeakyReLU 0.2 and
BatchNorm after every conv but the first and last. With ``spectral_norm`` every
conv is spectrally normalized and BatchNorm is left out.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as with_spectral_norm

from colorray.models import MODELS
from colorray.models.layers import check_channels


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, spectral_norm: bool = False):
        super().__init__()
        if in_channels < 2 or ndf < 1 or n_layers < 1:
            raise ValueError(
                f"patchgan needs in_channels >= 2, ndf >= 1, n_layers >= 1; "
                f"got in_channels={in_channels}, ndf={ndf}, n_layers={n_layers}"
            )
        self.in_channels = in_channels
        widths = [in_channels] + [ndf * min(2**i, 8) for i in range(n_layers + 1)]
        layers: list[nn.Module] = []
        for index, (in_ch, out_ch) in enumerate(zip(widths[:-1], widths[1:])):
            stride = 2 if index < n_layers else 1
            batch_norm = index > 0 and not spectral_norm
            layers.append(self._conv(in_ch, out_ch, stride, bias=not batch_norm, spectral_norm=spectral_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(self._conv(widths[-1], 1, 1, bias=True, spectral_norm=spectral_norm))
        self.model = nn.Sequential(*layers)

    @staticmethod
    def _conv(in_ch: int, out_ch: int, stride: int, bias: bool, spectral_norm: bool) -> nn.Module:
        conv = nn.Conv2d(in_ch, out_ch, 4, stride=stride, padding=1, bias=bias)
        return with_spectral_norm(conv) if spectral_norm else conv

    def forward(self, L_and_color: torch.Tensor) -> torch.Tensor:
        check_channels(L_and_color, self.in_channels, "patchgan")
        return self.model(L_and_color)


@MODELS.register("patchgan", output="critic")
def patchgan(in_channels: int = 3, ndf: int = 64, n_layers: int = 3, spectral_norm: bool = False) -> nn.Module:
    return PatchDiscriminator(in_channels, ndf, n_layers, spectral_norm)
