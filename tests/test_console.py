"""The training console's pieces: the compact config, the epoch line and the width cap (no Ray here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

from colorray.config import TrainConfig, apply_overrides, config_from_dict
from colorray.train import console


def config_with(*overrides: str) -> TrainConfig:
    return config_from_dict(apply_overrides({}, list(overrides)))


def test_the_default_config_is_one_line_and_changes_one_line_per_section():
    assert console.config_lines(TrainConfig()) == ["  config: the defaults"]
    config = config_with("model.options={width: 8}", "optim.lr=0.003", "optim.betas=[0.5, 0.999]",
                         "run.name=mine", "run.epochs=3")
    assert console.config_lines(config) == [
        "  model: options={width: 8}", "  optim: lr=0.003 betas=[0.5, 0.999]", "  run: epochs=3"]


def test_long_sections_wrap_and_no_line_passes_the_width():
    config = config_with("data.train=" + "/very/long/path/" * 20 + "train-{000000..000127}.tar",
                         *(f"model.options.option_{i}={i}" for i in range(40)))
    data, model = console.config_lines(config)
    assert data.startswith("  data: train=/very/long/path/") and model.startswith("  model: options={option_0: 0")
    assert len(data) == len(model) == console.WIDTH and data.endswith("...") and model.endswith("...")
    wrapped = console.wrap("  run:", [f"key_{i}={i}" for i in range(60)])
    assert len(wrapped) == 4 and max(map(len, wrapped)) <= console.WIDTH
    assert wrapped[1].startswith("       key_") and wrapped[-1].endswith("key_59=59")


def test_the_epoch_line_shows_loss_the_selection_metric_first_rate_and_time():
    config = config_with("run.epochs=8", "run.metric=val/mae", "run.mode=min")
    metrics = {"train/total": 0.11001, "train/l1": 0.11, "val/psnr": 22.6168, "val/ssim": 0.87692,
               "val/mae": 15.2191, "val/colorfulness": 30.1, "epoch": 3, "step": 36}
    line = console.epoch_line(config, 3, 36, metrics, rate=41.27, seconds=21.44)
    assert line == "epoch 3/8 step 36 | loss 0.1100 | val mae 15.22 psnr 22.62 ssim 0.8769 | 41.3 img/s | 21.4 s"
    assert console.epoch_line(config, 1, 4, {}, 1.0, 2.0) == "epoch 1/8 step 4 | loss - | no validation | 1.0 img/s | 2.0 s"


def test_ray_noise_is_skipped_unless_verbose():
    pattern = re.compile("|".join(console.RAY_NOISE))
    assert pattern.search("(RayTrainWorker pid=1) Reporting training result 3: TrainingReport(checkpoint=None, ...")
    assert not pattern.search("(RayTrainWorker pid=1) epoch 3/8 step 36 | loss 0.1100")
    probe = "import os, sys; from colorray.train import console; console.quiet_ray_console(sys.argv[1:]); " \
            "print(os.environ.get('RAY_DEDUP_LOGS_SKIP_REGEX'), 'ray' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "RAY_DEDUP_LOGS_SKIP_REGEX"}
    quiet = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert quiet.stdout.split() == ["|".join(console.RAY_NOISE).split()[0], *quiet.stdout.split()[1:-1], "False"]
    verbose = subprocess.run([sys.executable, "-c", probe, "--verbose"], env=env, capture_output=True, text=True)
    assert verbose.stdout.split() == ["None", "False"]


def test_worker_warnings_are_one_clipped_line_from_rank_0_only(capsys):
    saved = warnings.showwarning
    try:
        for rank in (1, 0):
            console.one_line_warnings(rank)
            warnings.showwarning(UserWarning("Grad strides do not match bucket view strides. " * 9 + "\nsecond line"),
                                 UserWarning, "/site-packages/torch/autograd/graph.py", 1072)
    finally:
        warnings.showwarning = saved
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and len(lines[0]) == console.WORKER_WIDTH
    assert lines[0].startswith("UserWarning: Grad strides do not match") and lines[0].endswith("...")
