"""Full-resolution colorization with an exported generator: the path Serve and ``colorize`` share.

The model runs at its training resolution on the image's L channel; the
predicted ab is upsampled to the input's size and joined with the input's own
full-resolution L (Zhang et al.; DDColor), so no detail is lost and the
output's lightness is the input's.

A colorization is three steps, which ``colorize`` runs in different places
to overlap them: ``prepare`` (full-resolution L and the model's small L; in
loader workers), ``predict_small_ab`` (the model, batched) and ``finish``
(join L with the upsampled ab, to uint8). On the CPU the full-resolution steps
use ``colorray.color``'s uint8/lookup-table functions; on another device the
tensor functions run there.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colorray import color
from colorray.export import GeneratorInfo, load_generator
from colorray.models import predict_ab

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """A device that torch does not know or that this machine does not have."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"``: cuda when present, else cpu; anything else as torch names it, if it is here."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device '{device}' (use auto, cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device '{device}' asked for, but torch sees no CUDA GPU here (use auto or cpu)")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device '{device}' asked for, but there are {torch.cuda.device_count()} CUDA GPUs")
    return resolved


@dataclass
class Prepared:
    """One image ready for the model: its full-resolution L and the model's input L (1, 1, S, S), both 0..100."""

    L: torch.Tensor  # (H, W) float32 on the CPU path (a tensor: loader workers pass it through shared memory,
    # not by pickling), (1, 1, H, W) on a device
    small_L: torch.Tensor


class Colorizer:
    def __init__(self, model: torch.nn.Module, info: GeneratorInfo, device: torch.device, size: int | None = None,
                 precision: str = "fp32", channels_last: bool | None = None):
        """``channels_last`` None: on for CUDA (faster convolutions there), off elsewhere."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
        channels_last = device.type == "cuda" if channels_last is None else channels_last
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.info = info
        self.device = device
        self.size = size or info.image_size
        self.precision = precision
        self.channels_last = channels_last
        self.numpy_path = device.type == "cpu"  # full-resolution steps with lookup tables, not tensors

    @classmethod
    def from_path(cls, path: str | Path, device: str | None = None, size: int | None = None,
                  precision: str = "fp32", channels_last: bool | None = None) -> "Colorizer":
        device = resolve_device(device)
        model, info = load_generator(path, device)
        return cls(model, info, device, size, precision, channels_last)

    @torch.inference_mode()
    def colorize(self, images: list[np.ndarray], temperature: float | None = None) -> list[np.ndarray]:
        """Colorize uint8 RGB arrays (H, W, 3) of any sizes; returns uint8 RGB arrays of the same sizes."""
        if not images:
            return []
        prepared = [self.prepare(image) for image in images]
        ab = self.predict_small_ab(torch.cat([item.small_L for item in prepared]), temperature)
        return [self.finish(item, item_ab) for item, item_ab in zip(prepared, ab)]

    def prepare(self, image: np.ndarray) -> Prepared:
        """Full-resolution L of a uint8 RGB array and the model's input L at its size."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
        if self.numpy_path:
            return prepare_on_cpu(image, self.size)
        rgb = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None]
        L = color.rgb_to_lab(rgb)[:, 0:1]
        return Prepared(L, resize_l(L, self.size))

    @torch.inference_mode()
    def predict_small_ab(self, small_L: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """ab (N, 2, S, S) in Lab units, on the CPU, for model-size L (N, 1, S, S) in 0..100."""
        return color.denormalize_ab(self.predict_ab(color.normalize_l(small_L), temperature)).cpu()

    def finish(self, prepared: Prepared, ab: torch.Tensor) -> np.ndarray:
        """The uint8 RGB (H, W, 3) result: ``prepared``'s L joined with ab (2, S, S) upsampled to its size."""
        if self.numpy_path:
            return color.join_lightness_ab(prepared.L.numpy(), ab.permute(1, 2, 0).numpy())
        full_ab = color.resize_ab(ab[None].to(self.device), tuple(prepared.L.shape[-2:]))
        return to_uint8_image(color.lab_to_rgb(torch.cat([prepared.L, full_ab], dim=1))[0])

    @torch.inference_mode()
    def predict_ab(self, L_norm: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Normalized ab at the resolution of ``L_norm`` (N, 1, H, W), the model run at its own size."""
        temperature = self.info.temperature if temperature is None else temperature
        L_small = resize_l(L_norm.to(self.device), self.size)
        if self.channels_last:
            L_small = L_small.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        with autocast:
            ab = predict_ab(self.model, L_small, temperature)
        return color.resize_ab(ab.float(), tuple(L_norm.shape[-2:]))



def resize_l(L: torch.Tensor, size: int) -> torch.Tensor:
    """L (N, 1, H, W) to the model's size: antialiased bilinear (uint8 input stays uint8)."""
    if tuple(L.shape[-2:]) == (size, size):
        return L
    return F.interpolate(L, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def prepare_on_cpu(image: np.ndarray, size: int) -> Prepared:
    """``Colorizer.prepare`` of the CPU path, without the model: what ``colorize``'s loader workers run.

    The model's L comes from an 8-bit copy of L, which torch downsizes several
    times faster than float; the rounding (0.2 L at most) averages out.
    """
    L = color.lightness(image)
    small = resize_l(torch.from_numpy(color.lightness_uint8(L))[None, None], size)
    return Prepared(torch.from_numpy(L), small.float() * (100.0 / 255.0))


def to_uint8_image(rgb: torch.Tensor) -> np.ndarray:
    """A (3, H, W) float 0..1 tensor as a (H, W, 3) uint8 array."""
    return (rgb.clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()
