"""Where the training data lives and how it streams: WebDataset shards to uint8 RGB batches.

- ``open_shard_set(spec)`` turns a shard folder, dataset root, brace pattern,
  ``http(s)://``, ``s3://`` or ``gs://`` location into a ``ShardSet`` (URLs, sample
  counts from ``index.json`` when there is one, class map). ``s3://`` and ``gs://``
  shards stream through ``colorray.data.storage`` (pyarrow filesystems).
- ``resolve_data(data_config)`` picks the train and val sets of a run (the
  embedded smoke dataset when ``data.train`` is empty).
- ``train_loader`` / ``val_loader`` build ``torch`` DataLoaders whose workers
  decode and crop only; Lab conversion happens later, batched, on the device.

Splitting: the shard list is shuffled with a seed shared by all ranks (and the
epoch) before it is cut into one part per reader (rank x loader worker), so
every sample is read once per epoch by one reader; with fewer shards than
readers the shards are split sample by sample. Every rank yields exactly
``floor(total / (world_size * batch_size))`` training batches, whatever the
shard sizes (DDP would hang otherwise). ``docs/data.md`` explains the details.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import random
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import braceexpand
import cv2
import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from colorray.data import storage
from colorray.data.images import decode_plain_jpeg, plain_jpeg_size
from colorray.data.tarstream import IMAGE_FIELDS, read_samples

CROP_SCALE = (0.3, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_REMOTE_SCHEMES = ("http://", "https://", "s3://", "gs://", "gcs://")
_INDEX_TIMEOUT_S = 30



class DataError(ValueError):
    """A data location that does not exist, holds no shards, or cannot fill the batches asked for."""


@dataclass
class ShardSet:
    """A list of shards to stream, with what their index says about them."""

    urls: list[str]
    sample_counts: list[int] | None
    classes: dict[str, int]
    smoke: bool
    description: str

    @property
    def total_samples(self) -> int | None:
        return sum(self.sample_counts) if self.sample_counts is not None else None


# --- Locations -------------------------------------------------------------------


def _is_remote(location: str) -> bool:
    return location.startswith(_REMOTE_SCHEMES)


def _join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name


def _names_shards(spec: str) -> bool:
    return "{" in spec or spec.endswith(".tar")


def _read_text(location: str) -> str | None:
    """A small file at a local path, http(s), s3 or gs URL; None when it is absent."""
    try:
        if storage.is_uri(location):
            return storage.read_text(location) if storage.is_file(location) else None
        if _is_remote(location):
            with urllib.request.urlopen(location, timeout=_INDEX_TIMEOUT_S) as response:
                return response.read().decode()
        return Path(location).read_text()
    except storage.StorageError as error:
        raise DataError(str(error)) from None
    except (OSError, UnicodeDecodeError):
        return None


def _read_index(folder: str) -> dict[str, Any] | None:
    text = _read_text(_join(folder, "index.json"))
    if text is None:
        return None
    try:
        index = json.loads(text)
    except json.JSONDecodeError:
        raise DataError(f"{_join(folder, 'index.json')} is not valid JSON") from None
    return index if isinstance(index, dict) else None


def _root_splits(location: str) -> set[str] | None:
    """The split names of a dataset root (a folder with train/ and maybe val/), None for anything else."""
    if _names_shards(location):
        return None
    index = _read_index(location)
    if index is not None:
        return set(index["splits"]) if "splits" in index else None
    if _is_remote(location) and not storage.is_uri(location):
        return None
    found = {split for split in ("train", "val") if _is_folder(_join(location, split))}
    return found if "train" in found else None


def _is_folder(location: str) -> bool:
    try:
        return storage.is_dir(location)
    except storage.StorageError as error:
        raise DataError(str(error)) from None


def _shard_set(location: str, urls: list[str], counts: list[int] | None, index: dict[str, Any]) -> ShardSet:
    total = f"{sum(counts)} samples" if counts is not None else "sample count unknown"
    what = index.get("description") or f"{len(urls)} shards"
    return ShardSet(urls, counts, dict(index.get("classes", {})), bool(index.get("smoke", False)),
                    f"{what}, {total} at {location}")


def _open_pattern(spec: str) -> ShardSet:
    urls = list(braceexpand.braceexpand(spec))
    if not _is_remote(spec):
        missing = [url for url in urls if not Path(url).is_file()]
        if missing:
            raise DataError(f"shard not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    places = [tuple(url.rsplit("/", 1)) if "/" in url else (".", url) for url in urls]
    indexes = {folder: _read_index(folder) or {} for folder, _ in places}
    known = {(f, e["file"]): int(e["samples"]) for f, i in indexes.items() for e in i.get("shards", [])}
    counts = [known[place] for place in places] if all(place in known for place in places) else None
    return _shard_set(spec, urls, counts, next(iter(indexes.values())) if len(indexes) == 1 else {})


def _open_folder(location: str) -> ShardSet:
    if _root_splits(location) is not None:
        return _open_folder(_join(location, "train"))
    index = _read_index(location)
    if index is not None and "shards" in index:
        if not index["shards"]:
            raise DataError(f"the index of {location} lists no shards")
        urls = [_join(location, entry["file"]) for entry in index["shards"]]
        return _shard_set(location, urls, [int(entry["samples"]) for entry in index["shards"]], index)
    if storage.is_uri(location):
        return _listed_shards(location)
    if _is_remote(location):
        raise DataError(f"no index.json at {location}: name the shards with a brace pattern, "
                        f"e.g. {_join(location, 'shard-{000000..000009}.tar')}")
    folder = Path(location)
    if not folder.exists():
        raise DataError(f"data location not found: {location}")
    if not folder.is_dir():
        raise DataError(f"data location is neither a folder nor a .tar shard: {location}")
    urls = sorted(str(path) for path in folder.glob("*.tar"))
    if not urls:
        raise DataError(f"no .tar shards in {location}")
    return _shard_set(location, urls, None, {})


def _listed_shards(location: str) -> ShardSet:
    """The *.tar objects under an s3:// or gs:// prefix that has no index.json."""
    try:
        names = [name for name in storage.list_files(location, recursive=False) if name.endswith(".tar")]
    except storage.StorageError as error:
        raise DataError(str(error)) from None
    if not names:
        raise DataError(f"no .tar shards at {location}")
    return _shard_set(location, [_join(location, name) for name in names], None, {})


