"""Tune trials that hand Tune real checkpoints, as Population Based Training needs.

With the Train V2 driver pattern a trial's checkpoints live in its Ray Train
run, and ``TuneReportCallback`` forwards only their paths: Tune itself holds
no checkpoint, so PBT cannot exploit. Here the trial fits its ``TorchTrainer``
in a thread while ``ForwardReports`` (a Train callback on the controller)
queues each rank-0 report with its checkpoint path; the trial thread copies
the checkpoint's ``state.pt`` with a ``source.json`` (which trial and Train
run made it) into a Tune checkpoint and reports both to Tune.

A trial starting with a Tune checkpoint (``ray.tune.get_checkpoint()``) is
either resumed (the checkpoint is its own: it continues the Train run named in
``source.json``) or exploited by PBT (the checkpoint is a donor's: it starts a
new Train run ``<trial id>-from-<donor>-e<epoch>`` whose workers load the donor's
state through ``run.init_from``, with the trial's perturbed values and learning
rates).
"""

from __future__ import annotations

import json
import queue
import shutil
import tempfile
import threading
from pathlib import Path

import ray
import ray.train
import ray.tune
from ray.train import UserCallback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.util.queue import Empty, Queue

from colorray.config import TrainConfig
from colorray.train import checkpoints
from colorray.train.checkpoints import STATE_FILE

SOURCE_FILE = "source.json"
POLL_S = 1.0


class ForwardReports(UserCallback):
    """On the Train controller: put rank 0's metrics (with ``checkpoint_path``) on the trial's queue."""

    def __init__(self, reports: Queue):
        self.reports = reports

    def after_report(self, run_context, metrics, checkpoint) -> None:
        result = dict(metrics[0])
        if checkpoint is not None:
            result[CHECKPOINT_PATH_KEY] = checkpoint.path
        self.reports.put(result)


def start_point(trial_id: str) -> tuple[str, str]:
    """(Train run name, checkpoint to start from) for this trial, from its Tune checkpoint if it has one."""
    tune_checkpoint = ray.tune.get_checkpoint()
    if tune_checkpoint is None:
        return trial_id, ""
    with tune_checkpoint.as_directory() as folder:
        source = json.loads((Path(folder) / SOURCE_FILE).read_text())
    if source["trial"] == trial_id:
        return source["run"], ""  # resumed: its Train run continues from its own latest checkpoint
    return f"{trial_id}-from-{source['trial']}-e{source['epoch']:03d}", tune_checkpoint.path


def run_checkpointed_trial(config: TrainConfig, trials_uri: str, build_trainer) -> None:
    """Fit ``config`` as this trial's Train run, reporting every epoch to Tune with a Tune checkpoint."""
    trial_id = ray.tune.get_context().get_trial_id()
    config.run.name, init_from = start_point(trial_id)
    config.run.init_from = _with_scheme(init_from, trials_uri)
    config.run.storage_path = trials_uri
    checkpoints.save_run_config(config)
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = build_trainer(config, callbacks=[ForwardReports(reports)])
    outcome: queue.Queue = queue.Queue()
    fit = threading.Thread(target=lambda: outcome.put(_fit(trainer)), daemon=True)
    fit.start()
    while fit.is_alive() or not reports.empty():
        try:
            result = reports.get(timeout=POLL_S)
        except Empty:
            continue
        _report(result, trial_id, config.run.name, trials_uri)
    error = outcome.get()
    if error is not None:
        raise error


def _fit(trainer) -> BaseException | None:
    try:
        trainer.fit()
    except BaseException as error:  # handed to the trial thread, which raises it for Tune
        return error
    return None


def _report(result: dict, trial_id: str, run_name: str, trials_uri: str) -> None:
    path = result.get(CHECKPOINT_PATH_KEY)
    if not path:
        ray.tune.report(result)
        return
    with tempfile.TemporaryDirectory() as folder, \
            ray.train.Checkpoint(_with_scheme(path, trials_uri)).as_directory() as source:
        shutil.copyfile(Path(source) / STATE_FILE, Path(folder) / STATE_FILE)
        origin = {"trial": trial_id, "run": run_name, "epoch": int(result.get("epoch", 0)), "checkpoint": path}
        (Path(folder) / SOURCE_FILE).write_text(json.dumps(origin))
        ray.tune.report(result, checkpoint=ray.tune.Checkpoint.from_directory(folder))


def _with_scheme(path: str, uri: str) -> str:
    """Checkpoint paths come back without their filesystem's scheme (s3://...): put it back."""
    if path and "://" in uri and "://" not in path:
        return f"{uri.split('://')[0]}://{path}"
    return path
