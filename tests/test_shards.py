"""colorray.shards: real image folders written to real tar shards, and the CLI's refusals."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from colorray.data.shards import ShardError, write_shards

PHOTOS = {"astronaut": skimage_data.astronaut, "cat": skimage_data.chelsea, "coffee": skimage_data.coffee}


def crops(photo: np.ndarray, count: int, rng: np.random.Generator) -> list[Image.Image]:
    height, width = photo.shape[:2]
    result = []
    for _ in range(count):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        top, left = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        result.append(Image.fromarray(photo[top:top + h, left:left + w]))
    return result


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """3 class folders of JPEG and PNG crops, plus a truncated JPEG and two grayscale files."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, load in PHOTOS.items():
        folder = root / name
        folder.mkdir()
        for i, crop in enumerate(crops(load(), 6, rng)):
            crop.save(folder / (f"img{i}.JPEG" if i % 2 == 0 else f"img{i}.png"))
    whole = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(whole, "JPEG")
    (root / "cat" / "truncated.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    Image.fromarray(skimage_data.coffee()).convert("L").save(root / "coffee" / "gray_l.png")
    gray = np.asarray(Image.fromarray(skimage_data.astronaut()).convert("L"))
    Image.fromarray(np.stack([gray] * 3, axis=2)).save(root / "astronaut" / "gray_rgb.jpg", quality=90)
    (root / "astronaut" / "notes.txt").write_text("not an image")
    return root


def tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            key, extension = member.name.split(".", 1)
            samples.setdefault(key, {})[extension] = archive.extractfile(member).read()
    return samples


def all_samples(split_folder: Path) -> dict[str, dict[str, bytes]]:
    index = json.loads((split_folder / "index.json").read_text())
    merged: dict[str, dict[str, bytes]] = {}
    for shard in index["shards"]:
        samples = tar_samples(split_folder / shard["file"])
        assert len(samples) == shard["samples"]
        merged.update(samples)
    return merged


def test_round_trip_with_labels_and_class_map(image_tree, tmp_path):
    summary = write_shards(image_tree, tmp_path / "out", shard_size=5, workers=1, progress=False)

    assert summary["classes"] == {"astronaut": 0, "cat": 1, "coffee": 2}
    assert summary["splits"] == {"train": {"shards": 5, "samples": 18}}, "21 files in shards of 5, 3 skipped"
    train = tmp_path / "out" / "train"
    assert sorted(p.name for p in train.glob("*.tar")) == [f"shard-00000{i}.tar" for i in range(5)]
    samples = all_samples(train)
    assert len(samples) == 18
    for key, fields in samples.items():
        meta = json.loads(fields["json"])
        assert int(fields["cls"]) == summary["classes"][meta["class"]]
        stored = fields.get("jpg", fields.get("png"))
        assert stored == (image_tree / meta["source"]).read_bytes(), "without --resize the bytes are unchanged"
        assert ("png" in fields) == meta["source"].endswith(".png")
    assert "astronaut_img0" in samples


def test_grayscale_and_unreadable_files_are_skipped_and_listed(image_tree, tmp_path):
    summary = write_shards(image_tree, tmp_path / "out", workers=1, progress=False)

    assert summary["skipped_counts"] == {"grayscale": 2, "unreadable": 1}
    assert summary["skipped"]["grayscale"] == ["astronaut/gray_rgb.jpg", "coffee/gray_l.png"]
    assert summary["skipped"]["unreadable"] == ["cat/truncated.jpg"]
    split = json.loads((tmp_path / "out" / "train" / "index.json").read_text())
    assert split["skipped"] == summary["skipped"]
    assert split["samples"] == 18 and split["smoke"] is False and split["split"] == "train"


def test_val_split_is_separate_and_seeded(image_tree, tmp_path):
    first = write_shards(image_tree, tmp_path / "a", val_count=4, resize=32, workers=2, seed=3, progress=False)
    again = write_shards(image_tree, tmp_path / "b", val_count=4, resize=32, workers=1, seed=3, progress=False)

    assert first["splits"]["val"]["samples"] + first["splits"]["train"]["samples"] == 18
    val_a, train_a = all_samples(tmp_path / "a" / "val"), all_samples(tmp_path / "a" / "train")
    assert not set(val_a) & set(train_a)
    assert set(val_a) == set(all_samples(tmp_path / "b" / "val"))
    assert first["splits"] == again["splits"]
    image = Image.open(io.BytesIO(next(iter(val_a.values()))["jpg"]))
    assert image.format == "JPEG" and min(image.size) == 32


def test_unlabeled_folder(image_tree, tmp_path):
    summary = write_shards(image_tree / "cat", tmp_path / "out", workers=1, progress=False)

    assert summary["classes"] == {} and summary["options"]["labels"] is False
    samples = all_samples(tmp_path / "out" / "train")
    assert len(samples) == 6 and all("cls" not in fields for fields in samples.values())
    assert json.loads(next(iter(samples.values()))["json"])["class"] is None


def test_overwrite_replaces_old_shards(image_tree, tmp_path):
    write_shards(image_tree, tmp_path / "out", shard_size=2, workers=1, progress=False)
    with pytest.raises(ShardError, match="--overwrite"):
        write_shards(image_tree, tmp_path / "out", workers=1, progress=False)
    write_shards(image_tree, tmp_path / "out", shard_size=100, workers=1, overwrite=True, progress=False)

    assert [p.name for p in (tmp_path / "out" / "train").glob("*.tar")] == ["shard-000000.tar"]


@pytest.mark.slow
def test_write_shards_as_ray_tasks(image_tree, tmp_path, ray_cluster):
    summary = write_shards(image_tree, tmp_path / "out", shard_size=4, use_ray=True, progress=False)

    assert summary["splits"]["train"] == {"shards": 6, "samples": 18}
    assert len(all_samples(tmp_path / "out" / "train")) == 18


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "colorray.shards", *args, "--quiet"],
                          capture_output=True, text=True, timeout=120)


