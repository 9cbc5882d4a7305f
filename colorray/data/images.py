"""Image files in and out: decoding uploads and files safely, encoding results.

Shared by Serve, ``colorize`` and Evaluate. Decoding respects EXIF orientation,
splits off an alpha channel (kept and put back on PNG output), turns any mode
into RGB, and refuses bombs (more pixels than a limit) and broken files with
an ``ImageError`` that says what is wrong. Plain color and grayscale JPEGs are
decoded by libjpeg-turbo through simplejpeg, everything else by Pillow.
"""

from __future__ import annotations

import io
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
FORMAT_SUFFIXES = {"png": ".png", "jpeg": ".jpg"}  # the formats the colorize and client commands write


class ImageError(ValueError):
    """Bytes or a file that cannot be used as an input image; the message says why."""


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) uint8 or None
    was_gray: bool


_PILLOW_LIMIT = threading.Lock()


def _open_with_our_limit(data: bytes) -> Image.Image:
    """``Image.open`` with Pillow's own pixel limit lifted: ``max_pixels`` is checked instead, and named.

    Pillow's limit is a process-wide setting: it is lifted only while the header is parsed, under a lock.
    """
    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decoded RGB (and alpha) of image bytes; ``ImageError`` says why not (more than ``max_pixels`` pixels, ...)."""
    if not data:
        raise ImageError("empty image: no bytes received")
    try:
        image = _open_with_our_limit(data)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"image has {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                             "(refused before decoding, as a possible decompression bomb)")
        plain_jpeg = _decode_plain_jpeg(data, image)
        if plain_jpeg is not None:
            return plain_jpeg
        image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not a readable image: no image format recognized in the data") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"truncated or corrupt image: {error}") from None
    return _to_rgb(ImageOps.exif_transpose(image))


_EXIF_ORIENTATION = 0x0112
_SIMPLEJPEG_COLORSPACES = ("YCbCr", "Gray")  # CMYK and the rest keep Pillow's conversion to RGB


def plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a color or grayscale JPEG (what ``decode_plain_jpeg`` takes), None for anything else."""
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (width, height) if colorspace in _SIMPLEJPEG_COLORSPACES else None


def decode_plain_jpeg(data: bytes, factor: int = 1) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB of a ``plain_jpeg_size`` JPEG at 1/``factor`` (1, 2, 4, 8) of its size, or None if damaged.

    libjpeg-turbo through simplejpeg: Pillow's own pixels (its ``draft`` ones when
    scaled), without its per-image overhead and the two copies it makes of the
    result (a fifth of its time at 24 MP). None leaves a damaged JPEG to Pillow,
    which says what is wrong.
    """
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    try:
        return simplejpeg.decode_jpeg(data, "RGB", min_factor=factor, min_width=math.ceil(width / factor),
                                      min_height=math.ceil(height / factor))
    except ValueError:
        return None


def _decode_plain_jpeg(data: bytes, image: Image.Image) -> DecodedImage | None:
    """``decode_plain_jpeg`` of an image without an EXIF rotation; None for anything else (Pillow decodes it)."""
    if image.format != "JPEG" or image.getexif().get(_EXIF_ORIENTATION, 1) != 1 or plain_jpeg_size(data) is None:
        return None
    rgb = decode_plain_jpeg(data)
    return None if rgb is None else DecodedImage(rgb=rgb, alpha=None, was_gray=image.mode == "L")


def _to_rgb(image: Image.Image) -> DecodedImage:
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        alpha = np.array(image.getchannel("A"))
    was_gray = image.mode in ("1", "L", "LA", "I", "I;16", "F")
    if image.mode in ("I", "I;16", "F"):
        array = np.asarray(image, dtype=np.float64)
        bad = int((~np.isfinite(array)).sum())
        if bad:
            raise ImageError(f"image has {bad} non-finite pixel value(s) (NaN or infinite); only finite values "
                             "can be colorized")
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
    # PNG at compress level 1: a 1920x1080 result encodes ~4x faster for ~10% more bytes
    options = {"quality": quality} if OUTPUT_FORMATS[fmt] in ("JPEG", "WEBP") else {"compress_level": 1}
    image.save(buffer, format=OUTPUT_FORMATS[fmt], **options)
    return buffer.getvalue()


def media_type(fmt: str) -> str:
    return {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}[fmt.lower()]


class InputError(ValueError):
    """Input paths that cannot be planned into output files (missing, empty folder, clashing outputs)."""


@dataclass
class ImageJob:
    source: Path
    target: Path


def find_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursive, following links, hidden entries skipped), sorted."""
    found = []
    for parent, subfolders, files in os.walk(folder, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found.extend(Path(parent) / name for name in sorted(files)
                     if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."))
    return found


def plan_outputs(inputs: list[str], out: Path, fmt: str) -> list[ImageJob]:
    """One job per input image: a file to ``out/<name>``, a folder to ``out/<folder>/<relative path>``.

    The suffix follows ``fmt``. Missing inputs, folders without images, two inputs
    writing one output, and an output replacing an input raise ``InputError``.
    """
    suffix = FORMAT_SUFFIXES[fmt]
    jobs = []
    for given in inputs:
        path = Path(given).expanduser()
        if not path.exists():
            raise InputError(f"input not found: {given}")
        if path.is_dir():
            images = find_images(path)
            if not images:
                raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {given}")
            base = out / path.resolve().name
            jobs += [ImageJob(image, (base / image.relative_to(path)).with_suffix(suffix)) for image in images]
        else:
            jobs.append(ImageJob(path, (out / path.name).with_suffix(suffix)))
    _check_targets(jobs)
    return jobs


def _check_targets(jobs: list[ImageJob]) -> None:
    seen: dict[Path, Path] = {}
    sources = {job.source.resolve() for job in jobs}
    for job in jobs:
        target = job.target.resolve()
        if target in sources:
            raise InputError(f"output {job.target} would overwrite the input image of that name: choose another --out")
        if target in seen:
            raise InputError(f"inputs {seen[target]} and {job.source} would both be written to {job.target}")
        seen[target] = job.source
