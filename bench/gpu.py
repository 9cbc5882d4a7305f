"""Benchmark (not a test): the GPU path measured in one run of at most ~5 minutes; the last line is JSON.

CPU part (any machine): the data loader (decode + crop, no Lab) against plain JPEG decode
on ImageNet-like 500x375 JPEGs (scikit-image photos, resized; shards at 256 px, crops at
224 px, one worker per core), and ``Colorizer`` on 1080p images on the CPU.

GPU part (only where ``torch.cuda.is_available()``; else the script says so and exits 0):

- training images/s of the U-Net 256 GAN (pix2pix: U-Net + PatchGAN, L1 + adversarial)
  and ECCV16 at 224 (rebalanced cross-entropy): fp32, bf16 autocast, bf16 + torch.compile;
  uint8 RGB -> Lab on the device, as in training;
- JPEG decode: torchvision ``decode_jpeg`` batched on the GPU vs on one CPU core;
- colorize of 1080p images/s (``Colorizer`` on cuda, bf16, channels-last), CPU-decoded;
- Serve p50/p99 at concurrency 1/8/32, batching on and off (``bench/serve_load.py`` with
  ``--device cuda``; needs Ray, skipped without it).

Every part runs under a deadline (``--budget-s``); a part that does not fit is recorded as
skipped. Results go into docs/benchmarks.md by hand.

    python bench/gpu.py [--budget-s 290] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from colorray import cli, color
from colorray.config import config_from_dict
from colorray.export import save_generator
from colorray.inference import Colorizer
from colorray.losses.objective import Objective
from colorray.models import create_model, split_class_logits

sys.path.insert(0, str(Path(__file__).parent))
import data_pipeline  # noqa: E402  (the sibling benchmark's pipelines)

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
TRAINING = {  # name: (config, image size)
    "unet256_gan": ({"model": {"name": "unet"}, "loss": {"terms": {"l1": 1.0}}, "gan": {"enabled": True}}, 256),
    "eccv16_224": ({"model": {"name": "eccv16"}, "loss": {"terms": {"rebalanced_ce": 1.0},
                                                          "options": {"rebalanced_ce": {"rebalance": False}}}}, 224),
}
VARIANTS = {"fp32": (False, False), "bf16": (True, False), "bf16_compile": (True, True)}


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def photo(name: str, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB").resize(size, Image.BICUBIC))


def jpeg_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for index in range(count):
        image = photo(PHOTOS[index % len(PHOTOS)], (500 + index % 7, 375))[:, index % 7:][:, :500]
        Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{index:04d}.jpg", quality=90)
    return folder


def loader_vs_decode(root: Path) -> dict[str, float]:
    """img/s of the colorray loader (no Lab) and of plain decode over the same 256 px shards, at 224 px."""
    cores = os.cpu_count() or 1
    shards = data_pipeline._build_shards(jpeg_folder(root / "photos", 64), root / "built", 8, 256, cores)
    rates = {}
    for name in ("colorray_loader_only", "decode"):
        rates[f"{name}_img_s"] = round(data_pipeline.PIPELINES[name](shards, 224, 32, cores)["img_s"], 1)
    rates["loader_vs_decode"] = round(rates["colorray_loader_only_img_s"] / rates["decode_img_s"], 2)
    return rates


def colorize_rate(device: str, model: Path, count: int, precision: str = "fp32") -> float:
    """1080p images/s of Colorizer.colorize in batches of 4 on ``device`` (decoded beforehand, encode excluded)."""
    colorizer = Colorizer.from_path(model, device=device, precision=precision)
    images = [photo(PHOTOS[index % len(PHOTOS)], (1920, 1080)) for index in range(4)]
    colorizer.colorize(images)
    start = time.perf_counter()
    for _ in range(max(1, count // 4)):
        colorizer.colorize(images)
    if device == "cuda":
        torch.cuda.synchronize()
    return round(max(1, count // 4) * 4 / (time.perf_counter() - start), 1)


def training_rate(name: str, bf16: bool, compiled: bool, batch_size: int, steps: int) -> float:
    """Training images/s of one model setting on the GPU, after warm-up (and compilation) steps."""
    values, size = TRAINING[name]
    config = config_from_dict(values)
    device = torch.device("cuda")
    torch.manual_seed(0)
    generator = create_model(config.model.name).to(device, memory_format=torch.channels_last)
    models = {"generator": generator}
    if config.gan.enabled:
        models["critic"] = create_model(config.gan.discriminator, in_channels=3).to(
            device, memory_format=torch.channels_last)
    if compiled:
        models = {key: torch.compile(model) for key, model in models.items()}
    optimizers = {key: torch.optim.Adam(model.parameters(), lr=1e-4) for key, model in models.items()}
    objective = Objective(config, None, device)
    rgb = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8).pin_memory()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()

    def step() -> None:
        L, ab = color.rgb_to_model_inputs(rgb.to(device, non_blocking=True))
        with autocast:
            prediction, logits = split_class_logits(models["generator"](L))
            if "critic" in models:
                real, fake = torch.cat([L, ab], 1), torch.cat([L, prediction], 1)
                critic_losses = objective.critic(models["critic"](real), models["critic"](fake.detach()))
            else:
                losses = objective.supervised(prediction, ab, L, logits, None)
        if "critic" in models:
            optimizers["critic"].zero_grad(set_to_none=True)
            critic_losses["critic"].backward()
            optimizers["critic"].step()
            with autocast:
                losses = objective.generator(prediction, ab, L, models["critic"](fake), logits, None)
        optimizers["generator"].zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizers["generator"].step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return round(steps * batch_size / (time.perf_counter() - start), 1)


def jpeg_decode_rates(folder: Path) -> dict[str, float]:
    """img/s of torchvision decode_jpeg: batched on the GPU, and one image at a time on one CPU core."""
    from torchvision.io import decode_jpeg

    payloads = [torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8) for path in sorted(folder.iterdir())]
    batch = (payloads * 4)[:256]
    torch.set_num_threads(1)
    start = time.perf_counter()
    for payload in batch:
        decode_jpeg(payload)
    cpu = len(batch) / (time.perf_counter() - start)
    decode_jpeg(batch[:8], device="cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(4):
        decode_jpeg(batch, device="cuda")
    torch.cuda.synchronize()
    gpu = 4 * len(batch) / (time.perf_counter() - start)
    torch.set_num_threads(os.cpu_count() or 1)
    return {"decode_jpeg_cpu_1core_img_s": round(cpu, 1), "decode_jpeg_gpu_batched_img_s": round(gpu, 1)}


def serve_figures(model: Path, seconds: float) -> dict:
    """The last JSON line of bench/serve_load.py on the GPU, or why it did not run."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return {"skipped": "Ray is not installed on this machine"}
    command = [sys.executable, str(Path(__file__).parent / "serve_load.py"), "--model", str(model), "--repeats", "1",
               "--device", "cuda"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return {"skipped": f"did not finish in the {seconds:.0f} s left"}
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if done.returncode == 0 and lines else {"failed": done.stderr.strip()[-500:]}


def gpu_part(root: Path, model: Path, args: argparse.Namespace, deadline: Deadline) -> dict:
    result: dict = {"gpu": torch.cuda.get_device_name(0), "training_img_s": {}}
    for name in TRAINING:
        for variant, (bf16, compiled) in VARIANTS.items():
            if deadline.left() < 60:
                result["training_img_s"][f"{name}/{variant}"] = "skipped: out of time"
                continue
            rate = training_rate(name, bf16, compiled, args.batch_size, args.steps)
            result["training_img_s"][f"{name}/{variant}"] = rate
            print(f"training {name} {variant}: {rate} img/s", flush=True)
    result.update(jpeg_decode_rates(root / "photos"))
    result["colorize_1080p_gpu_bf16_img_s"] = colorize_rate("cuda", model, 32, "bf16")
    print(f"decode and colorize: {result}", flush=True)
    result["serve"] = serve_figures(model, max(0.0, deadline.left() - 5))
    return result


def main() -> None:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=290.0, help="stop starting new parts after this")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size on the GPU")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per setting")
    args = parser.parse_args()
    deadline = Deadline(args.budget_s)
    result: dict = {"cores": os.cpu_count(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="colorray-gpu-bench-") as temp:
        root = Path(temp)
        result.update(loader_vs_decode(root))
        torch.manual_seed(0)
        model = save_generator(root / "unet.pt", create_model("unet"), 256)
        result["colorize_1080p_cpu_img_s"] = colorize_rate("cpu", model, 4)
        print(f"CPU part: {result}", flush=True)
        if not torch.cuda.is_available():
            print("no GPU here (torch.cuda.is_available() is False): GPU figures not measured; CPU part done")
            result["gpu"] = None
        else:
            result.update(gpu_part(root, model, args, deadline))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
