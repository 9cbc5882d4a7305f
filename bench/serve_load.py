"""Load benchmark of the Serve app on 127.0.0.1: throughput and latency, batching on and off.

Starts its own local Ray cluster and Serve (HTTP on 127.0.0.1, a free port),
deploys ``colorray.serve.app`` with a given model (``--model``) or a freshly
exported random-weight ``cnn`` (serving cost does not depend on the weights),
and for each batching setting (``--batch-sizes``, default 8 = on, 1 = off)
sends JPEG uploads of each size at each concurrency (bounded request counts),
``--repeats`` times. The floor is the pure in-process ``Colorizer.colorize``
on the same images with the replica's thread count; the in-process pipeline
adds JPEG decode and encode; ``GET /healthz`` gives Serve's own cost per
request. The issue-13 figure (Serve p50 over the same work in-process, at
concurrency 1) is also measured paired: rounds that alternate a few requests
with a few in-process runs, so that both see the same background (on a small
machine Ray's own daemons come and go), and the median of the rounds' gaps. Prints a table, and as the last line one JSON object with the
medians over repeats and the ratios against the targets (concurrency 8:
batching >= 1.5x no batching; concurrency 1: p50 within 25 ms of the pure
forward).

    python bench/serve_load.py [--model PATH] [--repeats 3] [--replica-cpus 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch
from fullres import pipeline  # bench/fullres.py, a sibling script
from PIL import Image
from skimage import data

from colorray import cli
from colorray.data.images import decode_image, encode_image
from colorray.export import save_generator
from colorray.inference import Colorizer
from colorray.models import create_model
from colorray.serve.app import ServeSettings, build_app
from colorray.serve.launch import http_port

SIZES = {"256x256": (256, 256), "1920x1080": (1920, 1080)}
CONCURRENCIES = (1, 8, 32)
REQUESTS = {"256x256": {1: 40, 8: 96, 32: 128}, "1920x1080": {1: 8, 8: 32, 32: 48}}
PAIRED_ROUNDS, PAIRED_PER_ROUND = 12, 6
TARGET_BATCHING_SPEEDUP = 1.5
TARGET_P50_OVERHEAD_MS = 25.0


def parse_args() -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="export to serve (default: a fresh random-weight cnn)")
    parser.add_argument("--image-size", type=int, default=64, help="training resolution of the fresh cnn export")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 1], help="max_batch_size values; 1 = off")
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.005)
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs (torch threads) of the one replica")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="the replica's torch device (cuda: it gets one GPU)")
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def jpeg_upload(size: tuple[int, int]) -> bytes:
    return encode_image(np.asarray(Image.fromarray(data.astronaut()).resize(size, Image.BICUBIC)), "jpeg", quality=90)


def fresh_model(folder: Path, image_size: int) -> Path:
    torch.manual_seed(0)
    return save_generator(folder / "generator.pt", create_model("cnn"), image_size)


def summarize(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = np.sort(latencies) * 1000.0
    return {
        "throughput": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(ordered, 50)), 1),
        "p99_ms": round(float(np.percentile(ordered, 99)), 1),
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}


def load_cell(url: str, body: bytes | None, concurrency: int, total: int) -> dict[str, float]:
    """``total`` uploads (``None``: GET /healthz) with ``concurrency`` in flight, one keep-alive session per thread."""
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [total]

    def worker() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                if body is None:
                    response = session.get(f"{url}/healthz", timeout=300)
                else:
                    response = session.post(f"{url}/colorize?format=jpeg", data=body, timeout=300)
                response.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return summarize(latencies, time.perf_counter() - start)


def in_process_floor(model: Path, uploads: dict[str, bytes], threads: int, repeats: int,
                     device: str = "cpu") -> dict[str, dict]:
    """Per-image latency of the pure forward and of decode + forward + encode, in this process."""
    torch.set_num_threads(threads)
    colorizer = Colorizer.from_path(model, device=device)
    floor = {}
    for name, body in uploads.items():
        rgb = decode_image(body).rgb
        colorizer.colorize([rgb])
        forward, pipeline = [], []
        for _ in range(max(5, repeats * 3)):
            start = time.perf_counter()
            colorizer.colorize([rgb])
            forward.append(time.perf_counter() - start)
            start = time.perf_counter()
            pipeline(colorizer, body)
            pipeline.append(time.perf_counter() - start)
        start = time.perf_counter()
        colorizer.colorize([rgb] * 8)
        batch8 = (time.perf_counter() - start) / 8
        floor[name] = {
            "forward_p50_ms": round(statistics.median(forward) * 1000, 1),
            "forward_batch8_ms_per_image": round(batch8 * 1000, 1),
            "pipeline_p50_ms": round(statistics.median(pipeline) * 1000, 1),
        }
    return floor


def paired_gap(url: str, model: Path, body: bytes, threads: int, device: str) -> dict[str, float]:
    """Serve's p50 minus in-process decode + colorize + encode p50, round by round, both at concurrency 1."""
    torch.set_num_threads(threads)
    colorizer = Colorizer.from_path(model, device=device)
    gaps = []
    with requests.Session() as session:
        for _ in range(PAIRED_ROUNDS):
            served, local = [], []
            for _ in range(PAIRED_PER_ROUND):
                start = time.perf_counter()
                session.post(f"{url}/colorize?format=jpeg", data=body, timeout=300).raise_for_status()
                served.append(time.perf_counter() - start)
            for _ in range(PAIRED_PER_ROUND):
                start = time.perf_counter()
                pipeline(colorizer, body)
                local.append(time.perf_counter() - start)
            gaps.append((statistics.median(served) - statistics.median(local)) * 1000)
    quartiles = statistics.quantiles(gaps, n=4)
    return {"median_gap_ms": round(statistics.median(gaps), 1), "q1_ms": round(quartiles[0], 1),
            "q3_ms": round(quartiles[2], 1), "rounds": PAIRED_ROUNDS}


