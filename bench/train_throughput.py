"""Benchmark (not a test): training-step images/s per model, plain torch vs Ray Train.

For each model at SIZE x SIZE with a stated batch size, the same training step
(colorray's model, loss and optimizer, uint8 RGB -> Lab on the device) runs

- in a plain single-process torch loop with ``--threads`` threads,
- through Ray Train with 1 worker given the same number of CPUs (Ray sets
  the worker's thread count from its CPU share), and
- through Ray Train with 2 workers under DDP (global images/s),

and prints the ratios Ray/plain (target >= 0.9) and 2 workers / 1 worker.
``--device cuda --amp`` measures the plain loop on a GPU with bf16 autocast.
The last line is one JSON object with every figure.

    python bench/train_throughput.py --size 256 --batch-size 4 --models cnn,resnet_regressor
"""

from __future__ import annotations

import json
import os
import statistics
import time
from contextlib import nullcontext

import torch

from colorray import cli, color
from colorray.config import TrainConfig, config_from_dict
from colorray.losses.objective import Objective
from colorray.models import create_model, output_space, split_class_logits

LOSS_FOR_SPACE = {  # no ab prior here: the bins models train on plain (unweighted) cross-entropy
    "ab": {"terms": {"l1": 1.0}},
    "rgb": {"terms": {"l1": 1.0}},
    "bins": {"terms": {"rebalanced_ce": 1.0}, "options": {"rebalanced_ce": {"rebalance": False}}},
}
SMALL_OPTIONS = {"fusion": {"num_classes": 10}}


def bench_config(model: str) -> TrainConfig:
    return config_from_dict({"model": {"name": model, "options": SMALL_OPTIONS.get(model, {})},
                             "loss": LOSS_FOR_SPACE[output_space(model)]})


def measure(model_name: str, size: int, batch_size: int, steps: int, warmup: int, device: str,
            amp: bool, wrap=lambda model: model) -> float:
    """Images/s of ``steps`` timed training steps (after ``warmup``) on synthetic uint8 photos."""
    config = bench_config(model_name)
    torch.manual_seed(0)
    model = create_model(model_name, **config.model.options).to(device)
    space = model.output_space
    model = wrap(model)
    objective = Objective(config, None, torch.device(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    rgb = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device == "cuda" else nullcontext()
    for step in range(warmup + steps):
        if step == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        L, ab = color.rgb_to_model_inputs(rgb.to(device))
        target = rgb.to(device).float() / 255 if space == "rgb" else ab
        with autocast:
            prediction, _ = split_class_logits(model(L))
            loss = objective.supervised(prediction, target, L)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def ray_worker_loop(config: dict) -> None:
    import tempfile

    import ray.train
    import ray.train.torch

    rate = measure(config["model"], config["size"], config["batch_size"], config["steps"], config["warmup"],
                   "cpu", False, wrap=ray.train.torch.prepare_model)
    with tempfile.TemporaryDirectory() as folder:  # Train V2 keeps only metrics reported with a checkpoint
        rank0 = ray.train.get_context().get_world_rank() == 0
        ray.train.report({"img_s": rate}, checkpoint=ray.train.Checkpoint.from_directory(folder) if rank0 else None)


def measure_ray(model: str, workers: int, threads: int, args) -> float:
    """Global images/s through Ray Train: per-worker rate (rank 0's) times the number of workers."""
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        ray_worker_loop,
        train_loop_config={"model": model, "size": args.size, "batch_size": args.batch_size,
                           "steps": args.steps, "warmup": args.warmup},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": threads}),
        run_config=ray.train.RunConfig(storage_path="/tmp/colorray-bench", name=f"tp-{model}-{workers}-{time.time()}"),
    )
    return trainer.fit().metrics["img_s"] * workers


def main() -> None:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,resnet_regressor,resnet_unet,unet,eccv16,rgb_cnn,fusion,attention_unet")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs per figure")
    parser.add_argument("--threads", type=int, default=1, help="threads of the plain loop = CPUs per Ray worker")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--no-ray", action="store_true", help="only the plain loop (e.g. on a GPU machine without Ray)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    median = lambda f: statistics.median(f() for _ in range(args.repeats))  # noqa: E731
    if not args.no_ray:
        os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
        cli.connect_ray(num_cpus=2 * args.threads)
    results = {}
    for model in args.models.split(","):
        plain = median(lambda: measure(model, args.size, args.batch_size, args.steps, args.warmup, args.device, args.amp))
        row = {"plain_img_s": round(plain, 2)}
        if not args.no_ray:
            one = median(lambda: measure_ray(model, 1, args.threads, args))
            two = median(lambda: measure_ray(model, 2, args.threads, args))
            row.update(ray1_img_s=round(one, 2), ray2_img_s=round(two, 2),
                       ray1_over_plain=round(one / plain, 3), ray2_over_ray1=round(two / one, 3))
        results[model] = row
        print(model, row, flush=True)
    print(json.dumps({"size": args.size, "batch_size": args.batch_size, "threads": args.threads,
                      "device": args.device, "amp": args.amp, "cores": os.cpu_count(), "models": results}))


if __name__ == "__main__":
    main()