def open_shard_set(spec: str) -> ShardSet:
    """Shards at a folder (its index.json, else all *.tar), dataset root (its train split), brace pattern or URL."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("no data location given")
    if not _is_remote(spec):
        spec = str(Path(spec).expanduser())
    return _open_pattern(spec) if _names_shards(spec) else _open_folder(spec)


def resolve_data(data_config) -> tuple[ShardSet, ShardSet]:
    """(train, val) of a ``colorray.config.DataConfig``; an empty ``train`` means the smoke dataset."""
    from colorray.data.smoke import ensure_smoke_dataset

    train = data_config.train or str(ensure_smoke_dataset())
    if data_config.val:
        return open_shard_set(train), open_shard_set(data_config.val)
    splits = _root_splits(train)
    if splits is None:
        raise DataError(f"data.val is empty and data.train ({train}) is not a dataset root with a val/ split: "
                        "set data.val to the validation shards")
    if "val" not in splits:
        raise DataError(f"dataset root {train} has no val/ split: set data.val, or rebuild it with "
                        "`python -m colorray.shards ... --val-count N`")
    return open_shard_set(_join(train, "train")), open_shard_set(_join(train, "val"))


# --- Reading plans: which reader (rank x loader worker) reads what ----------------


@dataclass(frozen=True)
class _Part:
    """Samples ``slot::stride`` of the first ``take`` samples of ``urls`` read in order (``count``: how many, if known)."""

    urls: tuple[str, ...]
    count: int | None = None
    slot: int = 0
    stride: int = 1
    take: int | None = None

    def size(self) -> int | None:
        return None if self.count is None else len(range(self.slot, self.count, self.stride))


def _reader_shares(weights: list[int], readers: int) -> list[int]:
    """How many readers split each shard: one each, the rest to the shards with most samples per reader."""
    shares = [1] * len(weights)
    for _ in range(readers - len(weights)):
        busiest = max(range(len(weights)), key=lambda i: weights[i] / shares[i])
        shares[busiest] += 1
    return shares


def _assign(parts: list[_Part], readers: int) -> list[list[_Part]]:
    """Whole shards to readers, each to the least loaded one; with fewer shards than readers, split inside shards."""
    weights = [part.count if part.count is not None else 1 for part in parts]
    if len(parts) < readers:
        return [[dataclasses.replace(part, slot=slot, stride=share)]
                for part, share in zip(parts, _reader_shares(weights, readers)) for slot in range(share)]
    plan: list[list[_Part]] = [[] for _ in range(readers)]
    loads = [0] * readers
    for part, weight in zip(parts, weights):
        reader = loads.index(min(loads))
        plan[reader].append(part)
        loads[reader] += weight
    return plan


def _train_plan(shards: ShardSet, seed: int, epoch: int, readers: int) -> list[list[_Part]]:
    counts = shards.sample_counts or [None] * len(shards.urls)
    order = list(range(len(shards.urls)))
    random.Random(f"shard-order-{seed}-{epoch}").shuffle(order)
    return _assign([_Part((shards.urls[i],), counts[i]) for i in order], readers)


def _val_plan(shards: ShardSet, limit: int, readers: int) -> list[list[_Part]]:
    if shards.sample_counts is None:
        if limit:
            return [[_Part(tuple(shards.urls), slot=r, stride=readers, take=limit)] for r in range(readers)]
        return _assign([_Part((url,)) for url in shards.urls], readers)
    parts, remaining = [], limit or math.inf
    for url, count in zip(shards.urls, shards.sample_counts):
        if remaining <= 0:
            break
        take = min(count, remaining)
        parts.append(_Part((url,), take, take=take if take < count else None))
        remaining -= take
    return _assign(parts, readers)


# --- Per-sample decoding ---------------------------------------------------------


def _random_crop_box(width: int, height: int, rng: random.Random) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop box: area fraction in CROP_SCALE, aspect in CROP_RATIO."""
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        area = width * height * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    return center_box(width, height)


