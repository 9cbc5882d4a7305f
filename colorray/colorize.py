"""Offline colorization of files and folders: ``python -m colorray.colorize MODEL INPUT... --out DIR``.

Every image is colorized at its full resolution by ``colorray.inference.Colorizer``
(the path Serve uses): the model sees L at its training size, and the
predicted ab is upsampled and joined with the image's own L, so each output
keeps its input's size and lightness. Output names mirror the inputs: a file
``photo.jpg`` becomes ``DIR/photo.png``; a folder ``album/`` becomes
``DIR/album/...`` with its subfolders kept. PNG output keeps an input's alpha
channel. Unreadable images are skipped, named and counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
from colorray.inference import Colorizer


class ColorizeError(ValueError):
    """Bad input to ``colorize``: the message names the problem."""


def colorize_file(colorizer: Colorizer, job: ImageJob, fmt: str, temperature: float | None) -> None:
    decoded = read_image_file(job.source)
    colored = colorizer.colorize([decoded.rgb], temperature)[0]
    job.target.parent.mkdir(parents=True, exist_ok=True)
    job.target.write_bytes(encode_image(colored, fmt, alpha=decoded.alpha))


def colorize_all(colorizer: Colorizer, jobs: list[ImageJob], fmt: str, temperature: float | None) -> list[str]:
    """Colorize every job; returns the messages of the images skipped as unreadable."""
    skipped = []
    for job in tqdm(jobs, unit="img", desc="colorize", disable=None):
        try:
            colorize_file(colorizer, job, fmt, temperature)
        except (ImageError, OSError) as error:
            skipped.append(f"skipped {job.source}: {error}")
            tqdm.write(skipped[-1], file=sys.stderr)
    return skipped


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m colorray.colorize", description=__doc__.splitlines()[0])
    p.add_argument("model", help="export file, Tune best/ folder, checkpoint or run folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--temperature", type=float, default=None, help="annealed-mean temperature of bins models")
    p.add_argument("--format", choices=sorted(FORMAT_SUFFIXES), default="png", help="output format (png keeps alpha)")
    p.add_argument("--size", type=int, default=None, help="model input size (default: its training size)")
    return p


def run(args: argparse.Namespace) -> tuple[int, list[str]]:
    if args.size is not None and args.size < 8:
        raise ColorizeError(f"--size must be at least 8, got {args.size}")
    if args.temperature is not None and args.temperature < 0:
        raise ColorizeError(f"--temperature must be >= 0, got {args.temperature}")
    jobs = plan_outputs(args.inputs, Path(args.out), args.format)
    colorizer = Colorizer.from_path(args.model, size=args.size)
    skipped = colorize_all(colorizer, jobs, args.format, args.temperature)
    if len(skipped) == len(jobs):
        raise ColorizeError(f"none of the {len(jobs)} input images could be read")
    return len(jobs) - len(skipped), skipped


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        done, skipped = run(args)
    except (ColorizeError, InputError, ExportError, OSError) as error:
        return cli.fail(error)
    print(f"colorized {done} images into {args.out}; skipped {len(skipped)} unreadable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
