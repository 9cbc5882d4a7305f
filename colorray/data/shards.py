"""Image folders to WebDataset shards: ``python -m colorray.shards SRC OUT [options]``.

SRC is an ImageNet-style tree (``SRC/<class>/<image>``, class map sorted by
folder name) or any flat or nested folder of images (unlabeled). OUT gets
``train/NAME-000000.tar ...``, optionally ``val/NAME-000000.tar ...``, an
``index.json`` per split and a summary ``OUT/index.json``. Grayscale and
unreadable sources are skipped, counted and listed in the indexes.

Each shard is written by one task (a local process pool, or Ray tasks with
``--ray``) to a temporary name and renamed only when the whole run succeeded,
so an error or Ctrl-C leaves no half-written shard behind. An ``s3://`` or
``gs://`` OUT is written to a local staging folder first and uploaded when
complete (``colorray.data.storage``). ``docs/data.md`` describes the layout and
options.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import tarfile
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from colorray import cli
from colorray.data import storage
from colorray.data.images import IMAGE_SUFFIXES, find_images

SPLITS = ("train", "val")
SKIP_REASONS = ("grayscale", "unreadable")
_FORMAT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}
_GRAY_PROBE_SIZE = 64
_GRAY_TOLERANCE = 4  # max channel spread (0..255) on the downscaled probe that still counts as gray
_PARTIAL_PREFIX = ".partial-"


class ShardError(ValueError):
    """Bad input to the shard writer (missing source, no images, occupied output...)."""


@dataclass(frozen=True)
class Source:
    """One image file to store: where it is, its sample key and its label."""

    path: str
    relative: str
    key: str
    label: int | None
    class_name: str | None


@dataclass(frozen=True)
class Sample:
    """One encoded sample as it goes into a tar."""

    key: str
    extension: str
    image: bytes
    label: int | None
    source: str
    class_name: str | None


@dataclass
class ShardJob:
    """The work of one shard task: encode these sources into one temporary tar."""

    split: str
    number: int
    sources: list[Source]
    temp_path: str
    resize: int | None
    quality: int


@dataclass
class ShardResult:
    split: str
    number: int
    temp_path: str
    samples: int
    skipped: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in SKIP_REASONS})


class _Skipped(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- Sources ----------------------------------------------------------------------


def _sample_key(relative: Path) -> str:
    """A tar-safe key from a relative path: no dots (webdataset splits there), no slashes."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", relative.with_suffix("").as_posix())


def list_sources(src: Path, labels: bool = True) -> tuple[list[Source], dict[str, int]]:
    """Every image under ``src`` with a unique stable key; labeled when it is a ``class/image`` tree."""
    images = find_images(src)
    relatives = [image.relative_to(src) for image in images]
    labeled = labels and bool(relatives) and all(len(r.parts) == 2 for r in relatives)
    classes = {name: i for i, name in enumerate(sorted({r.parts[0] for r in relatives}))} if labeled else {}
    keys = [_sample_key(r) for r in relatives]
    taken: dict[str, int] = {}
    for key in keys:
        taken[key] = taken.get(key, 0) + 1
    sources = []
    for image, relative, key in zip(images, relatives, keys):
        if taken[key] > 1:
            key = f"{key}-{hashlib.sha1(relative.as_posix().encode()).hexdigest()[:8]}"
        class_name = relative.parts[0] if labeled else None
        label = classes[class_name] if labeled else None
        sources.append(Source(str(image), relative.as_posix(), key, label, class_name))
    return sources, classes


def split_sources(sources: list[Source], val_count: int, seed: int) -> dict[str, list[Source]]:
    """Shuffle once by ``seed`` (so every shard mixes classes); the first ``val_count`` go to val."""
    order = list(sources)
    random.Random(seed).shuffle(order)
    return {"train": order[val_count:], "val": order[:val_count]}


# --- Encoding one image -----------------------------------------------------------


def is_grayscale(image: Image.Image) -> bool:
    """True for single-channel images and for color images whose channels are (nearly) equal."""
    if not image.mode.startswith("P") and len(image.getbands()) < 3:
        return True
    probe = image.convert("RGB")
    probe.thumbnail((_GRAY_PROBE_SIZE, _GRAY_PROBE_SIZE))
    pixels = np.asarray(probe, dtype=np.int16)
    return int((pixels.max(axis=2) - pixels.min(axis=2)).max()) <= _GRAY_TOLERANCE


