"""Offline colorization of files and folders: ``python -m colorray.colorize MODEL INPUT... --out DIR``.

Every image is colorized at its full resolution by ``colorray.inference.Colorizer``
(the path Serve uses): the model sees L at its training size, and the
predicted ab is upsampled and joined with the image's own L, so each output
keeps its input's size and lightness. Output names mirror the inputs: a file
``photo.jpg`` becomes ``DIR/photo.png``; a folder ``album/`` becomes
``DIR/album/...`` with its subfolders kept. PNG output keeps an input's alpha
channel. Unreadable images are skipped, named and counted.

Images stream through three stages that overlap: DataLoader workers
(``--workers``) decode each file and compute its full-resolution L and the
model's small L ahead of time; the main process runs the model on batches of
``--batch-size`` images; a writer thread joins each image's L with its
upsampled ab and encodes and writes it while the next batch runs. A progress
bar shows images/s.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from colorray import cli
from colorray.data.images import (
    FORMAT_SUFFIXES,
    ImageError,
    ImageJob,
    InputError,
    encode_image,
    plan_outputs,
    read_image_file,
)
from colorray.export import ExportError
from colorray.inference import (
    PRECISIONS,
    Colorizer,
    DeviceError,
    Prepared,
    prepare_on_cpu,
)


class ColorizeError(ValueError):
    """Bad input to ``colorize``: the message names the problem."""


@dataclass
class Loaded:
    """One input after the loader: prepared for the model (CPU path) or decoded RGB (device path), or an error."""

    job: ImageJob
    prepared: Prepared | None = None
    rgb: np.ndarray | None = None
    alpha: np.ndarray | None = None
    error: str | None = None


class ImageFiles(Dataset):
    """The jobs' images, decoded and (with ``size``) prepared for the model on the CPU in loader workers."""

    def __init__(self, jobs: list[ImageJob], size: int | None):
        self.jobs, self.size = jobs, size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> Loaded:
        job = self.jobs[index]
        try:
            decoded = read_image_file(job.source)
        except (ImageError, OSError) as error:
            return Loaded(job, error=str(error))
        if self.size is None:
            return Loaded(job, rgb=decoded.rgb, alpha=decoded.alpha)
        return Loaded(job, prepared=prepare_on_cpu(decoded.rgb, self.size), alpha=decoded.alpha)


def image_loader(jobs: list[ImageJob], colorizer: Colorizer, batch_size: int, workers: int) -> DataLoader:
    """Batches (lists) of ``Loaded`` in job order, read ahead by ``workers`` processes."""
    dataset = ImageFiles(jobs, colorizer.size if colorizer.numpy_path else None)
    options = {"prefetch_factor": 1} if workers else {}  # (cv2.setNumThreads in a forked worker hangs)
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list, **options)


def write_result(colorizer: Colorizer, item: Loaded, ab: torch.Tensor, fmt: str) -> None:
    colored = colorizer.finish(item.prepared, ab)
    item.job.target.parent.mkdir(parents=True, exist_ok=True)
    item.job.target.write_bytes(encode_image(colored, fmt, alpha=item.alpha))


def colorize_all(colorizer: Colorizer, jobs: list[ImageJob], fmt: str, temperature: float | None,
                 batch_size: int = 8, workers: int = 0) -> list[str]:
    """Colorize every job; returns the messages of the images skipped as unreadable."""
    skipped: list[str] = []
    pending: deque[tuple[ImageJob, Future]] = deque()

    def skip(job: ImageJob, error: object) -> None:
        skipped.append(f"skipped {job.source}: {error}")
        tqdm.write(skipped[-1], file=sys.stderr)

    def settle(keep: int) -> None:
        """Wait for written images until at most ``keep`` are in flight."""
        while len(pending) > keep:
            job, future = pending.popleft()
            try:
                future.result()
            except (ImageError, OSError) as error:
                skip(job, error)
            progress.update()

    with tqdm(total=len(jobs), unit="img", desc="colorize", disable=None) as progress, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="colorize-writer") as writer:
        for batch in image_loader(jobs, colorizer, batch_size, workers):
            for item in batch:
                if item.error is not None:
                    skip(item.job, item.error)
                    progress.update()
            ready = [item for item in batch if item.error is None]
            if ready:
                for item in ready:
                    item.prepared = item.prepared or colorizer.prepare(item.rgb)
                ab = colorizer.predict_small_ab(torch.cat([item.prepared.small_L for item in ready]), temperature)
                for item, item_ab in zip(ready, ab):
                    pending.append((item.job, writer.submit(write_result, colorizer, item, item_ab, fmt)))
            settle(keep=batch_size)  # the writer works on this batch while the model runs the next
        settle(keep=0)
    return skipped


def default_workers() -> int:
    """Loader workers by default: none on a machine of one or two cores, where a worker process competing with
    the model and the writer made a folder of 1080p photos 2x slower (docs/benchmarks.md); else half the cores."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores // 2)


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m colorray.colorize", description=__doc__.splitlines()[0])
    p.add_argument("model", help="export file, Tune best/ folder, checkpoint or run folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--temperature", type=float, default=None, help="annealed-mean temperature of bins models")
    p.add_argument("--format", choices=sorted(FORMAT_SUFFIXES), default="png", help="output format (png keeps alpha)")
    p.add_argument("--size", type=int, default=None, help="model input size (default: its training size)")
    p.add_argument("--batch-size", type=int, default=8, help="images per model call")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="loader processes decoding ahead (0: in the main process)")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda when present), cpu, cuda, cuda:1...")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                   help="model precision (bf16/fp16: autocast)")
    return p


def run(args: argparse.Namespace) -> tuple[int, list[str]]:
    if args.size is not None and args.size < 8:
        raise ColorizeError(f"--size must be at least 8, got {args.size}")
    if args.temperature is not None and args.temperature < 0:
        raise ColorizeError(f"--temperature must be >= 0, got {args.temperature}")
    if args.batch_size < 1 or args.workers < 0:
        raise ColorizeError(f"--batch-size must be >= 1 and --workers >= 0, got {args.batch_size} and {args.workers}")
    jobs = plan_outputs(args.inputs, Path(args.out), args.format)
    colorizer = Colorizer.from_path(args.model, device=args.device, size=args.size, precision=args.precision)
    skipped = colorize_all(colorizer, jobs, args.format, args.temperature, args.batch_size, args.workers)
    if len(skipped) == len(jobs):
        raise ColorizeError(f"none of the {len(jobs)} input images could be read")
    return len(jobs) - len(skipped), skipped


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        done, skipped = run(args)
    except (ColorizeError, InputError, ExportError, DeviceError, OSError) as error:
        return cli.fail(error)
    print(f"colorized {done} images into {args.out}; skipped {len(skipped)} unreadable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
