"""Checks a training config before any worker starts, so bad input fails fast and loses nothing.

``prepare`` loads the YAML and overrides (or a stopped run's saved config for
``--resume``), fills in the run name and the selection rule (``run.metric``
and ``run.mode`` 'auto', see ``colorray.metrics.resolve_selection``) and refuses to reuse an existing run
folder; ``check`` builds the model, critic and losses once on the CPU and opens
the data, so unknown names, bad options, missing weights, priors and data all
fail here with one clear message; ``check_cluster`` compares the asked
resources with the cluster's.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Sequence

import ray
import torch

from colorray.config import (
    ConfigError,
    TrainConfig,
    absolute_location,
    apply_overrides,
    config_from_dict,
    merge_values,
    read_yaml,
    with_absolute_paths,
)
from colorray.data import storage
from colorray.data.loader import DataError, resolve_data
from colorray.data.prior import load_prior
from colorray.losses.objective import Objective, check_losses
from colorray.metrics import resolve_selection
from colorray.models import create_model, model_option_names, output_space
from colorray.registry import UnknownNameError, UnknownOptionError
from colorray.train import tracking
from colorray.train.checkpoints import RUN_CONFIG_FILE, run_location
from colorray.train.optim import check_optim
from colorray.train.stepping import check_stepping

# Configuration errors, printed as one line: colorray's own errors (ConfigError, DataError, PriorError,
# StorageError, ...) are ValueErrors; unknown names and options are KeyError/TypeError subclasses of their own.
# Any other TypeError, KeyError or AttributeError is a bug in colorray and keeps its traceback.
PREFLIGHT_ERRORS = (ValueError, UnknownNameError, UnknownOptionError, FileNotFoundError, ConnectionError)
GAN_MODES = ("vanilla", "lsgan")


def prepare(config_path: str | None, overrides: Sequence[str], resume: str | None = None) -> TrainConfig:
    values = read_yaml(config_path) if config_path else {}
    if resume:
        config = _resumed_config(resume, values, overrides)
    else:
        config = with_absolute_paths(config_from_dict(apply_overrides(values, overrides)))
        if not config.run.name:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            config.run.name = f"colorray-{config.model.name}-{stamp}"
        _check_new_run(config)
    check(config)
    return config


def selection_rule(config: TrainConfig) -> tuple[str, str]:
    """``run.metric`` and ``run.mode`` with 'auto' resolved (``colorray.metrics.resolve_selection``)."""
    try:
        return resolve_selection(config.run.metric, config.run.mode)
    except ValueError as error:
        raise ConfigError(f"run.metric/run.mode: {error}") from None
def _check_new_run(config: TrainConfig) -> None:
    """Refuse to reuse a local run folder. On s3:// and gs:// the same run.name continues the run, as in Ray
    Train (a resubmitted job or a RayJob retry relies on it): its model must then be the saved one."""
    folder = run_location(config)
    if not storage.is_uri(folder) and storage.list_files(folder):
        raise ConfigError(
            f"run '{config.run.name}' already exists at {folder}; pass --resume {folder} to continue it "
            "or choose another run.name (nothing was changed)"
        )
    saved_file = storage.join(folder, RUN_CONFIG_FILE)
    if storage.is_uri(folder) and storage.is_file(saved_file):
        _check_compatible(config, config_from_dict(read_yaml(saved_file)), f"run.name {config.run.name}")


def _resumed_config(resume: str, values: dict, overrides: Sequence[str]) -> TrainConfig:
    asked = config_from_dict(apply_overrides(values, overrides))
    folder = resume if storage.is_uri(resume) else str(Path(resume).expanduser().absolute())
    if not storage.is_file(storage.join(folder, RUN_CONFIG_FILE)):
        folder = storage.join(absolute_location(asked.run.storage_path), resume)
    if not storage.is_file(storage.join(folder, RUN_CONFIG_FILE)):
        raise ConfigError(f"--resume {resume}: no run found (looked for {RUN_CONFIG_FILE} in {resume} and {folder})")
    saved_values = read_yaml(storage.join(folder, RUN_CONFIG_FILE))
    config = with_absolute_paths(config_from_dict(apply_overrides(merge_values(saved_values, values), overrides)))
    _check_compatible(config, config_from_dict(saved_values), f"--resume {resume}")
    if not storage.is_uri(folder):
        folder = str(Path(folder).resolve())
    config.run.storage_path, config.run.name = storage.split(folder)
    return config


def _check_compatible(config: TrainConfig, saved: TrainConfig, what: str) -> None:
    critic = lambda c: (c.gan.enabled, c.gan.discriminator, c.gan.options)  # noqa: E731
    if config.model != saved.model or critic(config) != critic(saved):
        raise ConfigError(
            f"{what}: the run's checkpoints hold model {saved.model.name} {saved.model.options} "
            f"(GAN: {critic(saved)}), incompatible with the asked model {config.model.name} "
            f"{config.model.options} (GAN: {critic(config)}); start a new run instead (nothing was changed)"
        )


def check(config: TrainConfig) -> None:
    """Build everything once on the CPU; raise one clear error for the first problem found.

    Also fills in the selection rule: ``run.metric``/``run.mode`` 'auto' become the metric and direction.
    """
    for key, value in (("data.image_size", config.data.image_size), ("data.batch_size", config.data.batch_size),
                       ("run.epochs", config.run.epochs), ("scaling.num_workers", config.scaling.num_workers)):
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if config.run.val_every_steps < 0:
        raise ConfigError(f"run.val_every_steps must be >= 0, got {config.run.val_every_steps}")
    config.run.metric, config.run.mode = selection_rule(config)
    check_optim(config.optim)
    check_stepping(config)
    tracking.check_tracking(config.run.tracking)
    space = output_space(config.model.name)
    check_losses(config, space)
    train_set, _ = resolve_data(config.data)
    _check_sample_count(config, train_set)
    generator = create_model(config.model.name, **model_options(config, train_set.classes))
    bins = getattr(generator, "bins", None)
    if bins is not None and not bins.any():
        raise ConfigError(f"model {config.model.name} with bins=zhang takes Zhang et al.'s 313 bin centres from "
                          "their weights: set model.options.pretrained=zhang (or the path of "
                          "colorization_release_v2-9b330a0b.pth)")
    if config.gan.enabled:
        _check_gan(config, space)
    prior = load_prior(config.loss.prior) if config.loss.prior else None
    Objective(config, prior, torch.device("cpu"), bins)


def _check_gan(config: TrainConfig, space: str) -> None:
    gan = config.gan
    if space == "bins":
        raise ConfigError(f"gan.enabled needs a model predicting ab or rgb; '{config.model.name}' predicts bins")
    if gan.mode not in GAN_MODES:
        raise ConfigError(f"gan.mode must be one of {', '.join(GAN_MODES)}, got '{gan.mode}'")
    if not 0.0 <= gan.gamma <= 1.0:
        raise ConfigError(f"gan.gamma must be within 0..1, got {gan.gamma}")
    if output_space(gan.discriminator) != "critic":
        raise ConfigError(f"gan.discriminator '{gan.discriminator}' is not a discriminator")
    create_model(gan.discriminator, **critic_options(config))


def _check_sample_count(config: TrainConfig, train_set) -> None:
    per_step = config.scaling.num_workers * config.data.batch_size
    total = sum(train_set.sample_counts) if train_set.sample_counts else config.data.samples_per_epoch
    if total and total < per_step:
        raise DataError(
            f"the training data holds {total} samples, fewer than one step needs "
            f"(scaling.num_workers x data.batch_size = {per_step})"
        )


def model_options(config: TrainConfig, classes: dict) -> dict:
    """The generator's options, with ``num_classes`` taken from the data for class-head models."""
    options = dict(config.model.options)
    if "num_classes" in model_option_names(config.model.name) and "num_classes" not in options:
        options["num_classes"] = max(1, len(classes))
    return options


def critic_options(config: TrainConfig) -> dict:
    options = dict(config.gan.options)
    options.setdefault("in_channels", 4 if output_space(config.model.name) == "rgb" else 3)
    return options


def check_cluster(config: TrainConfig) -> None:
    scaling = config.scaling
    available = ray.cluster_resources()
    needs = {"CPU": scaling.num_workers * scaling.cpus_per_worker}
    if scaling.use_gpu:
        needs["GPU"] = scaling.num_workers * scaling.gpus_per_worker
    for resource, amount in needs.items():
        if available.get(resource, 0) < amount:
            raise ConfigError(
                f"scaling asks for {scaling.num_workers} workers needing {amount:g} {resource} in all, "
                f"but the Ray cluster has {available.get(resource, 0):g}; lower scaling.num_workers "
                f"or add nodes"
            )


def describe_data(config: TrainConfig) -> str:
    train_set, val_set = resolve_data(config.data)
    return f"train data: {train_set.description}; validation data: {val_set.description}"