def measure(url: str, body: bytes | None, concurrency: int, total: int, repeats: int, label: str) -> dict[str, float]:
    cell = median_of([load_cell(url, body, concurrency, total) for _ in range(repeats)])
    print(f"{label:<34} concurrency={concurrency:<3} {cell['throughput']:7.2f}/s  "
          f"p50 {cell['p50_ms']:7.1f} ms  p99 {cell['p99_ms']:7.1f} ms", flush=True)
    return cell


def serve_cells(args: argparse.Namespace, model: Path, uploads: dict[str, bytes]) -> dict[str, dict]:
    """Every (batching, size, concurrency) cell, plus GET /healthz and the replica's counters per batching."""
    import ray
    from ray import serve

    started = cli.connect_ray(log_to_driver=False, num_cpus=max(4, int(args.replica_cpus) + 1))
    port = http_port("127.0.0.1", free_port() if started else None)
    url = f"http://127.0.0.1:{port}"
    results: dict[str, dict] = {}
    try:
        for batch_size in args.batch_sizes:
            settings = ServeSettings(
                model=str(model), max_batch_size=batch_size, batch_wait_timeout_s=args.batch_wait_timeout_s,
                device=args.device,
            )
            application = build_app(
                settings,
                num_replicas=1,
                max_ongoing_requests=max(2 * batch_size, 32),
                ray_actor_options={"num_cpus": args.replica_cpus, "num_gpus": 1 if args.device != "cpu" else 0},
            )
            serve.run(application, name="colorray", route_prefix="/")
            for concurrency in (1, 8):
                label = f"max_batch_size={batch_size} GET /healthz"
                cell = measure(url, None, concurrency, 200, args.repeats, label)
                results[f"batch{batch_size}/healthz/c{concurrency}"] = cell
            for name, body in uploads.items():
                load_cell(url, body, 4, 8)
                for concurrency in CONCURRENCIES:
                    label = f"max_batch_size={batch_size} POST {name}"
                    cell = measure(url, body, concurrency, REQUESTS[name][concurrency], args.repeats, label)
                    results[f"batch{batch_size}/{name}/c{concurrency}"] = cell
            for name, body in uploads.items():
                gap = paired_gap(url, model, body, int(args.replica_cpus), args.device)
                print(f"max_batch_size={batch_size} {name}: Serve p50 over in-process, paired rounds: {gap}", flush=True)
                results[f"batch{batch_size}/{name}/paired_gap_c1"] = gap
            results[f"batch{batch_size}/counters"] = requests.get(f"{url}/info", timeout=10).json()["counters"]
    finally:
        if started:
            serve.shutdown()
            ray.shutdown()
        else:
            serve.delete("colorray")
    return results


def targets(cells: dict[str, dict], floor: dict[str, dict], batch_sizes: list[int]) -> dict[str, dict]:
    on, off = max(batch_sizes), min(batch_sizes)
    verdicts = {}
    for name in SIZES:
        speedup = cells[f"batch{on}/{name}/c8"]["throughput"] / cells[f"batch{off}/{name}/c8"]["throughput"]
        overhead = cells[f"batch{on}/{name}/c1"]["p50_ms"] - floor[name]["forward_p50_ms"]
        verdicts[name] = {
            "batching_speedup_c8": round(speedup, 2),
            "batching_speedup_met": speedup >= TARGET_BATCHING_SPEEDUP,
            "p50_overhead_c1_ms": round(overhead, 1),
            "p50_overhead_met": overhead <= TARGET_P50_OVERHEAD_MS,
            # issue 13: the same work (decode + colorize + encode) in-process, not the bare forward
            "p50_over_pipeline_c1_ms": round(cells[f"batch{on}/{name}/c1"]["p50_ms"] - floor[name]["pipeline_p50_ms"], 1),
            "paired_gap_c1_ms": cells[f"batch{on}/{name}/paired_gap_c1"]["median_gap_ms"],
            "paired_gap_met": cells[f"batch{on}/{name}/paired_gap_c1"]["median_gap_ms"] <= TARGET_P50_OVERHEAD_MS,
        }
    return verdicts


def main() -> None:
    args = parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    uploads = {name: jpeg_upload(size) for name, size in SIZES.items()}
    with tempfile.TemporaryDirectory(prefix="colorray-bench-") as folder:
        model = Path(args.model) if args.model else fresh_model(Path(folder), args.image_size)
        floor = in_process_floor(model, uploads, int(args.replica_cpus), args.repeats, args.device)
        for name, figures in floor.items():
            print(f"in-process {name:>10}: {figures}", flush=True)
        cells = serve_cells(args, model, uploads)
    report = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": int(args.replica_cpus), "gpu": torch.cuda.is_available()},
        "model": args.model or f"fresh random-weight cnn export, image_size {args.image_size}",
        "repeats": args.repeats,
        "batch_wait_timeout_s": args.batch_wait_timeout_s,
        "upload_bytes": {name: len(body) for name, body in uploads.items()},
        "floor": floor,
        "serve": cells,
        "targets": targets(cells, floor, args.batch_sizes),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
