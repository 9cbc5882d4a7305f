"""Full-resolution colorization with an exported generator: the path Serve and ``colorize`` share.

The model runs at its training resolution on the image's L channel; the
predicted ab is upsampled to the input's size and joined with the input's own
full-resolution L (Zhang et al.; DDColor), so no detail is lost and the
output's lightness is the input's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colorray import color
from colorray.export import GeneratorInfo, load_generator
from colorray.models import predict_ab


class Colorizer:
    def __init__(self, model: torch.nn.Module, info: GeneratorInfo, device: torch.device, size: int | None = None):
        self.model = model
        self.info = info
        self.device = device
        self.size = size or info.image_size

    @classmethod
    def from_path(cls, path: str | Path, device: str | None = None, size: int | None = None) -> "Colorizer":
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, info = load_generator(path, device)
        return cls(model, info, device, size)

    @torch.inference_mode()
    def colorize(self, images: list[np.ndarray], temperature: float | None = None) -> list[np.ndarray]:
        """Colorize uint8 RGB arrays (H, W, 3) of any sizes; returns uint8 RGB arrays of the same sizes."""
        if not images:
            return []
        labs = [color.rgb_to_lab(self._to_tensor(image)) for image in images]
        small_L = torch.cat([self._resize_l(lab[:, 0:1]) for lab in labs])
        ab_norm = self.predict_ab(color.normalize_l(small_L), temperature)
        results = []
        for lab, ab in zip(labs, ab_norm):
            full_ab = color.resize_ab(color.denormalize_ab(ab[None]), tuple(lab.shape[-2:]))
            rgb = color.lab_to_rgb(torch.cat([lab[:, 0:1], full_ab], dim=1))
            results.append(to_uint8_image(rgb[0]))
        return results

    @torch.inference_mode()
    def predict_ab(self, L_norm: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Normalized ab at the resolution of ``L_norm`` (N, 1, H, W), the model run at its own size."""
        temperature = self.info.temperature if temperature is None else temperature
        ab = predict_ab(self.model, self._resize_l(L_norm.to(self.device)), temperature).float()
        return color.resize_ab(ab, tuple(L_norm.shape[-2:]))

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None]

    def _resize_l(self, L: torch.Tensor) -> torch.Tensor:
        return F.interpolate(L, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)


def to_uint8_image(rgb: torch.Tensor) -> np.ndarray:
    """A (3, H, W) float 0..1 tensor as a (H, W, 3) uint8 array."""
    return (rgb.clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()
