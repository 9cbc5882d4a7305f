"""colorray.data.loader and colorray.data.smoke: real tar shards streamed from disk and over a local HTTP server."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from colorray.config import DataConfig
from colorray.data.loader import (
    DataError,
    center_box,
    decode_crop,
    open_shard_set,
    resolve_data,
    train_loader,
    val_loader,
)
from colorray.data.shards import (
    SKIP_REASONS,
    Sample,
    encode_jpeg,
    split_index,
    write_tar,
)
from colorray.data.smoke import ensure_smoke_dataset

IMAGE_SIZE = 24


def make_samples(count: int, prefix: str, rng: np.random.Generator) -> list[Sample]:
    photo = skimage_data.astronaut()
    samples = []
    for i in range(count):
        h, w = int(rng.integers(32, 64)), int(rng.integers(32, 64))
        top, left = int(rng.integers(0, 512 - h)), int(rng.integers(0, 512 - w))
        crop = Image.fromarray(photo[top:top + h, left:left + w])
        samples.append(Sample(f"{prefix}-{i:03d}", "jpg", encode_jpeg(crop, 90), i % 3, "generated", None))
    return samples


def write_split(folder: Path, sizes: list[int], *, with_index: bool = True, corrupt_key: str = "") -> list[str]:
    """Shards of the given sizes (keys s<shard>-<i>); returns every key in shard order."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(sizes))
    entries, keys = [], []
    for number, size in enumerate(sizes):
        samples = make_samples(size, f"s{number}", rng)
        samples = [dataclasses.replace(s, image=b"not an image") if s.key == corrupt_key else s for s in samples]
        name = f"part-{number:06d}.tar"
        entries.append({"file": name, "samples": write_tar(folder / name, samples)})
        keys += [s.key for s in samples]
    if with_index:
        index = split_index(folder.name, entries, {"a": 0, "b": 1, "c": 2}, {r: [] for r in SKIP_REASONS}, {})
        (folder / "index.json").write_text(json.dumps(index))
    return keys


def keys_of(loader) -> list[str]:
    return [key for batch in loader for key in batch["key"]]


def batches_per_rank(shards, world_size: int, **options) -> list[int]:
    options = {"image_size": IMAGE_SIZE, "epoch": 0, "seed": 0, "shuffle_buffer": 8, **options}
    counts = []
    for rank in range(world_size):
        loader = train_loader(shards, rank=rank, world_size=world_size, **options)
        counts.append(sum(1 for _ in loader))
        assert counts[-1] == len(loader)
    return counts


@pytest.fixture(scope="module")
def even(tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("even") / "train"
    return folder, write_split(folder, [8, 8, 8, 8])


def test_batches_hold_uint8_rgb_labels_keys_and_error_counts(even):
    folder, keys = even
    batch = next(iter(train_loader(open_shard_set(str(folder)), image_size=IMAGE_SIZE, batch_size=4, rank=0,
                                   world_size=1, epoch=0, seed=0, loader_workers=0, shuffle_buffer=8)))

    assert batch["rgb"].dtype == torch.uint8 and batch["rgb"].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4,)
    assert set(batch["key"]) <= set(keys) and batch["decode_errors"] == 0
    assert [int(key.split("-")[1]) % 3 for key in batch["key"]] == batch["label"].tolist()


def test_two_ranks_two_workers_see_each_sample_once(even):
    folder, keys = even
    shards = open_shard_set(str(folder))
    seen = [keys_of(train_loader(shards, image_size=IMAGE_SIZE, batch_size=4, rank=rank, world_size=2, epoch=1,
                                 seed=5, loader_workers=2, shuffle_buffer=8)) for rank in range(2)]

    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(keys)


def test_uneven_shards_give_equal_batch_counts_per_rank(tmp_path):
    write_split(tmp_path / "uneven", [7, 3, 1, 9])
    shards = open_shard_set(str(tmp_path / "uneven"))

    assert batches_per_rank(shards, 2, batch_size=2, loader_workers=0) == [5, 5]
    assert batches_per_rank(shards, 2, batch_size=2, loader_workers=2) == [5, 5]
    assert batches_per_rank(shards, 3, batch_size=3, loader_workers=2) == [2, 2, 2], "fewer shards than readers"