def center_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The centered square: resizing it to S x S is 'short side to S, then center crop S'."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def decode_crop(data: bytes, size: int, box_for: Callable[[int, int], tuple[float, float, float, float]],
                flip: bool = False) -> torch.Tensor:
    """Decode an image and resize its box ``box_for(width, height)`` to a (3, size, size) uint8 tensor.

    JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers
    the box with ``size`` pixels (``images.decode_plain_jpeg``, or Pillow's
    ``draft`` for other formats, CMYK and damaged JPEGs). OpenCV then resizes the
    box in the decoded pixels: bilinear when enlarging or shrinking by less than
    ``_AREA_FROM_SHRINK`` per side (0.3 levels from an antialiased filter there,
    at a quarter of area averaging's time), area averaging beyond. ``flip``
    mirrors it left to right. The tensor is a channels-first view of
    channels-last pixels (no transposing copy).
    """
    pixels, (width, height), (left, top, right, bottom) = _decode_for_box(data, size, box_for)
    scale_x, scale_y = pixels.shape[1] / width, pixels.shape[0] / height
    top, left = round(top * scale_y), round(left * scale_x)
    bottom, right = max(top + 1, round(bottom * scale_y)), max(left + 1, round(right * scale_x))
    crop = pixels[top:bottom, left:right]
    shrink = math.sqrt(crop.shape[0] * crop.shape[1]) / size
    resized = cv2.resize(crop, (size, size),
                         interpolation=cv2.INTER_AREA if shrink >= _AREA_FROM_SHRINK else cv2.INTER_LINEAR)
    return torch.from_numpy(cv2.flip(resized, 1) if flip else resized).permute(2, 0, 1)


_AREA_FROM_SHRINK = 1.5


def _decode_for_box(data: bytes, size: int, box_for: Callable[[int, int], tuple[float, float, float, float]]):
    """(pixels (h, w, 3) uint8 decoded at 1/``_dct_factor`` of full size, the full (width, height), the box)."""
    jpeg_size = plain_jpeg_size(data)
    image = None if jpeg_size else Image.open(io.BytesIO(data))
    width, height = jpeg_size or image.size
    box = box_for(width, height)
    factor = _dct_factor(width, height, box, size)
    pixels = decode_plain_jpeg(data, factor) if jpeg_size else None
    if pixels is not None:
        return pixels, (width, height), box
    image = image or Image.open(io.BytesIO(data))  # not a plain JPEG, or a damaged one: Pillow decides
    image.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image), (width, height), box


