"""Hyperparameter sweeps on a real local Ray cluster: the smoke sweep interrupted, resumed and exported
end to end, and the clear errors for bad sweep files."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from ray import tune
from skimage import data as photos

from colorray.config import ConfigError, config_to_dict
from colorray.export import load_generator, save_generator
from colorray.inference import Colorizer
from colorray.models import create_model
from colorray.models.weights import expected_path
from colorray.tune.driver import (
    TrialRow,
    export_best,
    main,
    planned_trials,
    was_interrupted,
)
from colorray.tune.sweep import (
    ClipToRanges,
    load_sweep,
    parse_sweep,
    scheduler,
    trial_config,
)

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tune_configs" / "smoke.yaml"
FINISHED = "colorray.tune: trial "


def sweep_file(tmp_path: Path, **changes) -> Path:
    """The smoke sweep with top-level keys replaced (None: removed)."""
    values = yaml.safe_load(SMOKE.read_text())
    values["storage_path"] = str(tmp_path / "runs")
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def metrics_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def results_table(out: Path) -> list[dict]:
    with open(out / "results.csv") as handle:
        return list(csv.DictReader(handle))


def run_until_first_trial_finishes(command: list[str]) -> tuple[list[str], str]:
    """Start the sweep driver, SIGINT it once a trial has finished; (ids finished before that, whole output)."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(FINISHED) and " finished at epoch " in line:
            break
    finished = [line.split()[2] for line in lines if line.startswith(FINISHED) and " finished " in line]
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=180)
    assert process.returncode == 1, rest
    return finished, "".join(lines) + rest