def test_fewer_shards_than_readers_split_inside_shards(tmp_path):
    keys = write_split(tmp_path / "one", [12])
    shards = open_shard_set(str(tmp_path / "one"))
    seen = [keys_of(train_loader(shards, image_size=IMAGE_SIZE, batch_size=3, rank=rank, world_size=2, epoch=0,
                                 seed=0, loader_workers=2, shuffle_buffer=0)) for rank in range(2)]

    assert sorted(seen[0] + seen[1]) == sorted(keys)


def test_shuffling_changes_by_epoch_and_repeats_by_seed(even):
    folder, _ = even
    shards = open_shard_set(str(folder))

    def order(epoch: int, seed: int) -> list[str]:
        return keys_of(train_loader(shards, image_size=IMAGE_SIZE, batch_size=4, rank=0, world_size=1, epoch=epoch,
                                    seed=seed, loader_workers=2, shuffle_buffer=16))

    first = order(0, 0)
    assert order(0, 0) == first
    assert order(1, 0) != first and sorted(order(1, 0)) == sorted(first)
    assert order(0, 1) != first


def test_val_ranks_are_disjoint_and_limit_takes_the_first_samples(tmp_path):
    keys = write_split(tmp_path / "val", [5, 6, 7])
    shards = open_shard_set(str(tmp_path / "val"))

    def per_rank(limit: int) -> list[list[str]]:
        return [keys_of(val_loader(shards, image_size=IMAGE_SIZE, batch_size=4, rank=rank, world_size=2, limit=limit,
                                   loader_workers=2)) for rank in range(2)]

    whole = per_rank(0)
    assert not set(whole[0]) & set(whole[1]) and sorted(whole[0] + whole[1]) == sorted(keys)
    assert whole == per_rank(0), "validation is deterministic"
    first = per_rank(8)
    assert sorted(first[0] + first[1]) == sorted(keys[:8])
    loader = val_loader(shards, image_size=IMAGE_SIZE, batch_size=4, rank=0, world_size=1, limit=8)
    assert len(loader) == 2 and sum(len(b["key"]) for b in loader) == 8


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pillow_reference(data: bytes, size: int, factor: int) -> np.ndarray:
    """A center crop from Pillow's decode (its draft decode at 1/factor)."""
    image = Image.open(io.BytesIO(data))
    if factor > 1:
        image.draft("RGB", (-(-image.width // factor), -(-image.height // factor)))
    pixels = np.asarray(image.convert("RGB"))
    left, top, right, bottom = (round(v) for v in center_box(pixels.shape[1], pixels.shape[0]))
    shrink = (bottom - top) / size
    return cv2.resize(pixels[top:bottom, left:right], (size, size),
                      interpolation=cv2.INTER_AREA if shrink >= 1.5 else cv2.INTER_LINEAR)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("size,factor", [(450, 1), (300, 1), (250, 1), (200, 2), (100, 4), (40, 8)])
def test_decode_crop_gives_pillows_pixels_at_the_dct_scale_that_covers_the_box(mode, size, factor):
    photo = Image.fromarray(skimage_data.astronaut()[:, :400]).convert(mode)
    data = encoded(photo, "JPEG", quality=90)
    crop = decode_crop(data, size, center_box).permute(1, 2, 0).numpy()
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop, pillow_reference(data, size, factor))
    if factor > 1:
        return
    png = decode_crop(encoded(photo.convert("RGB"), "PNG"), size, center_box).permute(1, 2, 0).numpy()
    assert np.abs(png.astype(int) - crop).mean() < 3  # the same picture, without the JPEG's loss


def test_decode_crop_refuses_a_truncated_or_garbled_jpeg():
    data = encoded(Image.fromarray(skimage_data.astronaut()), "JPEG")
    for broken in (data[: len(data) // 2], data[:2] + b"garbage" * 50):
        with pytest.raises(OSError):
            decode_crop(broken, 64, center_box)


def test_corrupt_sample_is_skipped_and_counted(tmp_path):
    keys = write_split(tmp_path / "bad", [6, 6], corrupt_key="s1-002")
    batches = list(val_loader(open_shard_set(str(tmp_path / "bad")), image_size=IMAGE_SIZE, batch_size=4, rank=0,
                              world_size=1))

    assert sum(batch["decode_errors"] for batch in batches) == 1
    assert sorted(k for b in batches for k in b["key"]) == sorted(set(keys) - {"s1-002"})


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path; yields (tmp_path, base URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_streaming_over_http_with_and_without_index(http_root):
    root, base = http_root
    keys = write_split(root / "indexed", [4, 5, 6])
    write_split(root / "bare", [4, 5], with_index=False)

    shards = open_shard_set(f"{base}/indexed/")
    assert shards.sample_counts == [4, 5, 6] and shards.classes == {"a": 0, "b": 1, "c": 2}
    assert sorted(keys_of(val_loader(shards, image_size=IMAGE_SIZE, batch_size=4, rank=0, world_size=1,
                                     loader_workers=2))) == sorted(keys)
    pattern = open_shard_set(f"{base}/indexed/part-{{000000..000002}}.tar")
    assert pattern.sample_counts == [4, 5, 6]

    bare = open_shard_set(f"{base}/bare/part-{{000000..000001}}.tar")
    assert bare.sample_counts is None
    with pytest.raises(DataError, match="samples_per_epoch"):
        train_loader(bare, image_size=IMAGE_SIZE, batch_size=2, rank=0, world_size=1, epoch=0, seed=0,
                     loader_workers=0, shuffle_buffer=4)
    loader = train_loader(bare, image_size=IMAGE_SIZE, batch_size=2, rank=0, world_size=1, epoch=0, seed=0,
                          loader_workers=0, shuffle_buffer=4, samples_per_epoch=8)
    assert len(keys_of(loader)) == 8


def test_open_shard_set_names_bad_locations(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "nope"): "not found",
        str(tmp_path / "empty"): "no .tar shards",
        str(tmp_path / "x-{000000..000001}.tar"): "shard not found",
        "": "no data location",
    }
    for spec, message in cases.items():
        with pytest.raises(DataError, match=message):
            open_shard_set(spec)


def test_resolve_data_from_roots_and_explicit_val(tmp_path):
    write_split(tmp_path / "root" / "train", [4, 4])
    write_split(tmp_path / "root" / "val", [3])
    write_split(tmp_path / "trainonly" / "train", [4])

    train, val = resolve_data(DataConfig(train=str(tmp_path / "root")))
    assert train.sample_counts == [4, 4] and val.sample_counts == [3]
    _, val = resolve_data(DataConfig(train=str(tmp_path / "root"), val=str(tmp_path / "trainonly" / "train")))
    assert val.sample_counts == [4]
    with pytest.raises(DataError, match="no val/ split"):
        resolve_data(DataConfig(train=str(tmp_path / "trainonly")))
    with pytest.raises(DataError, match="set data.val"):
        resolve_data(DataConfig(train=str(tmp_path / "root" / "train")))


def test_smoke_dataset_builds_once_and_feeds_the_loaders(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORRAY_CACHE", str(tmp_path))
    train, val = resolve_data(DataConfig())
    root = ensure_smoke_dataset()
    stamp = (root / "index.json").stat().st_mtime_ns

    assert root == tmp_path / "smoke-v1" and ensure_smoke_dataset(tmp_path) == root
    assert (root / "index.json").stat().st_mtime_ns == stamp, "reused from the cache, not rebuilt"
    assert [p.name for p in tmp_path.iterdir()] == ["smoke-v1"], "no temporary folder left behind"
    assert train.smoke and val.smoke and "smoke dataset" in train.description
    assert sum(train.sample_counts) == 384 and sum(val.sample_counts) == 48
    assert set(train.classes) == {"astronaut", "chelsea", "coffee", "motorcycle_left", "motorcycle_right", "rocket"}
    summary = json.loads((root / "index.json").read_text())
    assert summary["smoke"] is True and summary["splits"]["val"]["samples"] == 48
    labels = Counter(int(l) for b in val_loader(val, image_size=32, batch_size=16, rank=0, world_size=1)
                     for l in b["label"])
    assert labels == Counter({i: 8 for i in range(6)})