def _dct_factor(width: int, height: int, box: tuple[float, float, float, float], size: int) -> int:
    """The largest of 8, 4, 2, 1 by which the image can shrink while ``box`` still spans ``size`` pixels each way.

    The scales Pillow's ``draft`` uses; libjpeg-turbo's other ones (3/8, 5/8, ...) are slower.
    """
    left, top, right, bottom = box
    room = min((right - left) / size, (bottom - top) / size)
    return next((factor for factor in (8, 4, 2) if room >= factor), 1)


class _ErrorCounter:
    """Corrupt samples one reader skipped (placeholders from ``tarstream`` and images that do not decode).

    A training reader that goes over its samples again to fill its quota meets
    the same corrupt samples again: only its first pass is counted.
    """

    def __init__(self) -> None:
        self.count = 0
        self.first_pass = True

    def add(self) -> None:
        self.count += self.first_pass

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def _open_shard(url: str):
    """A shard's byte stream: s3:// and gs:// objects through ``colorray.data.storage``, the rest by webdataset."""
    return storage.open_input(url) if storage.is_uri(url) else wds.gopen(url)


def _read(parts: list[_Part]) -> Iterator[dict[str, Any]]:
    """This reader's samples of its parts, corrupt ones as ``tarstream`` placeholders (so slots stay aligned)."""
    for part in parts:
        samples = (sample for url in part.urls for sample in read_samples(url, _open_shard))
        for index, sample in enumerate(samples):
            if part.take is not None and index >= part.take:
                break
            if index % part.stride == part.slot:
                yield sample


def _cycle(read_pass: Callable[[], Iterator[dict[str, Any]]], parts: int,
           errors: _ErrorCounter) -> Iterator[dict[str, Any]]:
    """Pass after pass over a reader's decoded samples (a reader that runs out before its quota starts again)."""
    while True:
        seen = 0
        for item in read_pass():
            seen += 1
            yield item
        if seen == 0:
            raise DataError(f"a loader worker found no readable samples in its {parts} shard part(s); "
                            "check the shards or use fewer loader workers")
        errors.first_pass = False


def _collate(items: list[dict[str, Any]], decode_errors: int, image_size: int) -> dict[str, Any]:
    return {
        "rgb": torch.stack([item["rgb"].permute(1, 2, 0) for item in items]).permute(0, 3, 1, 2)  # channels-last
        if items else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8),
        "label": torch.tensor([item["label"] for item in items], dtype=torch.int64),
        "key": [item["key"] for item in items],
        "decode_errors": decode_errors,
    }


class _ShardStream(IterableDataset):
    """The batches of one rank: loader worker ``w`` reads ``plan[w]`` and yields at most ``quotas[w]`` batches."""

    def __init__(self, plan: list[list[_Part]], *, image_size: int, batch_size: int, seed_text: str, train: bool,
                 quotas: list[int] | None = None, shuffle_buffer: int = 0, length: int | None = None):
        self.plan, self.image_size, self.batch_size = plan, image_size, batch_size
        self.seed_text, self.train, self.quotas = seed_text, train, quotas
        self.shuffle_buffer, self.length = shuffle_buffer, length

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("the number of batches is unknown: the shards have no index.json")
        return self.length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = random.Random(f"{self.seed_text}-{worker}")
        errors = _ErrorCounter()
        quota = self.quotas[worker] if self.quotas is not None else None
        if quota == 0:
            return
        parts = self.plan[worker]
        if self.train:
            decoded = _cycle(lambda: self._decoded(self._shuffled(_read(parts), rng), rng, errors), len(parts),
                             errors)
        else:
            decoded = self._decoded(_read(parts), rng, errors)
        yield from self._batches(decoded, quota, errors)

    def _decoded(self, samples: Iterator[dict[str, Any]], rng: random.Random,
                 errors: _ErrorCounter) -> Iterator[dict[str, Any]]:
        return (item for item in (self._decode(s, rng, errors) for s in samples) if item is not None)

    def _shuffled(self, samples: Iterator[dict[str, Any]], rng: random.Random) -> Iterator[dict[str, Any]]:
        """Buffer shuffle within one pass, so a reader sees all its samples before any repeats."""
        if self.shuffle_buffer <= 1:
            return samples
        return wds.shuffle(self.shuffle_buffer, min(100, self.shuffle_buffer), rng=rng)(samples)

    def _decode(self, sample: dict[str, Any], rng: random.Random, errors: _ErrorCounter) -> dict[str, Any] | None:
        data = next((sample[field] for field in IMAGE_FIELDS if field in sample), None)
        if data is None:  # a tarstream placeholder
            errors.add()
            return None
        try:
            if self.train:
                box_for = functools.partial(_random_crop_box, rng=rng)
                rgb = decode_crop(data, self.image_size, box_for, flip=rng.random() < 0.5)
            else:
                rgb = decode_crop(data, self.image_size, center_box)
            label = int(sample["cls"]) if "cls" in sample else -1
        except Exception:  # noqa: BLE001 - a bad sample is skipped and counted, never fatal
            errors.add()
            return None
        return {"rgb": rgb, "label": label, "key": sample["__key__"]}

    def _batches(self, decoded: Iterator[dict], quota: int | None, errors: _ErrorCounter) -> Iterator[dict]:
        batch, produced = [], 0
        for item in decoded:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield _collate(batch, errors.take(), self.image_size)
                batch, produced = [], produced + 1
                if quota is not None and produced >= quota:
                    return
        if quota is None and (batch or errors.count):  # the last batch: short, or empty with only a count
            yield _collate(batch, errors.take(), self.image_size)


