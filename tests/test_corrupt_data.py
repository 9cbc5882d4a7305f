"""Corrupt data is skipped and counted, never lost silently: real tar shards broken by hand, without Ray.

A garbled tar header ends Python's (and webdataset's) tar stream without an error;
``colorray.data.tarstream`` reads on to the next valid header and counts the
damage. The loaders carry the counts in ``decode_errors``; the training loop sums
them per epoch (``skipped_metrics``) and stops above ``data.max_corrupt_share``.
"""

from __future__ import annotations

import dataclasses
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_data import IMAGE_SIZE, make_samples

from colorray.config import config_from_dict
from colorray.data.loader import open_shard_set, train_loader, val_loader
from colorray.data.shards import write_tar
from colorray.data.tarstream import CORRUPT, read_samples
from colorray.train.console import epoch_line
from colorray.train.validation import corrupt_data_problem, skipped_metrics


def write_shard(path: Path, count: int, prefix: str = "s0", bad_image: str = "") -> list[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = make_samples(count, prefix, np.random.default_rng(count))
    samples = [dataclasses.replace(s, image=b"not an image") if s.key == bad_image else s for s in samples]
    write_tar(path, samples)
    return [s.key for s in samples]


def garble_header(path: Path, member: str) -> None:
    """Overwrite the start of ``member``'s tar header (its name and mode): its checksum no longer matches."""
    with tarfile.open(path) as archive:
        offset = archive.getmember(member).offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def val_keys_and_skips(folder: Path, **options) -> tuple[list[str], int]:
    batches = list(val_loader(open_shard_set(str(folder)), image_size=IMAGE_SIZE, batch_size=3, rank=0,
                              world_size=1, **options))
    return [key for batch in batches for key in batch["key"]], sum(batch["decode_errors"] for batch in batches)


@pytest.mark.parametrize("member", ["s0-003.jpg", "s0-003.cls", "s0-000.jpg"])
def test_a_garbled_tar_header_costs_only_its_sample_and_is_counted(tmp_path, member):
    keys = write_shard(tmp_path / "train" / "part-000000.tar", 8)
    garble_header(tmp_path / "train" / "part-000000.tar", member)
    read, skipped = val_keys_and_skips(tmp_path / "train")
    lost = member.split(".")[0]
    assert read == [key for key in keys if key != lost], "every good sample after the garbled header is read"
    assert skipped == 1


def test_a_garbled_header_of_a_sample_s_last_file_keeps_the_sample_and_counts_the_damage(tmp_path):
    keys = write_shard(tmp_path / "train" / "part-000000.tar", 6)
    garble_header(tmp_path / "train" / "part-000000.tar", "s0-002.json")
    read, skipped = val_keys_and_skips(tmp_path / "train")
    assert read == keys and skipped == 1


def test_a_truncated_shard_keeps_the_samples_before_the_cut_and_counts_one(tmp_path):
    write_shard(tmp_path / "train" / "part-000000.tar", 6)
    second = tmp_path / "train" / "part-000001.tar"
    keys = write_shard(second, 6, prefix="s1")
    with tarfile.open(second) as archive:
        cut = archive.getmember("s1-003.jpg").offset_data + 100
    second.write_bytes(second.read_bytes()[:cut])
    read, skipped = val_keys_and_skips(tmp_path / "train")
    assert [key for key in read if key.startswith("s1")] == keys[:3] and len(read) == 9
    assert skipped == 1


def test_a_file_that_is_no_tar_and_a_sample_without_image_are_counted(tmp_path):
    keys = write_shard(tmp_path / "train" / "part-000000.tar", 5, bad_image="s0-001")
    (tmp_path / "train" / "part-000001.tar").write_bytes(b"this is not a tar file" * 100)
    read, skipped = val_keys_and_skips(tmp_path / "train")
    assert read == [key for key in keys if key != "s0-001"] and skipped == 2
    placeholders = [s for s in read_samples(str(tmp_path / "train" / "part-000001.tar")) if CORRUPT in s]
    assert len(placeholders) == 1 and "garbled tar header" in placeholders[0][CORRUPT]


def test_readers_that_split_one_shard_count_its_corrupt_samples_once(tmp_path):
    write_shard(tmp_path / "train" / "part-000000.tar", 12, bad_image="s0-005")
    garble_header(tmp_path / "train" / "part-000000.tar", "s0-009.jpg")
    read, skipped = val_keys_and_skips(tmp_path / "train", loader_workers=2)
    assert len(read) == 10 and skipped == 2


def test_a_training_epoch_counts_each_corrupt_sample_once_over_ranks_and_loader_workers(tmp_path):
    for number in range(4):
        path = tmp_path / "train" / f"part-{number:06d}.tar"
        write_shard(path, 4, prefix=f"s{number}", bad_image=f"s{number}-001" if number < 2 else "")
    garble_header(tmp_path / "train" / "part-000003.tar", "s3-002.jpg")
    shards = open_shard_set(str(tmp_path / "train"))
    shards = dataclasses.replace(shards, sample_counts=[4, 4, 4, 4])  # what an index.json would say
    skipped = 0
    for rank in range(2):
        loader = train_loader(shards, image_size=IMAGE_SIZE, batch_size=2, rank=rank, world_size=2, epoch=0, seed=0,
                              loader_workers=2, shuffle_buffer=4)
        batches = list(loader)
        assert len(batches) == len(loader) == 4, "every rank still fills its batches"
        skipped += sum(batch["decode_errors"] for batch in batches)
    assert skipped == 3, "a reader that cycles to fill its quota does not count the same sample twice"


def test_the_epoch_counts_and_the_limit_on_the_share():
    counts = skipped_metrics("train", 2, 198)  # one process: the all-reduce sums nothing else in
    assert counts == {"train/skipped_corrupt": 2, "train/corrupt_share": 0.01}
    config = config_from_dict({})
    assert corrupt_data_problem(config, {**counts, "epoch": 1}) is None  # 1% is allowed by default
    val = skipped_metrics("val", 3, 97)
    problem = corrupt_data_problem(config, {**counts, **val, "epoch": 2})
    assert problem == ("epoch 2: skipped 3 corrupt validation samples (3.0% of those read), more than "
                       "data.max_corrupt_share = 0.01 allows; rebuild or fix the shards (python -m colorray.shards), "
                       "or raise data.max_corrupt_share")
    assert corrupt_data_problem(config_from_dict({"data": {"max_corrupt_share": 0.05}}), {**counts, **val}) is None


def test_the_epoch_line_says_how_many_corrupt_samples_were_skipped():
    config = config_from_dict({})
    metrics = {"train/total": 0.1, "val/psnr": 20.0, "train/skipped_corrupt": 2, "val/skipped_corrupt": 1}
    line = epoch_line(config, 1, 10, metrics, 5.0, 3.0)
    assert "| skipped 3 corrupt samples (train 2, val 1) |" in line
    clean = epoch_line(config, 1, 10, {**metrics, "train/skipped_corrupt": 0, "val/skipped_corrupt": 0}, 5.0, 3.0)
    assert "corrupt" not in clean
