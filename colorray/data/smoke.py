"""The embedded smoke dataset: seeded crops of the color photos scikit-image ships offline.

``ensure_smoke_dataset()`` builds it once (a second or two) into
``$COLORRAY_CACHE/smoke-v1`` or ``~/.cache/colorray/smoke-v1``, in the layout
``python -m colorray.shards`` writes, with ``"smoke": true`` in every index.
Labels name the source photo. Train crops come from the left three quarters
of each photo, val crops from the held-out right quarter, so the splits share
no pixels. The build happens in a temporary folder renamed at the end, so
concurrent callers (several Ray workers) and interrupted builds are safe.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skimage_data

from colorray.data.shards import (
    SKIP_REASONS,
    Sample,
    encode_jpeg,
    split_index,
    summary_index,
    write_json_atomically,
    write_tar,
)

SMOKE_NAME = "smoke-v1"
DESCRIPTION = "smoke dataset (scikit-image photos)"
CROP_SIZE = 96
TRAIN_CROPS_PER_PHOTO = 64
VAL_CROPS_PER_PHOTO = 8
SAMPLES_PER_SHARD = {"train": 48, "val": 24}
TRAIN_SIDE = (0.25, 1.0)  # crop side as a fraction of the region's short side
VAL_SIDE = (0.5, 1.0)
SEED = 0
JPEG_QUALITY = 90


def _photos() -> dict[str, np.ndarray]:
    left, right, _ = skimage_data.stereo_motorcycle()
    return {
        "astronaut": skimage_data.astronaut(),
        "chelsea": skimage_data.chelsea(),
        "coffee": skimage_data.coffee(),
        "motorcycle_left": left,
        "motorcycle_right": right,
        "rocket": skimage_data.rocket(),
    }


def _crops(photo: np.ndarray, region: tuple[int, int], count: int, side_range: tuple[float, float],
           rng: np.random.Generator) -> list[tuple[Image.Image, tuple[int, int, int]]]:
    """``count`` random squares inside columns ``region`` of ``photo``, resized to CROP_SIZE."""
    height = photo.shape[0]
    start, stop = region
    short = min(stop - start, height)
    crops = []
    for _ in range(count):
        side = int(rng.uniform(*side_range) * short)
        left = int(rng.integers(start, stop - side + 1))
        top = int(rng.integers(0, height - side + 1))
        square = Image.fromarray(photo[top:top + side, left:left + side])
        crops.append((square.resize((CROP_SIZE, CROP_SIZE), Image.LANCZOS), (left, top, side)))
    return crops


def _samples(split: str, classes: dict[str, int], photos: dict[str, np.ndarray], rng: np.random.Generator) -> list[Sample]:
    samples = []
    for name, photo in photos.items():
        width = photo.shape[1]
        held_out = width - width // 4
        region, count, sides = (((0, held_out), TRAIN_CROPS_PER_PHOTO, TRAIN_SIDE) if split == "train"
                                else ((held_out, width), VAL_CROPS_PER_PHOTO, VAL_SIDE))
        for number, (crop, (left, top, side)) in enumerate(_crops(photo, region, count, sides, rng)):
            samples.append(Sample(f"{name}-{split}-{number:03d}", "jpg", encode_jpeg(crop, JPEG_QUALITY),
                                  classes[name], f"skimage.data:{name}#crop={left},{top},{side}", name))
    rng.shuffle(samples)
    return samples


def _write_split(folder: Path, split: str, samples: list[Sample], classes: dict[str, int]) -> dict:
    folder.mkdir()
    per_shard = SAMPLES_PER_SHARD[split]
    entries = []
    for number, start in enumerate(range(0, len(samples), per_shard)):
        file = f"shard-{number:06d}.tar"
        entries.append({"file": file, "samples": write_tar(folder / file, samples[start:start + per_shard])})
    options = {"source": "skimage.data", "crop_size": CROP_SIZE, "seed": SEED, "quality": JPEG_QUALITY}
    index = split_index(split, entries, classes, {r: [] for r in SKIP_REASONS}, options, smoke=True,
                        description=DESCRIPTION)
    write_json_atomically(folder / "index.json", index)
    return index


def build_smoke_dataset(root: Path) -> None:
    """Write the smoke dataset's train/, val/ and index.json into the empty folder ``root``."""
    photos = _photos()
    classes = {name: i for i, name in enumerate(sorted(photos))}
    rng = np.random.default_rng(SEED)
    indexes = {split: _write_split(root / split, split, _samples(split, classes, photos, rng), classes)
               for split in ("train", "val")}
    write_json_atomically(root / "index.json", summary_index(indexes, DESCRIPTION))


def smoke_cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("COLORRAY_CACHE") or "~/.cache/colorray").expanduser()


def ensure_smoke_dataset(cache_dir: str | Path | None = None) -> Path:
    """The smoke dataset root, built on first use; safe under concurrent callers."""
    root = smoke_cache_root(cache_dir)
    final = root / SMOKE_NAME
    if (final / "index.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{SMOKE_NAME}-", dir=root))
    try:
        build_smoke_dataset(temp)
        temp.chmod(0o755)
        try:
            os.rename(temp, final)
        except OSError:
            if not (final / "index.json").is_file():
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final
