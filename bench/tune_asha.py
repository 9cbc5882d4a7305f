"""Benchmark: ASHA early stopping against running every trial to the end, on the smoke data.

The same sampled configurations (same search space and seed) run twice through
``colorray.tune``: once with ASHA, once with ``scheduler: none``. For each run it
counts the trial-epochs Tune saw (reported), the epochs the Train workers really
ran (``metrics.jsonl`` lines: a stopped trial may finish the epoch it was in),
the best metric found and the wall time. Target: ASHA spends at most a third of
the epochs for a best metric within noise of the full run.

    RAY_ADDRESS=127.0.0.1:PORT python bench/tune_asha.py [--trials 8] [--epochs 9] [--repeats 1]

Without RAY_ADDRESS it joins or starts Ray like ``python -m colorray.train``.
The last line printed is the JSON summary.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import ray
import yaml

from colorray import cli
from colorray.tune.driver import build_tuner, trial_rows
from colorray.tune.sweep import load_sweep

TARGET_EPOCH_RATIO = 1 / 3


def sweep_values(scheduler: dict, trials: int, epochs: int, seed: int, storage: Path) -> dict:
    return {
        "name": f"{scheduler['type']}-seed{seed}",
        "storage_path": str(storage),
        "base": {
            "model": {"name": "cnn", "options": {"width": 8}},
            "data": {"image_size": 32, "batch_size": 16, "samples_per_epoch": 128, "val_samples": 16,
                     "loader_workers": 0},
            "run": {"epochs": epochs, "sample_images": 4, "keep_checkpoints": 1, "log_every_steps": 100},
        },
        "search_space": {"optim.lr": {"loguniform": [1.0e-4, 1.0]}, "optim.weight_decay": {"loguniform": [1e-6, 1e-2]}},
        "metric": "val/psnr",
        "mode": "max",
        "scheduler": scheduler,
        "search": {"type": "random", "seed": seed},
        "num_samples": trials,
        "max_concurrent": 2,
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
    }


def run_sweep(values: dict, folder: Path) -> dict:
    path = folder / f"{values['name']}.yaml"
    path.write_text(yaml.safe_dump(values))
    sweep = load_sweep(path)
    clock = time.perf_counter()
    grid = build_tuner(sweep, resume=False, out=Path(sweep.uri)).fit()
    wall = time.perf_counter() - clock
    rows = trial_rows(sweep, grid)
    trained = sum(len((Path(sweep.trials_uri) / row.trial_id / "metrics.jsonl").read_text().splitlines())
                  for row in rows if (Path(sweep.trials_uri) / row.trial_id / "metrics.jsonl").is_file())
    best = rows[0]
    return {
        "reported_epochs": sum(row.epochs for row in rows),
        "trained_epochs": trained,
        "stopped_early": sum(row.status == "stopped early" for row in rows),
        "errors": sum(row.status == "error" for row in rows),
        "best": best.best,
        "best_params": best.params,
        "wall_s": round(wall, 1),
    }


def compare(trials: int, epochs: int, seed: int, folder: Path) -> dict:
    asha = run_sweep(sweep_values({"type": "asha", "grace_period": 1, "reduction_factor": 3},
                                  trials, epochs, seed, folder), folder)
    full = run_sweep(sweep_values({"type": "none"}, trials, epochs, seed, folder), folder)
    return {
        "seed": seed, "asha": asha, "full": full,
        "epoch_ratio": asha["reported_epochs"] / full["reported_epochs"],
        "trained_epoch_ratio": asha["trained_epochs"] / full["trained_epochs"],
        "best_gap": full["best"] - asha["best"],
        "same_winner": asha["best_params"] == full["best_params"],
        "wall_ratio": asha["wall_s"] / full["wall_s"],
    }


def main() -> None:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=9, help="max epochs per trial (ASHA's max_t)")
    parser.add_argument("--repeats", type=int, default=1, help="repetitions with seeds 0..N-1 (medians reported)")
    parser.add_argument("--output", default=None, help="folder for the sweeps (default: a temporary one)")
    args = parser.parse_args()
    cli.connect_ray()
    folder = Path(args.output or tempfile.mkdtemp(prefix="tune-asha-"))
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in range(args.repeats):
        runs.append(compare(args.trials, args.epochs, seed, folder))
        print(json.dumps(runs[-1]), flush=True)
    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    summary = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                   f"{int(ray.cluster_resources().get('CPU', 0))} Ray CPUs",
        "what": f"{args.trials} trials x up to {args.epochs} epochs, cnn width 8 at 32 px, smoke data, "
                "ASHA(grace 1, rf 3) vs no early stopping, 2 trials at a time, 1 worker each",
        "repeats": len(runs),
        "epoch_ratio": median("epoch_ratio"),
        "trained_epoch_ratio": median("trained_epoch_ratio"),
        "best_gap_psnr": median("best_gap"),
        "wall_ratio": median("wall_ratio"),
        "target_epoch_ratio": TARGET_EPOCH_RATIO,
        "meets_epoch_target": median("epoch_ratio") <= TARGET_EPOCH_RATIO,
        "runs": runs,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
