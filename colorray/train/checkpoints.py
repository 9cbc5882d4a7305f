"""Training state on disk: checkpoints, the run folder and what a run leaves for people to look at.

A checkpoint folder (reported through ``ray.train.report``) holds
``state.pt`` (models, optimizers, schedulers, AMP scalers, EMA, data position,
config, metrics), ``generator.pt`` (the standalone export Serve and Evaluate
load; the EMA weights when ``run.ema_decay`` is on), the config as
YAML, and at epoch ends ``samples.png``. The run folder ``STORAGE/NAME`` (a
local or NFS path, or an ``s3://`` / ``gs://`` URI: ``colorray.data.storage``)
also gets ``config.yaml``, ``metrics.jsonl``, TensorBoard scalars, the sample
grids of every validation and, at the end, the selected checkpoint's
``generator.pt`` (by ``run.metric``, the rule of ``colorray.metrics.select_best``)
and the last checkpoint's ``generator-last.pt``. With a URI, rank 0 writes its
logs to a local staging folder and uploads it after every validation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ray.train
import torch
import torchvision

from colorray.config import (
    TrainConfig,
    absolute_location,
    config_to_dict,
    dump_config,
    is_remote,
)
from colorray.data import storage
from colorray.export import (
    EXPORT_FILENAME,
    LAST_EXPORT_FILENAME,
    RUN_CONFIG_FILE,
    save_atomic,
    save_generator,
    unwrap,
)
from colorray.metrics import resolve_selection, select_best
from colorray.train import console, tracking

STATE_FILE = "state.pt"
SAMPLES_FILE = "samples.png"
METRICS_FILE = "metrics.jsonl"
FAIL_MARKER = ".failed_once"

logger = logging.getLogger("colorray.train")
logger.setLevel(logging.INFO)


@dataclass
class Position:
    """Where training stands: the epoch to run, batches of it already done, global step, last validation."""

    epoch: int = 0
    batches_done: int = 0
    step: int = 0
    val_metrics: dict[str, float] = field(default_factory=dict)


def run_dir(config: TrainConfig) -> Path | None:
    """The run's local folder, or None when the storage is remote (s3://, gs://)."""
    if is_remote(config.run.storage_path):
        return None
    return Path(absolute_location(config.run.storage_path)) / config.run.name


def run_location(config: TrainConfig) -> str:
    """The run's folder as a local path or a URI."""
    return storage.join(absolute_location(config.run.storage_path), config.run.name)


def save_run_config(config: TrainConfig) -> None:
    storage.write_text(storage.join(run_location(config), RUN_CONFIG_FILE), dump_config(config))


def save(folder, config, models, updater, position: Position, metrics, samples=None) -> None:
    """A checkpoint: ``state.pt`` (models, optimizers, schedules, AMP scalers and EMA), the export and the config."""
    folder = Path(folder)
    state = {
        "models": {name: unwrap(model).state_dict() for name, model in models.items()},
        "optimizers": {name: opt.state_dict() for name, opt in updater.optimizers.items()},
        "schedulers": {name: sched.state_dict() for name, sched in updater.schedulers.items()},
        "updater": updater.state_dict(),
        "position": dataclasses.asdict(position),
        "config": config_to_dict(config),
        "metrics": metrics,
    }
    save_atomic(state, folder / STATE_FILE)
    val_metrics = {k: v for k, v in metrics.items() if k.startswith("val/")}
    save_generator(folder / EXPORT_FILENAME, updater.generator(models["generator"]), config.data.image_size,
                   val_metrics)
    (folder / RUN_CONFIG_FILE).write_text(dump_config(config))
    if samples is not None:
        torchvision.utils.save_image(samples, folder / SAMPLES_FILE)


class CheckpointError(ValueError):
    """No checkpoint of the run can be read."""


