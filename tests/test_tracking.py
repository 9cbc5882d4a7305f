"""Experiment tracking: config checks (fast), and a training run logged to a real ``mlflow server`` started
on 127.0.0.1 (slow), read back with ``MlflowClient``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port

from colorray.config import ConfigError
from colorray.train import preflight, tracking
from colorray.train.driver import main as train
from colorray.tune.sweep import parse_sweep

ROOT = Path(__file__).resolve().parents[1]

FAST = ["data.samples_per_epoch=32", "data.val_samples=8", "run.sample_images=2", "data.batch_size=8",
        "scaling.num_workers=1", "run.log_every_steps=100"]


def test_unknown_tracker_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match="run.tracking must be one of none, mlflow, wandb, got 'mlfow'.*'mlflow'"):
        tracking.check_tracking("mlfow")


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_missing_tracker_package_names_the_extra(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"run.tracking wandb needs the wandb package.*pip install 'colorray\[wandb\]'"):
        preflight.prepare(None, [f"run.storage_path={tmp_path}", "run.tracking=wandb"])
    assert train([f"run.storage_path={tmp_path}", "run.name=w", "run.tracking=wandb"]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "w").exists()


def test_a_sweep_checks_its_tracker():
    with pytest.raises(ConfigError, match="tracking must be one of none, mlflow, wandb, got 'mlflo'"):
        parse_sweep(ROOT / "tune_configs" / "smoke.yaml", ["tracking=mlflo"])
    assert parse_sweep(ROOT / "tune_configs" / "smoke.yaml", ["tracking=mlflow"]).spec.tracking == "mlflow"


def test_config_becomes_dotted_parameters():
    params = tracking.flat_params({"optim": {"lr": 0.001, "betas": [0.9, 0.99]}, "model": {"name": "cnn", "options": {}}})
    assert params == {"optim.lr": "0.001", "optim.betas": "[0.9, 0.99]", "model.name": "cnn", "model.options": "{}"}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a SQLite store and proxied artifacts."""
    root = tmp_path_factory.mktemp("mlflow")
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            try:
                if requests.get(f"{url}/health", timeout=5).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_run_logs_config_metrics_and_samples_to_an_mlflow_server(ray_cluster, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    assert train([f"run.storage_path={tmp_path}", "run.name=tracked", "run.epochs=1", "run.tracking=mlflow",
                  f"run.tracking_uri={mlflow_server}", *FAST]) == 0
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{tracking.RUN_TAG}` = 'tracked'")
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["model.name"] == "cnn" and run.data.params["optim.lr"] == "0.001"
    history = client.get_metric_history(run.info.run_id, "val/psnr")
    steps = [json.loads(line)["step"] for line in (tmp_path / "tracked" / "metrics.jsonl").read_text().splitlines()]
    assert [point.step for point in history] == steps and history[0].value > 0
    assert [item.path for item in client.list_artifacts(run.info.run_id, "samples")] == ["samples/epoch-001.png"]
    assert not (tmp_path / "tracked" / tracking.MLFLOW_DB).exists()  # a tracking URI replaces the local store