def trial_state(run: Path) -> tuple[int, str]:
    """What a rerun of the trial would change: its config.yaml (rewritten at every trial start) and metrics."""
    return (run / "config.yaml").stat().st_mtime_ns, (run / "metrics.jsonl").read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smoke_sweep_interrupted_resumed_and_exported(ray_cluster, tmp_path):
    storage = tmp_path / "runs"
    command = [sys.executable, "-m", "colorray.tune", str(SMOKE), "--storage-path", str(storage)]
    finished, output = run_until_first_trial_finishes(command)
    assert finished and "interrupted with" in output and "--resume" in output
    out = storage / "smoke"
    before = {trial: trial_state(out / "trials" / trial) for trial in finished}

    # A new driver (job) resumes: Ray removes what the interrupted job's trials left behind.
    resumed = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=420)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"best generator: {out / 'best' / 'generator.pt'}" in resumed.stdout

    assert {trial: trial_state(out / "trials" / trial) for trial in finished} == before  # not rerun
    rows = results_table(out)
    assert len(rows) == 4 and all(row["best val/color_score"] != "-" for row in rows)  # every trial reported
    epochs = [int(row["epochs"]) for row in rows]
    assert max(epochs) == 4 and min(epochs) < 4  # ASHA stopped at least one trial early
    assert {row["status"] for row in rows} <= {"completed", "stopped early"}
    assert sorted(float(row["optim.lr"]) for row in rows) == [1e-3, 3e-3, 0.3, 1.0]
    for plot in ("metric_over_time.png", "metric_vs_params.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    best = out / "best"
    _, info = load_generator(best)
    assert info.model == "cnn" and "val/color_score" in info.metrics
    assert (best / "generator-last.pt").is_file()
    photo = photos.astronaut()[::8, ::8]
    colored = Colorizer.from_path(best).colorize([photo])[0]
    assert colored.shape == photo.shape and colored.dtype == np.uint8
    saved = yaml.safe_load((best / "config.yaml").read_text())
    assert saved["run"]["name"] == "" and saved["optim"]["lr"] == float(rows[0]["optim.lr"])
    printed = subprocess.run([sys.executable, "-m", "colorray.train", "--config", str(best / "config.yaml"),
                              "--print-config"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["optim"] == saved["optim"]


BAD_SWEEPS = [
    ({"schedular": {"type": "asha"}}, "unknown key 'schedular' (did you mean 'scheduler'?)"),
    ({"search_space": {"optim.learning_rate": {"loguniform": [1e-4, 1e-2]}}},
     "search_space 'optim.learning_rate': unknown config key 'optim.learning_rate'"),
    ({"search_space": {"model.name": {"choice": ["cnn", "unetz"]}}},
     "search_space 'model.name': unknown model 'unetz'"),
    ({"search_space": {}}, "search_space is empty"),
    ({"search_space": {"optim.lr": {"logunifrom": [1e-4, 1e-2]}}},
     "search_space 'optim.lr': unknown distribution 'logunifrom' (did you mean 'loguniform'?)"),
    ({"search_space": {"optim.lr": {"loguniform": [0, 1e-2]}}}, "search_space 'optim.lr': loguniform needs low > 0"),
    ({"search_space": {"model.options.ngf": {"choice": [8, 16]}}},
     "search_space 'model.options.ngf': model 'cnn' has no option 'ngf'"),
    ({"search_space": {"data.batch_size": {"uniform": [4, 32]}}},
     "search_space 'data.batch_size' = 4.0: config key 'data.batch_size' must be of type int"),
    ({"search_space": {"run.name": {"choice": ["a", "b"]}}}, "search_space 'run.name' cannot be searched"),
    ({"search": {"type": "grid"}, "search_space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}},
     "search.type grid needs every search_space entry to be {grid: [...]}; not: optim.lr"),
    ({"metric": "psnr"}, "metric/mode: the selection metric must name a reported metric"),
]


@pytest.mark.parametrize("changes, message", BAD_SWEEPS)
def test_bad_sweep_files_are_rejected_naming_the_key(tmp_path, capsys, changes, message):
    assert main([str(sweep_file(tmp_path, **changes))]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and "Traceback" not in error
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_more_resources_than_the_cluster_has_are_rejected(ray_cluster, tmp_path, capsys):
    path = sweep_file(tmp_path, resources={"num_workers": 16, "cpus_per_worker": 1})
    assert main([str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: resources (each trial's scaling): scaling asks for 16 workers needing 16 CPU")


@pytest.mark.slow
def test_resume_without_a_sweep_is_rejected(ray_cluster, tmp_path, capsys):
    assert main([str(sweep_file(tmp_path)), "--resume"]) == 2
    assert "--resume: no sweep to continue at" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("optuna") is not None, reason="optuna is installed here")
def test_optuna_search_needs_optuna(tmp_path, capsys):
    path = sweep_file(tmp_path, search={"type": "optuna"}, search_space={"optim.lr": {"loguniform": [1e-4, 1e-2]}})
    assert main([str(path)]) == 2
    assert "search.type optuna needs the optuna package" in capsys.readouterr().err


def test_perceptual_mix_without_vgg_weights_is_refused_before_any_trial(capsys):
    if expected_path("vgg19").is_file():
        pytest.skip("the VGG-19 weights are on this machine")
    assert main([str(REPO / "tune_configs" / "loss_weights.yaml")]) == 2
    error = capsys.readouterr().err
    assert "search_space 'gan.gamma' = 0.0: pretrained vgg19 weights not found" in error


@pytest.mark.parametrize("name", ["smoke", "learning_rates", "architectures", "optuna"])
def test_shipped_cpu_sweeps_pass_every_check(name):
    sweep = load_sweep(REPO / "tune_configs" / f"{name}.yaml")
    assert sweep.spec.name == name and sweep.base.run.checkpoint_every_steps == 0


def test_architecture_sweep_sets_whole_model_sections():
    sweep = load_sweep(REPO / "tune_configs" / "architectures.yaml")
    names = [section["name"] for section in sweep.spec.search_space["model"]["grid"]]
    assert {"cnn", "unet", "resnet_unet"} <= set(names)
    config = trial_config(config_to_dict(sweep.base), {"model": {"name": "unet", "options": {"ngf": 16}}})
    assert config.model.name == "unet" and config.model.options == {"ngf": 16}


def test_gpu_cluster_sweep_parses_without_opening_its_data():
    sweep = parse_sweep(REPO / "tune_configs" / "imagenet_gpu.yaml")
    assert sweep.uri == "s3://colorray-runs/tune/imagenet_gpu" and sweep.trials_uri.startswith("s3://")
    assert sweep.base.scaling.use_gpu and sweep.base.scaling.num_workers == 4
    assert sweep.base.data.train.startswith("s3://")


def test_relative_local_paths_are_made_absolute_for_trials(tmp_path, monkeypatch):
    path = sweep_file(tmp_path, storage_path="relative/tune", base={"data": {"train": "shards/train"}})
    monkeypatch.chdir(tmp_path)
    sweep = parse_sweep(path)
    assert sweep.uri == str(tmp_path / "relative" / "tune" / "smoke")
    assert sweep.base.data.train == str(tmp_path / "shards" / "train")


@pytest.mark.parametrize("error, metrics, interrupted", [
    (None, {"epoch": 1}, True),  # paused mid-run by an interrupt
    (None, {}, True),  # never reported
    (None, {"epoch": 4}, False),  # all epochs ran; Tune's state was saved before it marked the trial done
    (None, {"epoch": 2, "done": True}, False),  # stopped by the scheduler
    (RuntimeError("boom"), {"epoch": 1}, False),  # failed: reported as an error, not resumed
])
def test_a_trial_is_interrupted_only_when_it_neither_failed_nor_ended(error, metrics, interrupted):
    result = types.SimpleNamespace(error=error, metrics=metrics)
    assert was_interrupted(result, max_epochs=4) is interrupted


def test_planned_trials_count_every_grid_combination_num_samples_times(tmp_path):
    space = {"optim.lr": {"grid": [1e-3, 1e-2]}, "optim.weight_decay": {"grid": [0.0, 1e-4, 1e-3]},
             "gan.lambda_l1": {"loguniform": [1, 200]}}
    assert planned_trials(parse_sweep(sweep_file(tmp_path, search_space=space, num_samples=2)).spec) == 12
    assert planned_trials(parse_sweep(REPO / "tune_configs" / "optuna.yaml").spec) == 12  # its num_samples


def test_the_best_export_takes_kept_checkpoints_when_the_reported_ones_were_removed(tmp_path):
    """An ASHA-stopped trial trained on past its last report, and keep_checkpoints=1 removed what Tune saw:
    generator-last.pt is the newest kept checkpoint, generator.pt the one the run's rule picks among those kept."""
    run = tmp_path / "trials" / "t1"
    kept = {"checkpoint_2026-12-03_12-00-01.000001": 20.0, "checkpoint_2026-12-03_12-00-04.000004": 10.0}
    for name, score in kept.items():
        save_generator(run / name / "generator.pt", create_model("cnn", width=4), 32, {"val/color_score": score})
    removed = [str(run / f"checkpoint_2026-12-03_12-00-0{n}.00000{n}") for n in (2, 3)]
    row = TrialRow("t1", "stopped early", {"optim.lr": 1e-3}, epochs=3, best=25.0, best_epoch=2,
                   best_checkpoint=removed[0], last_checkpoint=removed[1])
    folder = export_best(parse_sweep(SMOKE), row, tmp_path / "out")
    exports = {name: (run / name / "generator.pt").read_bytes() for name in kept}
    assert (folder / "generator.pt").read_bytes() == exports["checkpoint_2026-12-03_12-00-01.000001"]
    assert (folder / "generator-last.pt").read_bytes() == exports["checkpoint_2026-12-03_12-00-04.000004"]


def shipped_sweep(tmp_path: Path, name: str, **changes) -> Path:
    """A shipped sweep file shrunk for a test: ``changes`` replace top-level keys, ``base`` is merged."""
    values = yaml.safe_load((REPO / "tune_configs" / f"{name}.yaml").read_text())
    values["storage_path"] = str(tmp_path / "runs")
    for key, value in changes.items():
        values[key] = {**values[key], **value} if key == "base" else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


TINY_BASE = {"data": {"image_size": 32, "batch_size": 8, "samples_per_epoch": 32, "val_samples": 8,
                      "loader_workers": 0}, "run": {"epochs": 4, "sample_images": 2, "keep_checkpoints": 1}}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pbt_sweep_exploits_donor_checkpoints_and_resumes(ray_cluster, tmp_path):
    """Two trials of tune_configs/pbt.yaml (tiny, synchronous): after epoch 2 the worse trial restarts its Train
    run from the better one's checkpoint with perturbed values (the better one, paused meanwhile, continues its
    own run); --resume of the finished sweep reruns nothing."""
    vgg = tmp_path / "vgg19-features.pth"  # a stand-in trunk so gamma < 1 runs offline (never a reported number)
    torch.save({f"features.{k}": v for k, v in torchvision.models.vgg19().features[:4].state_dict().items()}, vgg)
    base = {**TINY_BASE, "model": {"name": "unet", "options": {"ngf": 8, "num_downs": 4}},
            "gan": {"enabled": True, "options": {"ndf": 8}, "pretrain_epochs": 1},
            "loss": {"options": {"perceptual": {"pretrained": str(vgg), "layers": ["relu1_2"]}}},
            "run": {**TINY_BASE["run"], "epochs": 3}}
    space = {"gan.lambda_l1": {"loguniform": [1, 200]}, "gan.gamma": {"uniform": [0.5, 0.9]},
             "optim.lr": {"loguniform": [1.0e-4, 3.0e-3]}}
    path = shipped_sweep(tmp_path, "pbt", base=base, search_space=space, num_samples=2, max_concurrent=2,
                         scheduler={"type": "pbt", "perturbation_interval": 2, "quantile_fraction": 0.5,
                                    "resample_probability": 0.25, "synch": True})
    command = [sys.executable, "-m", "colorray.tune", str(path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "runs" / "pbt"
    rows = results_table(out)
    assert len(rows) == 2 and all(row["best val/color_score"] != "-" for row in rows)
    assert (out / "best" / "generator.pt").is_file()
    exploits = [run for run in (out / "trials").iterdir() if "-from-" in run.name]
    assert len(exploits) == 1, sorted(p.name for p in (out / "trials").iterdir())
    run = exploits[0]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert run.name.endswith("-e002") and "/checkpoint_" in config["run"]["init_from"]
    assert 0.5 <= config["gan"]["gamma"] <= 0.9
    assert metrics_lines(run)[0]["epoch"] == 3 and metrics_lines(run)[0]["step"] == 12  # went on from the donor
    lines = [line for line in done.stdout.splitlines() if "(raylet)" not in line]  # a busy machine's warnings
    assert len([line for line in lines if line.startswith(("rank ", "1 ", "2 "))]) == 3  # Tune's table at the end
    assert max(map(len, lines)) <= 200, [line for line in lines if len(line) > 200]
    again = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert results_table(out) == rows and len(list((out / "trials").iterdir())) == 3


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_optuna_sweep_samples_with_tpe_and_resumes(ray_cluster, tmp_path):
    base = {**TINY_BASE, "model": {"name": "cnn", "options": {"width": 8}}, "run": {**TINY_BASE["run"], "epochs": 1}}
    path = shipped_sweep(tmp_path, "optuna", base=base, num_samples=2, max_concurrent=1, scheduler={"type": "none"},
                         search_space={"optim.lr": {"loguniform": [1.0e-4, 1.0e-2]},
                                       "model.options.width": {"choice": [4, 8]}})
    command = [sys.executable, "-m", "colorray.tune", str(path)]
    finished, output = run_until_first_trial_finishes(command)
    assert finished and "--resume" in output
    resumed = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    lines = [line for line in resumed.stdout.splitlines() if "(raylet)" not in line]  # a busy machine's warnings
    assert len(lines) <= 40 and max(map(len, lines)) <= 200, lines
    rows = results_table(tmp_path / "runs" / "optuna")
    assert len(rows) == 2 and {row["status"] for row in rows} == {"completed"}  # none lost, none run twice
    assert all(1e-4 <= float(row["optim.lr"]) <= 1e-2 and row["model.options.width"] in ("4", "8") for row in rows)
    assert len({row["optim.lr"] for row in rows}) == 2
    state = list((tmp_path / "runs" / "optuna").glob("searcher-state-*.pkl"))
    assert state  # OptunaSearch's study, saved by Tune and restored on --resume


PBT_SPACE = {"gan.lambda_l1": {"loguniform": [1, 200]}, "optim.lr": {"loguniform": [1.0e-4, 1.0e-2]}}


@pytest.mark.parametrize("changes, message", [
    ({"search_space": {**PBT_SPACE, "model.options.width": {"choice": [8, 16]}}},
     "search_space 'model.options.width' cannot be perturbed by pbt: an exploit loads the donor's network"),
    ({"num_samples": 1}, "scheduler pbt needs a population: num_samples >= 2"),
    ({"search": {"type": "optuna"}}, "scheduler pbt samples its own values: use search.type random"),
    ({"search_space": {"optim.lr": {"grid": [1.0e-3, 1.0e-2]}}}, "pbt cannot perturb grid entries"),
])
def test_pbt_sweeps_refuse_what_an_exploit_cannot_carry(tmp_path, changes, message):
    settings = {"scheduler": {"type": "pbt"}, "search_space": PBT_SPACE, "num_samples": 4, **changes}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_sweep(sweep_file(tmp_path, **settings))


def test_pbt_explores_within_the_search_ranges():
    sweep = parse_sweep(REPO / "tune_configs" / "pbt.yaml")
    pbt = scheduler(sweep.spec, sweep.base.run.epochs, Path("unused"))
    assert isinstance(pbt, tune.schedulers.PopulationBasedTraining)
    clip = ClipToRanges(sweep.spec.search_space)
    assert clip({"gan.gamma": 1.08, "gan.lambda_l1": 0.8, "optim.lr": 3e-4}) == \
        {"gan.gamma": 1.0, "gan.lambda_l1": 1.0, "optim.lr": 3e-4}