def restore(checkpoint, models, updater, rank: int = 0) -> Position:
    """Load a Ray Train checkpoint into the models and the updater (optimizers, schedules, ...); where to continue.

    When its ``state.pt`` cannot be read (a crash while it was copied, a disk error), the
    newest older checkpoint of the run that can be read is used instead, and rank 0 says so.
    """
    if checkpoint is None:
        return Position()
    with checkpoint.as_directory() as folder:
        state, used, unreadable = load_state(Path(folder))
    if unreadable and rank == 0:
        logger.warning(f"colorray.train: {'; '.join(unreadable)}; resuming from the newest readable checkpoint, "
                       f"{used}")
    for group, objects in (("models", models), ("optimizers", updater.optimizers),
                           ("schedulers", updater.schedulers)):
        missing = set(objects) - set(state[group])
        if missing:
            raise ValueError(f"checkpoint has no {group} state for {', '.join(sorted(missing))}: incompatible run")
        for name, obj in objects.items():
            obj.load_state_dict(state[group][name])
    updater.load_state_dict(state.get("updater"), models["generator"])
    return Position(**state["position"])


def load_state(folder: Path) -> tuple[dict, Path, list[str]]:
    """``folder``'s state.pt or, if it does not load, that of the newest older checkpoint beside it that does:
    (state, the folder it came from, what was unreadable)."""
    siblings = folder.parent.glob("checkpoint_*") if folder.name.startswith("checkpoint_") else []
    older = sorted((p for p in siblings if p.is_dir() and p.name < folder.name), reverse=True)
    unreadable = []
    for candidate in [folder, *older]:
        try:
            return torch.load(candidate / STATE_FILE, map_location="cpu", weights_only=True), candidate, unreadable
        except Exception as error:  # noqa: BLE001 - any unreadable state file is skipped and named
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            unreadable.append(f"checkpoint {candidate} is unreadable ({reason})")
    raise CheckpointError(f"cannot resume: {'; '.join(unreadable)}")


def restore_or_init(config: TrainConfig, models, updater, lrs: dict[str, float]) -> Position:
    """Continue the run from its own latest checkpoint; else from ``run.init_from`` (another run's checkpoint,
    such as a PBT donor's), taking its weights, optimizer moments and position but this run's learning rates
    ``lrs`` (per optimizer), at the point of their schedules the donor had reached."""
    own, rank = ray.train.get_checkpoint(), ray.train.get_context().get_world_rank()
    if own is not None or not config.run.init_from:
        return restore(own, models, updater, rank)
    position = restore(ray.train.Checkpoint(config.run.init_from), models, updater)
    for name, scheduler in updater.schedulers.items():
        lr = lrs[name]
        scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        for group, factor in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):
            group["initial_lr"], group["lr"] = lr, lr * factor(scheduler.last_epoch)
    return position


def fail_once_if_asked(config: TrainConfig, rank: int, step: int) -> None:
    """Test-only fault injection: rank 0 raises once at ``run.fail_once_at_step``."""
    folder = run_dir(config)
    if rank != 0 or step != config.run.fail_once_at_step or folder is None:
        return
    marker = folder / FAIL_MARKER
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure at step {step} (run.fail_once_at_step)")


def staging_folder(location: str) -> Path:
    """An empty local folder for a remote run folder's logs: the same path for the same run (MLflow's store
    records absolute artifact paths)."""
    folder = Path(tempfile.gettempdir()) / "colorray-staging" / hashlib.sha1(location.encode()).hexdigest()[:16]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