def _resized(image: Image.Image, short_side: int) -> Image.Image:
    width, height = image.size
    scale = short_side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.convert("RGB").resize(size, Image.LANCZOS)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _encode_source(source: Source, resize: int | None, quality: int) -> Sample:
    """Decode fully (to catch truncation), skip grayscale, re-encode only when resizing."""
    try:
        data = Path(source.path).read_bytes()
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        short_target = resize or _GRAY_PROBE_SIZE
        scale = short_target / min(width, height)
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        image.load()
        stored = _resized(image, resize) if resize else image
    except Exception:  # noqa: BLE001 - any decoder failure means the file is unusable
        raise _Skipped("unreadable") from None
    if is_grayscale(stored):
        raise _Skipped("grayscale")
    extension = _FORMAT_EXTENSIONS.get(image.format or "")
    if resize or extension is None:
        extension, data = "jpg", encode_jpeg(stored, quality)
    return Sample(source.key, extension, data, source.label, source.relative, source.class_name)


# --- Writing tars and indexes -----------------------------------------------------


def _add_member(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(payload))


def write_tar(path: Path, samples: Iterable[Sample]) -> int:
    """Write samples as a WebDataset tar (``key.jpg``, ``key.cls``, ``key.json``); returns the count."""
    count = 0
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for sample in samples:
            _add_member(archive, f"{sample.key}.{sample.extension}", sample.image)
            if sample.label is not None:
                _add_member(archive, f"{sample.key}.cls", str(sample.label).encode("ascii"))
            meta = {"source": sample.source, "class": sample.class_name}
            _add_member(archive, f"{sample.key}.json", json.dumps(meta).encode("utf-8"))
            count += 1
    return count


def write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    temp = path.with_name(f"{_PARTIAL_PREFIX}{uuid.uuid4().hex}-{path.name}")
    temp.write_text(json.dumps(content, indent=1, sort_keys=False))
    os.replace(temp, path)


def split_index(
    split: str, shards: list[dict[str, Any]], classes: dict[str, int], skipped: dict[str, list[str]],
    options: dict[str, Any], smoke: bool = False, description: str = "",
) -> dict[str, Any]:
    """The ``index.json`` of one split folder."""
    index = {
        "split": split,
        "shards": shards,
        "samples": sum(s["samples"] for s in shards),
        "classes": classes,
        "skipped": skipped,
        "options": options,
        "smoke": smoke,
    }
    if description:
        index["description"] = description
    return index


def summary_index(split_indexes: dict[str, dict[str, Any]], description: str = "") -> dict[str, Any]:
    """The dataset root's ``index.json``: splits, totals, class map, skips and options."""
    first = next(iter(split_indexes.values()))
    skipped = {r: sorted(f for i in split_indexes.values() for f in i["skipped"][r]) for r in SKIP_REASONS}
    summary = {
        "splits": {name: {"shards": len(i["shards"]), "samples": i["samples"]} for name, i in split_indexes.items()},
        "samples": sum(i["samples"] for i in split_indexes.values()),
        "classes": first["classes"],
        "skipped_counts": {reason: len(files) for reason, files in skipped.items()},
        "skipped": skipped,
        "options": first["options"],
        "smoke": first["smoke"],
    }
    if description:
        summary["description"] = description
    return summary


def write_shard(job: ShardJob) -> ShardResult:
    """Encode one shard's sources into its temporary tar (the unit of work of every worker)."""
    result = ShardResult(job.split, job.number, job.temp_path, 0)

    def encoded() -> Iterator[Sample]:
        for source in job.sources:
            try:
                yield _encode_source(source, job.resize, job.quality)
            except _Skipped as skip:
                result.skipped[skip.reason].append(source.relative)

    result.samples = write_tar(Path(job.temp_path), encoded())
    return result


# --- Running the jobs ------------------------------------------------------------


