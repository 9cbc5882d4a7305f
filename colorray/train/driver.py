"""The driver of ``python -m colorray.train``: parse, check, connect to Ray, fit a ``TorchTrainer``.

``main`` loads and checks the config, connects to Ray (the running cluster
inside ``ray job submit`` or when ``RAY_ADDRESS`` is set, else a local one) and
runs ``colorray.train.loop.train_loop_per_worker`` on a ``TorchTrainer``. The console
is kept to a screen (``colorray.train.console``); ``--verbose`` lets Ray's own logs through.
"""

from __future__ import annotations

import argparse

import ray
import ray.train
from ray.train.torch import TorchTrainer

from colorray import cli
from colorray.config import TrainConfig, absolute_location, config_to_dict, dump_config
from colorray.data import storage
from colorray.metrics import resolve_selection
from colorray.train import checkpoints, console, preflight
from colorray.train.loop import train_loop_per_worker
from colorray.train.validation import corrupt_data_problem


def build_trainer(config: TrainConfig, callbacks: list | None = None, verbose: bool = False) -> TorchTrainer:
    scaling, run = config.scaling, config.run
    metric, mode = resolve_selection(run.metric, run.mode)
    storage_path, filesystem = storage.ray_storage(absolute_location(run.storage_path))
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config_to_dict(config),
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            worker_runtime_env=storage.runtime_env() or None,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=run.keep_checkpoints,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            callbacks=callbacks,
            logging_config=ray.train.LoggingConfig(console.train_log_level(verbose)),
        ),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="python -m colorray.train",
        description="Train a colorization model on Ray Train. Without arguments: the default small "
        "model on the embedded smoke dataset, on this machine's CPUs.",
    )
    parser.add_argument("--config", help="YAML file with any of the sections of colorray.config.TrainConfig")
    parser.add_argument("--resume", metavar="PATH_OR_RUN",
                        help="continue a stopped run: its folder, or its run.name under run.storage_path")
    parser.add_argument("--print-config", action="store_true", help="print the full config and exit")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="train on GPUs (cuda) or CPUs; auto: GPUs when the Ray cluster has them "
                             "(default: the config's scaling.use_gpu)")
    parser.add_argument("--verbose", action="store_true",
                        help="print the full config and Ray's own logs (per-report dumps, start-up banners)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. model.name=unet optim.lr=2e-4 gan.enabled=true")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = preflight.prepare(args.config, args.overrides, args.resume)
        if args.print_config:
            print(dump_config(config), end="")
            return 0
        cli.connect_ray(verbose=args.verbose)
        if args.device is not None:
            config.scaling.use_gpu = args.device == "cuda" or (
                args.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        preflight.check_cluster(config)
    except preflight.PREFLIGHT_ERRORS as error:
        return cli.fail(error)
    print("\n".join(header_lines(config, args.verbose)), flush=True)
    checkpoints.save_run_config(config)
    try:
        result = build_trainer(config, verbose=args.verbose).fit()
    except ray.train.TrainingFailedError as error:
        return cli.fail(f"training failed: {failure_cause(error)}", code=1)
    problem = corrupt_data_problem(config, result.metrics or {})
    if problem:
        return cli.fail(f"training stopped: {problem}", code=1)
    print(checkpoints.finish(config, result))
    return 0


def failure_cause(error: Exception) -> str:
    """What went wrong in a worker, in one line (Ray's own message starts with 'Training failed due to ...')."""
    failures = getattr(error, "worker_failures", None) or {}
    for rank, failure in sorted(failures.items()):
        cause = getattr(failure, "cause", None) or failure
        text = str(cause).strip()
        return f"worker {rank}: {type(cause).__name__}: {text.splitlines()[0] if text else ''}"
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def header_lines(config: TrainConfig, verbose: bool) -> list[str]:
    """Run name, data and the config: what differs from the defaults, or (verbose) the whole YAML."""
    location = f"{absolute_location(config.run.storage_path).rstrip('/')}/{config.run.name}"
    lines = [f"colorray.train: run '{config.run.name}' in {location}",
             *(console.clip(f"  {part}") for part in preflight.describe_data(config).split("; "))]
    if verbose:
        return [*lines, "--- config ---", dump_config(config).rstrip("\n"), "--------------"]
    return [*lines, console.clip(f"  config (what differs from the defaults; all of it in {location}/config.yaml):"),
            *console.config_lines(config)]