def bad_inputs(root: Path, image_tree: Path) -> dict[str, tuple[list[str], str]]:
    (root / "empty").mkdir()
    (root / "a_file").write_text("x")
    occupied = root / "occupied"
    (occupied / "train").mkdir(parents=True)
    (occupied / "train" / "shard-000000.tar").write_bytes(b"")
    return {
        "missing source": ([str(root / "nope"), str(root / "o1")], "source folder not found"),
        "source is a file": ([str(root / "a_file"), str(root / "o2")], "source is not a folder"),
        "empty source": ([str(root / "empty"), str(root / "o3")], "no images"),
        "unwritable output": ([str(image_tree), str(root / "a_file" / "out")], "cannot write to output folder"),
        "existing shards": ([str(image_tree), str(occupied)], "already holds shards"),
        "bad val split": ([str(image_tree), str(root / "o4"), "--val-count", "50"], "leaves no training images"),
    }


@pytest.mark.slow
def test_cli_bad_input_gives_one_line_and_status_2(image_tree, tmp_path):
    for case, (args, message) in bad_inputs(tmp_path, image_tree).items():
        done = run_cli(*args)
        assert done.returncode == 2, case
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), (case, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, case
    assert (tmp_path / "occupied" / "train" / "shard-000000.tar").exists(), "nothing is lost without --overwrite"


@pytest.mark.slow
def test_cli_interrupted_leaves_nothing_half_written(image_tree, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for i, crop in enumerate(crops(skimage_data.coffee(), 3, np.random.default_rng(1))):
        crop.save(source / f"{i}.jpg")
    os.mkfifo(source / "blocks_reading.jpg")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "colorray.shards", str(source), str(out), "--workers", "1",
                                "--quiet"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("train/.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130 and stderr.startswith("error: interrupted"), stderr
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_a_folder_without_any_usable_image_exits_non_zero_and_writes_nothing(tmp_path, capsys):
    from colorray.data.shards import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(skimage_data.camera()[:40, :40]).save(src / "gray.png")
    out = tmp_path / "out"
    assert main([str(src), str(out), "--workers", "1", "--quiet"]) == 2
    assert capsys.readouterr().err == (f"error: no usable image under {src} for the training split "
                                       "(1 grayscale, 1 unreadable); nothing was written\n")
    assert not [p for p in out.rglob("*") if p.is_file()]
