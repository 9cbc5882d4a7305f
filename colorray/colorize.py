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
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from colorray import cli
from colorray.export import ExportError
from colorray.images import ImageError, encode_image, read_image_file
from colorray.inference import Colorizer
from colorray.shards import list_sources

FORMATS = ("png", "jpeg")
SUFFIXES = {"png": ".png", "jpeg": ".jpg"}


class ColorizeError(ValueError):
    """Bad input to ``colorize``: the message names the problem."""


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def jobs_for(inputs: list[str], out: Path, fmt: str) -> list[Job]:
    """One job per image: a file input to ``out/<name>``, a folder input to ``out/<folder>/<relative path>``."""
    jobs = []
    for given in inputs:
        path = Path(given).expanduser()
        if not path.exists():
            raise ColorizeError(f"input not found: {given}")
        if path.is_dir():
            sources, _ = list_sources(path, labels=False)
            if not sources:
                raise ColorizeError(f"no images (.jpg, .png, ...) under {given}")
            base = out / path.resolve().name
            jobs += [Job(Path(s.path), (base / s.relative).with_suffix(SUFFIXES[fmt])) for s in sources]
        else:
            jobs.append(Job(path, (out / path.name).with_suffix(SUFFIXES[fmt])))
    check_targets(jobs)
    return jobs


def check_targets(jobs: list[Job]) -> None:
    """No two inputs may write the same output, and no output may replace an input."""
    seen: dict[Path, Path] = {}
    sources = {job.source.resolve() for job in jobs}
    for job in jobs:
        target = job.target.resolve()
        if target in sources:
            raise ColorizeError(f"output {job.target} would overwrite the input image of that name: "
                                "choose another --out")
        if target in seen:
            raise ColorizeError(f"inputs {seen[target]} and {job.source} would both be written to {job.target}")
        seen[target] = job.source


def colorize_file(colorizer: Colorizer, job: Job, fmt: str, temperature: float | None) -> None:
    decoded = read_image_file(job.source)
    colored = colorizer.colorize([decoded.rgb], temperature)[0]
    job.target.parent.mkdir(parents=True, exist_ok=True)
    job.target.write_bytes(encode_image(colored, fmt, alpha=decoded.alpha))


def colorize_all(colorizer: Colorizer, jobs: list[Job], fmt: str, temperature: float | None) -> list[str]:
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
    p.add_argument("--format", choices=FORMATS, default="png", help="output format (png keeps alpha)")
    p.add_argument("--size", type=int, default=None, help="model input size (default: its training size)")
    return p


def run(args: argparse.Namespace) -> tuple[int, list[str]]:
    if args.size is not None and args.size < 8:
        raise ColorizeError(f"--size must be at least 8, got {args.size}")
    if args.temperature is not None and args.temperature < 0:
        raise ColorizeError(f"--temperature must be >= 0, got {args.temperature}")
    jobs = jobs_for(args.inputs, Path(args.out), args.format)
    colorizer = Colorizer.from_path(args.model, size=args.size)
    skipped = colorize_all(colorizer, jobs, args.format, args.temperature)
    if len(skipped) == len(jobs):
        raise ColorizeError(f"none of the {len(jobs)} input images could be read")
    return len(jobs) - len(skipped), skipped


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        done, skipped = run(args)
    except (ColorizeError, ExportError, OSError) as error:
        return cli.fail(error)
    print(f"colorized {done} images into {args.out}; skipped {len(skipped)} unreadable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
