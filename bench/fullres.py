"""Benchmark (not a test): the cost of full-resolution colorization against its floor.

The floor of a 1920x1080 JPEG is JPEG decode + a whole 256x256 colorization +
JPEG encode, each timed in this process (median). The full-resolution cost is
measured twice:

- in-process: decode + ``Colorizer.colorize`` + encode of one 1080p JPEG (median);
- ``colorize`` over a folder: the marginal wall time per image of
  ``python -m colorray.colorize MODEL FOLDER --format jpeg`` between a folder of
  ``--few`` and one of ``--many`` images (start-up cancels out), the way a user
  runs it.

Also a 24-megapixel (6000x4000) JPEG in-process. The images are scikit-image
photos resized up (JPEG q90); the model is ``--model`` or a fresh random-weight
``cnn`` export at ``--image-size`` (cost does not depend on the weights).
Targets (issue 13): 1080p cost <= 2x the floor; 24 MP under 1 s. Prints a
table and, as the last line, one JSON object.

    python bench/fullres.py [--model PATH] [--image-size 64] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from skimage import data

from colorray import cli
from colorray.data.images import decode_image, encode_image
from colorray.export import save_generator
from colorray.inference import Colorizer
from colorray.models import create_model

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
FLOOR_FACTOR = 2.0
TARGET_24MP_S = 1.0


def photo_jpeg(name: str, size: tuple[int, int]) -> bytes:
    image = Image.fromarray(getattr(data, name)()).convert("RGB").resize(size, Image.BICUBIC)
    return encode_image(np.asarray(image), "jpeg", quality=90)


def median_ms(work: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median wall time and median CPU time (all threads of this process) of ``work``, in ms."""
    work()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        work()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall": statistics.median(wall) * 1000.0, "cpu": statistics.median(cpu) * 1000.0}


def pipeline(colorizer: Colorizer, body: bytes) -> bytes:
    return encode_image(colorizer.colorize([decode_image(body).rgb])[0], "jpeg")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command_seconds(model: Path, folder: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (the command and its loader workers) of one colorize run."""
    start, start_cpu = time.perf_counter(), _children_cpu_s()
    subprocess.run([sys.executable, "-m", "colorray.colorize", str(model), str(folder), "--out", str(out),
                    "--format", "jpeg", *extra], check=True, capture_output=True)
    return time.perf_counter() - start, _children_cpu_s() - start_cpu


def folder_of(root: Path, name: str, count: int) -> Path:
    folder = root / name
    folder.mkdir()
    for index in range(count):
        (folder / f"{index:03d}.jpg").write_bytes(photo_jpeg(PHOTOS[index % len(PHOTOS)], (1920, 1080)))
    return folder


def marginal_ms(model: Path, root: Path, few: int, many: int, repeats: int, extra: list[str]) -> dict[str, float]:
    """Per-image wall and CPU time of the colorize command between ``few`` and ``many`` 1080p images (medians)."""
    small, large = folder_of(root, "few", few), folder_of(root, "many", many)
    wall, cpu = [], []
    for run in range(repeats):
        few_wall, few_cpu = command_seconds(model, small, root / f"out-few-{run}", extra)
        many_wall, many_cpu = command_seconds(model, large, root / f"out-many-{run}", extra)
        wall.append((many_wall - few_wall) / (many - few) * 1000.0)
        cpu.append((many_cpu - few_cpu) / (many - few) * 1000.0)
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu)}


def main() -> None:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="export to use (default: a fresh random-weight cnn)")
    parser.add_argument("--image-size", type=int, default=64, help="training resolution of the fresh cnn export")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in this process")
    parser.add_argument("--few", type=int, default=4, help="images in the small folder of the command timing")
    parser.add_argument("--many", type=int, default=24, help="images in the large folder of the command timing")
    parser.add_argument("--command-repeats", type=int, default=3)
    parser.add_argument("--command-args", default="", help="extra colorize arguments, e.g. '--batch-size 8'")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="colorray-fullres-") as temp:
        root = Path(temp)
        model = args.model
        if model is None:
            torch.manual_seed(0)
            model = save_generator(root / "generator.pt", create_model("cnn"), args.image_size)
        colorizer = Colorizer.from_path(model, device="cpu")
        hd = photo_jpeg("astronaut", (1920, 1080))
        hd_rgb = decode_image(hd).rgb
        small = decode_image(photo_jpeg("astronaut", (256, 256))).rgb
        big = photo_jpeg("coffee", (6000, 4000))
        big_rgb = decode_image(big).rgb
        load = os.getloadavg()[0]
        timed = {
            "decode_1080p": median_ms(lambda: decode_image(hd), args.repeats),
            "colorize_256": median_ms(lambda: colorizer.colorize([small]), args.repeats),
            "encode_1080p": median_ms(lambda: encode_image(hd_rgb, "jpeg"), args.repeats),
            "colorize_1080p": median_ms(lambda: colorizer.colorize([hd_rgb]), args.repeats),
            "in_process_1080p": median_ms(lambda: pipeline(colorizer, hd), args.repeats),
            "in_process_24mp": median_ms(lambda: pipeline(colorizer, big), max(3, args.repeats // 2)),
            "decode_24mp": median_ms(lambda: decode_image(big), 3),
            "encode_24mp": median_ms(lambda: encode_image(big_rgb, "jpeg"), 3),
        }
        timed["command_marginal_1080p"] = marginal_ms(model, root, args.few, args.many, args.command_repeats,
                                                      args.command_args.split())
    result: dict[str, float] = {}
    for clock in ("wall", "cpu"):
        floor = sum(timed[name][clock] for name in ("decode_1080p", "colorize_256", "encode_1080p"))
        result.update({f"{name}_{clock}_ms": round(value[clock], 1) for name, value in timed.items()})
        result[f"floor_{clock}_ms"] = round(floor, 1)
        result[f"in_process_1080p_vs_floor_{clock}"] = round(timed["in_process_1080p"][clock] / floor, 2)
        result[f"command_1080p_vs_floor_{clock}"] = round(timed["command_marginal_1080p"][clock] / floor, 2)
    result.update({"threads": args.threads, "cores": os.cpu_count(), "load_average": round(load, 1)})
    for key, value in result.items():
        print(f"{key:<36} {value}")
    print(f"1080p through colorize: {result['command_1080p_vs_floor_wall']}x the floor (wall), "
          f"{result['command_1080p_vs_floor_cpu']}x (CPU); in-process {result['in_process_1080p_vs_floor_wall']}x "
          f"(target <= {FLOOR_FACTOR}x); 24 MP in-process: {result['in_process_24mp_wall_ms'] / 1000:.2f} s "
          f"(target < {TARGET_24MP_S} s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