def _ignore_interrupts() -> None:
    """Pool workers leave Ctrl-C to the parent, which terminates them and cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_in_processes(jobs: list[ShardJob], workers: int) -> Iterator[ShardResult]:
    if workers == 1:
        yield from map(write_shard, jobs)
        return
    with multiprocessing.Pool(min(workers, len(jobs)), initializer=_ignore_interrupts) as pool:
        yield from pool.imap_unordered(write_shard, jobs)


def _run_on_ray(jobs: list[ShardJob]) -> Iterator[ShardResult]:
    import ray

    started_here = cli.connect_ray(log_to_driver=False)
    remote_write = ray.remote(write_shard)
    pending = [remote_write.remote(job) for job in jobs]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


# --- Checks -----------------------------------------------------------------------


def _existing_outputs(out: Path) -> list[Path]:
    places = [out, *(out / split for split in SPLITS)]
    found = [p for place in places if place.is_dir() for p in place.glob("*.tar")]
    return found + [place / "index.json" for place in places if (place / "index.json").is_file()]


def _check_output(out: Path, overwrite: bool) -> list[Path]:
    try:
        for folder in (out, *(out / split for split in SPLITS)):
            folder.mkdir(parents=True, exist_ok=True)
        probe = out / f"{_PARTIAL_PREFIX}{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ShardError(f"cannot write to output folder {out}: {error.strerror or error}") from None
    existing = _existing_outputs(out)
    if existing and not overwrite:
        raise ShardError(f"output folder {out} already holds shards ({existing[0].name}...); pass --overwrite to replace them")
    return existing


def _val_size(total: int, val_fraction: float, val_count: int) -> int:
    if val_fraction and val_count:
        raise ShardError("give either --val-fraction or --val-count, not both")
    if not 0.0 <= val_fraction < 1.0:
        raise ShardError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if val_count < 0:
        raise ShardError(f"--val-count must be >= 0, got {val_count}")
    size = val_count or round(total * val_fraction)
    if size >= total:
        raise ShardError(f"a validation split of {size} leaves no training images out of {total}")
    return size


def _check_numbers(shard_size: int, resize: int | None, quality: int, workers: int | None) -> None:
    if shard_size < 1:
        raise ShardError(f"--shard-size must be >= 1, got {shard_size}")
    if resize is not None and resize < 1:
        raise ShardError(f"--resize must be >= 1 pixel, got {resize}")
    if not 1 <= quality <= 100:
        raise ShardError(f"--quality must be in 1..100, got {quality}")
    if workers is not None and workers < 1:
        raise ShardError(f"--workers must be >= 1, got {workers}")


def _check_source(src: Path) -> None:
    if not src.exists():
        raise ShardError(f"source folder not found: {src}")
    if not src.is_dir():
        raise ShardError(f"source is not a folder: {src}")


# --- The writer --------------------------------------------------------------------


def _plan_jobs(splits: dict[str, list[Source]], out: Path, run_id: str, shard_size: int,
               resize: int | None, quality: int) -> list[ShardJob]:
    jobs = []
    for split, sources in splits.items():
        for number, start in enumerate(range(0, len(sources), shard_size)):
            temp = out / split / f"{_PARTIAL_PREFIX}{run_id}-{number:06d}.tar"
            jobs.append(ShardJob(split, number, sources[start:start + shard_size], str(temp), resize, quality))
    return jobs


def _remove_partials(out: Path, run_id: str) -> None:
    for split in SPLITS:
        for partial in (out / split).glob(f"{_PARTIAL_PREFIX}{run_id}-*"):
            partial.unlink(missing_ok=True)


def _publish(results: list[ShardResult], out: Path, name: str, old_outputs: list[Path]) -> dict[str, list[dict]]:
    """Delete the replaced shards, then rename the new ones to contiguous final names."""
    for old in old_outputs:
        old.unlink(missing_ok=True)
    shards: dict[str, list[dict]] = {}
    for result in sorted(results, key=lambda r: (r.split, r.number)):
        entries = shards.setdefault(result.split, [])
        if result.samples == 0:
            Path(result.temp_path).unlink()
            continue
        final = f"{name}-{len(entries):06d}.tar"
        os.replace(result.temp_path, out / result.split / final)
        entries.append({"file": final, "samples": result.samples})
    return shards


def _check_written(results: list[ShardResult], src: Path) -> None:
    """Refuse a set whose training split got no image (every source unreadable or grayscale): nothing is written."""
    if any(result.samples for result in results if result.split == "train"):
        return
    skipped = {reason: sum(len(result.skipped[reason]) for result in results) for reason in SKIP_REASONS}
    counts = ", ".join(f"{count} {reason}" for reason, count in skipped.items() if count)
    raise ShardError(f"no usable image under {src} for the training split ({counts}); nothing was written")


def _skipped_by_split(results: list[ShardResult]) -> dict[str, dict[str, list[str]]]:
    merged: dict[str, dict[str, list[str]]] = {}
    for result in results:
        per_split = merged.setdefault(result.split, {r: [] for r in SKIP_REASONS})
        for reason, files in result.skipped.items():
            per_split[reason].extend(files)
    return {split: {r: sorted(f) for r, f in skips.items()} for split, skips in merged.items()}


def _execute(jobs: list[ShardJob], workers: int, use_ray: bool, progress: bool) -> list[ShardResult]:
    total = sum(len(job.sources) for job in jobs)
    results = []
    runner = _run_on_ray(jobs) if use_ray else _run_in_processes(jobs, workers)
    with tqdm(total=total, unit="img", unit_scale=True, disable=not progress, desc="shards") as bar:
        for result in runner:
            results.append(result)
            bar.update(result.samples + sum(len(files) for files in result.skipped.values()))
    return results


def write_shards(
    src: str | Path, out: str | Path, *, shard_size: int = 1000, resize: int | None = None, quality: int = 90,
    val_fraction: float = 0.0, val_count: int = 0, workers: int | None = None, use_ray: bool = False,
    seed: int = 0, name: str = "shard", labels: bool = True, overwrite: bool = False, progress: bool = True,
) -> dict[str, Any]:
    """Write the images under ``src`` as WebDataset shards into ``out``; returns the summary index."""
    src, out = Path(src).expanduser(), Path(out).expanduser()
    _check_source(src)
    _check_numbers(shard_size, resize, quality, workers)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", name):
        raise ShardError(f"--name must be letters, digits, '_' or '-', got {name!r}")
    sources, classes = list_sources(src, labels)
    if not sources:
        raise ShardError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {src}")
    splits = split_sources(sources, _val_size(len(sources), val_fraction, val_count), seed)
    splits = {split: items for split, items in splits.items() if items}
    old_outputs = _check_output(out, overwrite)
    options = {"source": str(src), "shard_size": shard_size, "resize": resize, "quality": quality,
               "val_fraction": val_fraction, "val_count": val_count, "seed": seed, "name": name, "labels": bool(classes)}
    run_id = uuid.uuid4().hex[:12]
    jobs = _plan_jobs(splits, out, run_id, shard_size, resize, quality)
    try:
        results = _execute(jobs, workers or os.cpu_count() or 1, use_ray, progress)
        _check_written(results, src)
        shards = _publish(results, out, name, old_outputs)
    except BaseException:
        _remove_partials(out, run_id)
        raise
    skipped = _skipped_by_split(results)
    indexes = {split: split_index(split, shards.get(split, []), classes, skipped[split], options) for split in splits}
    for split, index in indexes.items():
        write_json_atomically(out / split / "index.json", index)
    summary = summary_index(indexes)
    write_json_atomically(out / "index.json", summary)
    if "val" not in splits and (out / "val").is_dir() and not any((out / "val").iterdir()):
        shutil.rmtree(out / "val")
    return summary


# --- CLI -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m colorray.shards",
        description="Write an image folder (ImageNet class folders or any folder) as WebDataset shards.",
    )
    parser.add_argument("src", help="image folder: SRC/<class>/<image> for labels, or any flat/nested folder")
    parser.add_argument("out", help="output folder or s3:// / gs:// URI (gets train/, val/ and index.json)")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--resize", type=int, default=None, help="resize the short side to this many pixels (JPEG re-encode)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality when re-encoding (default 90)")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="fraction of images for the val split")
    parser.add_argument("--val-count", type=int, default=0, help="number of images for the val split")
    parser.add_argument("--workers", type=int, default=None, help="parallel writer processes (default: all cores)")
    parser.add_argument("--ray", action="store_true", help="write shards as Ray tasks (RAY_ADDRESS or a local Ray)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle and the val split")
    parser.add_argument("--name", default="shard", help="shard file name prefix (default 'shard')")
    parser.add_argument("--no-labels", action="store_true", help="do not take class labels from folder names")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def write_shards_to(out: str, **options: Any) -> dict[str, Any]:
    """``write_shards`` into a local folder, or (a URI) into a staging folder uploaded when complete."""
    if not storage.is_uri(out):
        return write_shards(out=out, **options)
    try:
        if storage.is_file(storage.join(out, "index.json")) and not options.get("overwrite"):
            raise ShardError(f"{out} already holds shards (index.json); pass --overwrite to replace them")
        with tempfile.TemporaryDirectory(prefix="colorray-shards-") as staging:
            summary = write_shards(out=staging, **options)
            storage.upload(staging, out)
    except storage.StorageError as error:
        raise ShardError(str(error)) from None
    return summary


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        summary = write_shards_to(
            args.out, src=args.src, shard_size=args.shard_size, resize=args.resize, quality=args.quality,
            val_fraction=args.val_fraction, val_count=args.val_count, workers=args.workers, use_ray=args.ray,
            seed=args.seed, name=args.name, labels=not args.no_labels, overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except ShardError as error:
        return cli.fail(error)
    except KeyboardInterrupt:
        return cli.fail("interrupted; no shards were kept", code=130)
    splits = ", ".join(f"{name}: {s['samples']} samples in {s['shards']} shards" for name, s in summary["splits"].items())
    skipped = ", ".join(f"{n} {reason}" for reason, n in summary["skipped_counts"].items())
    print(f"wrote {args.out} ({splits}; skipped {skipped})")
    return 0
