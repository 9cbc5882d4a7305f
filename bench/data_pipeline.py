"""Benchmark (not a test): images/s of three input pipelines over the same pre-resized shards.

(a) naive: full PIL decode + resize + center crop + ``skimage.color.rgb2lab`` per image in the DataLoader;
(b) colorray: ``colorray.data.loader.train_loader`` (decode + random crop in the workers, uint8 RGB) and
    ``colorray.color.rgb_to_model_inputs`` batched in torch in the main process;
(c) plain full JPEG decode of the same shards with Pillow (the issue's baseline), and (d) with simplejpeg
    (libjpeg-turbo without Pillow's overhead, the decoder the loader uses): the physical limit of a pipeline
    that decodes every pixel.
"colorray_loader_only" is (b) without the Lab step, to show where (b)'s time goes.

Each pipeline runs one DataLoader worker per core. Two figures per pipeline, medians over the runs:
- ``img_s``: wall-clock images/s in steady state (first batch to last), all cores together;
- ``img_per_cpu_s``: images per CPU-second of the main process and its workers together (whole run),
  i.e. images/s per fully used core; unlike wall time it is not skewed by other work on the machine.
The last line printed is one JSON object.

    python bench/data_pipeline.py [--src FOLDER] [--image-size 64] [--runs 5]
"""

from __future__ import annotations

import functools
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import simplejpeg
import torch
import webdataset as wds
from PIL import Image
from skimage.color import rgb2lab
from torch.utils.data import DataLoader

from colorray import cli, color
from colorray.data.loader import ShardSet, open_shard_set, train_loader
from colorray.data.shards import write_shards

DEFAULT_SRC = Path("/work/shared/data/photos-train")


def _naive_sample(sample: dict, size: int) -> torch.Tensor:
    image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    lab = rgb2lab(np.asarray(image.crop((left, top, left + size, top + size))))
    return torch.from_numpy(lab.astype(np.float32)).permute(2, 0, 1)


def _decode_only(sample: dict) -> int:
    return np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")).shape[0]


def _simplejpeg_decode_only(sample: dict) -> int:
    return simplejpeg.decode_jpeg(sample["jpg"], "RGB").shape[0]


def _wds_loader(urls: list[str], map_sample: Callable, batch_size: int, workers: int) -> DataLoader:
    """The same shards read by webdataset, one worker per core, samples mapped then collected in lists."""
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(map_sample).batched(
        batch_size, collation_fn=list)
    return DataLoader(dataset, batch_size=None, num_workers=workers)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measure(batches: Iterable, count: Callable[[object], int]) -> dict[str, float]:
    cpu_start = _cpu_seconds()
    iterator = iter(batches)
    images = count(next(iterator))
    start, steady = time.perf_counter(), 0
    for batch in iterator:
        steady += count(batch)
    wall = time.perf_counter() - start
    del iterator
    return {"img_s": steady / wall, "img_per_cpu_s": (images + steady) / (_cpu_seconds() - cpu_start)}


def _naive(shards: ShardSet, size: int, batch_size: int, workers: int) -> dict[str, float]:
    return _measure(_wds_loader(shards.urls, functools.partial(_naive_sample, size=size), batch_size, workers), len)


def _decode(shards: ShardSet, size: int, batch_size: int, workers: int) -> dict[str, float]:
    return _measure(_wds_loader(shards.urls, _decode_only, batch_size, workers), len)


def _decode_simplejpeg(shards: ShardSet, size: int, batch_size: int, workers: int) -> dict[str, float]:
    return _measure(_wds_loader(shards.urls, _simplejpeg_decode_only, batch_size, workers), len)


def _colorray(shards: ShardSet, size: int, batch_size: int, workers: int, lab: bool = True) -> dict[str, float]:
    def count(batch: dict) -> int:
        if lab:
            color.rgb_to_model_inputs(batch["rgb"])
        return len(batch["key"])

    loader = train_loader(shards, image_size=size, batch_size=batch_size, rank=0, world_size=1, epoch=0, seed=0,
                          loader_workers=workers, shuffle_buffer=256)
    return _measure(loader, count)


def _colorray_loader_only(shards: ShardSet, size: int, batch_size: int, workers: int) -> dict[str, float]:
    return _colorray(shards, size, batch_size, workers, lab=False)


PIPELINES = {"naive": _naive, "colorray": _colorray, "colorray_loader_only": _colorray_loader_only, "decode": _decode,
             "decode_simplejpeg": _decode_simplejpeg}


def _build_shards(src: Path, root: Path, repeat: int, resize: int, workers: int) -> ShardSet:
    """Link the source images ``repeat`` times under new names and write them as resized shards."""
    images = root / "images"
    for copy in range(repeat):
        folder = images / f"copy{copy}"
        folder.mkdir(parents=True)
        for path in sorted(src.iterdir()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                (folder / path.name).symlink_to(path.resolve())
    write_shards(images, root / "shards", shard_size=64, resize=resize, workers=workers, labels=False, progress=False)
    return open_shard_set(str(root / "shards" / "train"))


def main() -> None:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC if DEFAULT_SRC.is_dir() else None)
    parser.add_argument("--repeat", type=int, default=8, help="copies of the source images (more samples)")
    parser.add_argument("--resize", type=int, default=256, help="short side of the stored shards")
    parser.add_argument("--image-size", type=int, default=64, help="training crop size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.src is None or not args.src.is_dir():
        sys.exit("error: no --src image folder (the default /work/shared/data/photos-train is absent)")
    cores = os.cpu_count() or 1
    torch.set_num_threads(1)  # the main process shares the cores with one loader worker per core
    results: dict[str, list[dict[str, float]]] = {name: [] for name in PIPELINES}
    with tempfile.TemporaryDirectory(prefix="colorray-bench-") as temp:
        shards = _build_shards(args.src, Path(temp), args.repeat, args.resize, cores)
        for run in range(args.runs):
            for name, measure in PIPELINES.items():
                results[name].append(measure(shards, args.image_size, args.batch_size, cores))
            print(f"run {run + 1}: " + ", ".join(f"{n} {r[-1]['img_s']:.0f} img/s ({r[-1]['img_per_cpu_s']:.0f}/cpu-s)"
                                                 for n, r in results.items()), flush=True)
    median = {name: {metric: statistics.median(r[metric] for r in runs) for metric in runs[0]}
              for name, runs in results.items()}
    print(f"{shards.total_samples} samples ({args.resize}px JPEG) -> {args.image_size}px, batch {args.batch_size}, "
          f"{cores} loader workers, median of {args.runs} runs, load average {os.getloadavg()[0]:.1f}")
    for metric in ("img_s", "img_per_cpu_s"):
        b, a, c, b0, d = (median[name][metric]
                          for name in ("colorray", "naive", "decode", "colorray_loader_only", "decode_simplejpeg"))
        print(f"{metric}: colorray/naive = {b / a:.1f}x (issue 13 target at 224 px: >= 3x), "
              f"loader only/decode = {b0 / c:.0%} (target >= 80%; {b0 / d:.0%} of simplejpeg's plain decode), "
              f"colorray/decode = {b / c:.0%}")
    summary = {f"{name}_img_s": round(m["img_s"], 1) for name, m in median.items()}
    summary.update({f"{name}_img_per_cpu_s": round(m["img_per_cpu_s"], 1) for name, m in median.items()})
    print(json.dumps({**summary, "cores": cores, "image_size": args.image_size, "runs": args.runs}))


if __name__ == "__main__":
    main()
