"""Image files in and out: decoding uploads and files safely, encoding results.

Shared by Serve, ``colorize`` and Evaluate. Decoding respects EXIF orientation,
splits off an alpha channel (kept and put back on PNG output), turns any mode
into RGB, and refuses bombs (more pixels than a limit) and broken files with
an ``ImageError`` that says what is wrong.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


class ImageError(ValueError):
    """Bytes or a file that cannot be used as an input image; the message says why."""


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) uint8 or None
    was_gray: bool


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    if not data:
        raise ImageError("empty image: no bytes received")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image has {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
            image.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"not a readable image: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"truncated or corrupt image: {error}") from None
    return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image.Image) -> DecodedImage:
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        alpha = np.array(image.getchannel("A"))
    was_gray = image.mode in ("1", "L", "LA", "I", "I;16", "F")
    if image.mode in ("I", "I;16", "F"):
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1e-9)
        image = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8))
    try:
        rgb = np.array(image.convert("RGB"))
    except (ValueError, OSError) as error:
        raise ImageError(f"unsupported image mode {image.mode}: {error}") from None
    return DecodedImage(rgb=rgb, alpha=alpha, was_gray=was_gray)


def read_image_file(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    with open(path, "rb") as handle:
        return decode_image(handle.read(), max_pixels)


def encode_image(rgb: np.ndarray, fmt: str = "png", alpha: np.ndarray | None = None, quality: int = 95) -> bytes:
    fmt = fmt.lower()
    if fmt not in OUTPUT_FORMATS:
        raise ImageError(f"unknown output format '{fmt}'; choose one of {', '.join(sorted(OUTPUT_FORMATS))}")
    image = Image.fromarray(rgb)
    if alpha is not None and fmt in ("png", "webp"):
        image.putalpha(Image.fromarray(alpha))
    buffer = io.BytesIO()
    options = {"quality": quality} if OUTPUT_FORMATS[fmt] in ("JPEG", "WEBP") else {}
    image.save(buffer, format=OUTPUT_FORMATS[fmt], **options)
    return buffer.getvalue()


def media_type(fmt: str) -> str:
    return {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}[fmt.lower()]
