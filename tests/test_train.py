"""End-to-end training on a real local Ray cluster: the default run and its console, GAN mode, resume, fault recovery,
``ray job submit``, and the clear errors for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from colorray.export import load_generator
from colorray.train.driver import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colors the "(RayTrainWorker pid=...)" prefixes
FAST = ["data.samples_per_epoch=64", "data.val_samples=16", "run.sample_images=4", "data.batch_size=8"]


def metrics_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def checkpoint_dirs(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("checkpoint_*") if p.is_dir())


def test_default_run_fits_a_screen_and_writes_checkpoint_metrics_samples_and_export(ray_cluster, tmp_path):
    """The default command (two short epochs) as a user runs it: a console within 40 lines of 200 characters."""
    command = [sys.executable, "-m", "colorray.train", f"run.storage_path={tmp_path}", "run.name=default",
               "run.epochs=2", *FAST]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "default"
    lines = ANSI.sub("", done.stdout + done.stderr).splitlines()
    assert len(lines) <= 40 and max(map(len, lines)) <= 200, "\n".join(lines)
    epoch_lines = [line for line in lines
                   if re.search(r"epoch \d/2 step \d+ \| loss [\d.]+ \| val color_score [\d.]+ psnr", line)]
    assert len(epoch_lines) == 2 and all(" img/s | " in line for line in epoch_lines)
    assert sum("LPIPS unavailable" in line for line in lines) == 1  # offline: once per run, not per rank
    assert not [line for line in lines if "TrainingReport" in line or "Checkpoint successfully created" in line]
    assert "  data: batch_size=8 val_samples=16 samples_per_epoch=64" in lines  # what differs from the defaults
    assert f"  generator export: {run / 'generator.pt'}" in lines
    assert any(line.startswith("  selected by val/color_score: ") for line in lines)
    assert f"  last generator export (step 8): {run / 'generator-last.pt'}" in lines
    assert any(line.startswith(f"  checkpoint: {run}/checkpoint_") for line in lines)
    lines = metrics_lines(run)
    assert [line["epoch"] for line in lines] == [1, 2]
    assert {"val/psnr", "val/ssim", "val/colorfulness_gap", "train/total"} <= set(lines[-1])
    assert (run / "samples" / "epoch-002.png").is_file() and (run / "tensorboard").is_dir()
    assert checkpoint_dirs(run) and all((c / "generator.pt").is_file() for c in checkpoint_dirs(run))
    model, info = load_generator(run)
    assert info.model == "cnn" and info.image_size == 64 and "val/psnr" in info.metrics
    assert model(torch.zeros(1, 1, 40, 52)).shape == (1, 2, 40, 52)


def test_gan_mode_with_generator_pretraining(ray_cluster, tmp_path):
    args = [f"run.storage_path={tmp_path}", "run.name=gan", "run.epochs=2", "model.name=unet",
            "model.options={num_downs: 5, ngf: 8}", "gan.enabled=true", "gan.pretrain_epochs=1",
            "gan.options={ndf: 8}", "data.image_size=32", "run.val_every_steps=3", *FAST]
    assert main(args) == 0
    run = tmp_path / "gan"
    lines = metrics_lines(run)  # 4 steps per epoch: validations at steps 3, 4 (epoch end), 6, 8 (epoch end)
    assert [(line["epoch"], line["step"]) for line in lines] == [(0, 3), (1, 4), (1, 6), (2, 8)]
    assert all("val/color_score" in line for line in lines) and (run / "samples" / "step-0000003.png").is_file()
    assert (run / "generator.pt").is_file() and (run / "generator-last.pt").is_file()
    pretrain, adversarial = lines[1], lines[3]
    assert "train/critic" not in pretrain and "train/critic" in adversarial
    assert "train/adversarial" in adversarial and torch.isfinite(torch.tensor(adversarial["train/total"]))


def test_resume_continues_the_step_count_and_passes_over_a_cut_state_file(ray_cluster, tmp_path):
    """Finding 2: a state.pt cut short made --resume fail with tracebacks; now the run goes on from the one before,
    counting its steps on from there."""
    args = [f"run.storage_path={tmp_path}", "run.name=resumed", "run.epochs=2", "scaling.num_workers=1", *FAST]
    assert main(args) == 0
    state = checkpoint_dirs(tmp_path / "resumed")[-1] / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    assert main(["--resume", str(tmp_path / "resumed"), "run.epochs=3"]) == 0
    lines = metrics_lines(tmp_path / "resumed")
    assert [line["epoch"] for line in lines] == [1, 2, 2, 3], "epoch 2 ran again, from epoch 1's checkpoint"
    steps = lines[0]["step"]
    assert [line["step"] for line in lines] == [steps, 2 * steps, 2 * steps, 3 * steps]


def test_a_worker_crash_is_recovered_from_the_last_checkpoint(ray_cluster, tmp_path):
    args = [f"run.storage_path={tmp_path}", "run.name=crash", "run.epochs=2", "run.checkpoint_every_steps=1",
            "run.fail_once_at_step=3", *FAST]
    assert main(args) == 0
    run = tmp_path / "crash"
    assert (run / ".failed_once").exists()
    lines = metrics_lines(run)
    assert lines[-1]["epoch"] == 2 and lines[-1]["step"] == 2 * 64 // (2 * 8)


def test_corrupt_samples_are_counted_per_epoch_and_too_many_stop_the_run(ray_cluster, tmp_path):
    """Section 3: a garbled tar header and an undecodable image in the training shards, one in validation."""
    from test_corrupt_data import garble_header
    from test_data import write_split

    root = tmp_path / "data"
    write_split(root / "train", [16, 16], corrupt_key="s0-004")
    garble_header(root / "train" / "part-000001.tar", "s1-009.jpg")
    write_split(root / "val", [8], corrupt_key="s0-002")
    command = [sys.executable, "-m", "colorray.train", f"run.storage_path={tmp_path}", "run.name=corrupt",
               f"data.train={root}", "data.image_size=32", "data.batch_size=4", "data.val_samples=0",
               "data.loader_workers=1", "run.epochs=2", "data.max_corrupt_share=0.05"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    output = ANSI.sub("", done.stdout + done.stderr)
    assert done.returncode == 1, output[-3000:]
    assert "skipped 3 corrupt samples (train 2, val 1)" in output
    assert done.stderr.rstrip().splitlines()[-1] == (
        "error: training stopped: epoch 1: skipped 2 corrupt training samples (5.9% of those read), more than "
        "data.max_corrupt_share = 0.05 allows; rebuild or fix the shards (python -m colorray.shards), or raise "
        "data.max_corrupt_share")
    [line] = metrics_lines(tmp_path / "corrupt")
    assert (line["train/skipped_corrupt"], line["val/skipped_corrupt"], line["val/corrupt_share"]) == (2, 1, 0.125)
    assert checkpoint_dirs(tmp_path / "corrupt"), "the epoch's checkpoint is kept"


@pytest.mark.parametrize(
    "args, message",
    [
        (["model.name=unetz"], "unknown model 'unetz'"),
        (["model.options={depth: 3}"], "model 'cnn' has no option 'depth'"),
        (["loss.terms={l2: 1.0}"], "unknown loss 'l2'"),
        (["optim.name=sgdd"], "unknown optimizer 'sgdd'"),
        (["data.train=/no/such/shards"], "/no/such/shards"),
        (["scaling.num_workers=8", "data.batch_size=4"], "the Ray cluster has"),
        (["data.batchsize=3"], "unknown config key 'data.batchsize'"),
        (["model.name=eccv16", "loss.terms={l1: 1.0}"], "does not fit model 'eccv16'"),
    ],
)
def test_bad_input_fails_before_workers_start(ray_cluster, tmp_path, capsys, args, message):
    assert main([f"run.storage_path={tmp_path}", "run.name=bad", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_ray_job_submit_runs_the_training_entry_point(ray_cluster, tmp_path):
    env = dict(os.environ, RAY_ADDRESS=ray_cluster.dashboard_url)
    command = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--working-dir", str(REPO),
               "--", "python", "-m", "colorray.train", f"run.storage_path={tmp_path}", "run.name=job",
               "run.epochs=1", *FAST]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "finished run 'job'" in done.stdout
    assert (tmp_path / "job" / "generator.pt").is_file()