class Artifacts:
    """Rank 0's console lines (one per epoch), metrics log, TensorBoard scalars, sample grids and tracker."""

    def __init__(self, config: TrainConfig, rank: int):
        self.config = config
        self.active = rank == 0
        self.rate = 0.0  # training images/s of the epoch so far
        self.selection = resolve_selection(config.run.metric, config.run.mode)[0] if self.active else ""
        self.folder, self.remote, self.writer, self.tracker = None, None, None, tracking.Tracker()
        if not self.active:
            return
        from torch.utils.tensorboard import SummaryWriter

        location = run_location(config)
        self.folder = Path(location)
        if storage.is_uri(location):
            self.remote, self.folder = location, staging_folder(location)
            for kept in (METRICS_FILE, tracking.MLFLOW_DB, tracking.MLFLOW_ARTIFACTS):  # what goes on across resumes
                if storage.exists(storage.join(location, kept)):
                    storage.download(storage.join(location, kept), self.folder / kept)
        self.writer = SummaryWriter(str(self.folder / "tensorboard"))
        self.tracker = tracking.open_tracker(config, self.folder)

    def log_progress(self, epoch, step, batch, batches, rate, losses) -> None:
        """Called after every step: TensorBoard every run.log_every_steps, the console every run.print_every_steps."""
        if not self.active:
            return
        self.rate, run = rate, self.config.run
        if run.print_every_steps and step % run.print_every_steps == 0 and batch < batches:
            parts = " ".join(f"{name.removeprefix('train/')} {value:.4f}" for name, value in losses.items())
            logger.info(console.clip(f"epoch {epoch + 1}/{run.epochs} batch {batch}/{batches} step {step} | "
                                     f"{rate:.1f} img/s | {parts}", console.WORKER_WIDTH))
        if self.writer is not None and (step % run.log_every_steps == 0 or batch == batches):
            for name, value in losses.items():
                self.writer.add_scalar(name, value, step)

    def log_validation(self, epochs_done, step, metrics, samples, seconds, epoch_end: bool) -> None:
        """One validation: a console line, a metrics.jsonl line, TensorBoard scalars and the sample grid."""
        if not self.active:
            return
        logger.info(console.epoch_line(self.config, epochs_done + (0 if epoch_end else 1), step, metrics, self.rate,
                                       seconds, self.selection))
        if self.folder is None:
            return
        with open(self.folder / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
        for name, value in metrics.items():
            if name.startswith("val/") or name.endswith(("/skipped_corrupt", "/corrupt_share")):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()
        grid = None
        if samples is not None:
            grid = self.folder / "samples" / (f"epoch-{epochs_done:03d}.png" if epoch_end else f"step-{step:07d}.png")
            grid.parent.mkdir(exist_ok=True)
            torchvision.utils.save_image(samples, grid)
        self.tracker.log_validation(step, metrics, grid)
        self._upload()

    def close(self) -> None:
        """End the tracked run (rank 0); the last upload of a remote run folder, whose staging folder goes."""
        self.tracker.close()
        if self.writer is not None:
            self.writer.close()
        self._upload()
        if self.remote:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _upload(self) -> None:
        if self.remote:
            storage.upload(self.folder, self.remote)


def best_checkpoint(config: TrainConfig, result):
    """The kept checkpoint with the best ``run.metric`` by ``colorray.metrics.select_best``; else the latest."""
    metric, mode = resolve_selection(config.run.metric, config.run.mode)
    kept = sorted(result.best_checkpoints or [], key=lambda item: item[1].get("step", 0))
    best = select_best(kept, metric, mode)
    return best if best is not None else (result.checkpoint, result.metrics or {})


def finish(config: TrainConfig, result) -> str:
    """Copy the selected and the last generator into the run folder; the closing lines that say where everything is."""
    checkpoint, metrics = best_checkpoint(config, result)
    metric, _ = resolve_selection(config.run.metric, config.run.mode)
    folder = run_location(config)
    lines = [f"colorray.train: finished run '{config.run.name}'"]
    if metric in metrics:
        lines.append(f"  selected by {metric}: {metrics[metric]:.4f} (epoch {metrics.get('epoch')}, "
                     f"step {metrics.get('step')})")
    where = storage.uri_of(folder, checkpoint.path) if checkpoint else None
    lines.append(f"  checkpoint: {where or 'none'}")
    if checkpoint is not None:
        export, last = storage.join(folder, EXPORT_FILENAME), storage.join(folder, LAST_EXPORT_FILENAME)
        for source, target in ((where, export), (storage.uri_of(folder, result.checkpoint.path), last)):
            storage.write_bytes(target, storage.read_bytes(storage.join(source, EXPORT_FILENAME)))  # atomically
        samples = storage.list_files(storage.join(folder, "samples"), by_time=True)
        lines += [
            f"  generator export: {export}",
            f"  last generator export (step {(result.metrics or {}).get('step')}): {last}",
            f"  metrics: {storage.join(folder, METRICS_FILE)}",
            f"  tensorboard --logdir {storage.join(folder, 'tensorboard')}",
            f"  samples: {storage.join(folder, 'samples', samples[-1]) if samples else 'none'}",
        ]
    return "\n".join(lines)