# --- Loaders ------------------------------------------------------------------------


def _check_layout(*, image_size: int, batch_size: int, rank: int, world_size: int, loader_workers: int) -> None:
    if image_size < 1 or batch_size < 1:
        raise DataError(f"image_size and batch_size must be >= 1, got {image_size} and {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
    if loader_workers < 0:
        raise DataError(f"loader_workers must be >= 0, got {loader_workers}")


def _data_loader(stream: _ShardStream, loader_workers: int) -> DataLoader:
    return DataLoader(stream, batch_size=None, num_workers=loader_workers)


def train_batches_per_rank(shards: ShardSet, *, world_size: int, batch_size: int, samples_per_epoch: int = 0) -> int:
    """floor(total / (world_size * batch_size)): the same on every rank, whatever the shard sizes."""
    total = samples_per_epoch or shards.total_samples
    if total is None:
        raise DataError(f"sample counts of {shards.description} are unknown (no index.json): "
                        "set data.samples_per_epoch")
    batches = total // (world_size * batch_size)
    if batches == 0:
        raise DataError(f"{total} samples cannot fill one batch of {batch_size} on each of {world_size} ranks")
    return batches


def train_loader(shards: ShardSet, *, image_size: int, batch_size: int, rank: int, world_size: int, epoch: int,
                 seed: int, loader_workers: int, shuffle_buffer: int, samples_per_epoch: int = 0) -> Iterable[dict]:
    """Shuffled, randomly cropped and flipped uint8 RGB batches; ``len()`` is the same on every rank."""
    _check_layout(image_size=image_size, batch_size=batch_size, rank=rank, world_size=world_size,
                  loader_workers=loader_workers)
    workers = max(1, loader_workers)
    batches = train_batches_per_rank(shards, world_size=world_size, batch_size=batch_size,
                                     samples_per_epoch=samples_per_epoch)
    plan = _train_plan(shards, seed, epoch, world_size * workers)[rank * workers:(rank + 1) * workers]
    quotas = [batches // workers + (w < batches % workers) for w in range(workers)]
    stream = _ShardStream(plan, image_size=image_size, batch_size=batch_size, seed_text=f"{seed}-{epoch}-{rank}",
                          train=True, quotas=quotas, shuffle_buffer=shuffle_buffer, length=batches)
    return _data_loader(stream, loader_workers)


def val_loader(shards: ShardSet, *, image_size: int, batch_size: int, rank: int, world_size: int, limit: int = 0,
               loader_workers: int = 0) -> Iterable[dict]:
    """Deterministic (short side to ``image_size``, center crop) batches of this rank's disjoint share.

    The ranks' shares together are the whole set, or its first ``limit`` samples.
    """
    _check_layout(image_size=image_size, batch_size=batch_size, rank=rank, world_size=world_size,
                  loader_workers=loader_workers)
    workers = max(1, loader_workers)
    plan = _val_plan(shards, limit, world_size * workers)[rank * workers:(rank + 1) * workers]
    sizes = [sum(part.size() for part in parts) if all(p.count is not None for p in parts) else None for parts in plan]
    length = None if None in sizes else sum(math.ceil(size / batch_size) for size in sizes)
    stream = _ShardStream(plan, image_size=image_size, batch_size=batch_size, seed_text="val", train=False,
                          length=length)
    return _data_loader(stream, loader_workers)
