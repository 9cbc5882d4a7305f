"""What every Ray Train worker runs: ``train_loop_per_worker`` and its ``train_step``.

Each worker streams its own split of the shards, converts uint8 RGB to Lab on its device,
trains the generator (and a PatchGAN critic in GAN mode) under DDP, validates
every epoch (and every ``run.val_every_steps``) and reports metrics and
checkpoints through ``ray.train.report``. Only validated checkpoints carry the
selection metric; those saved in between (``run.checkpoint_every_steps``) are
for resuming and report it as NaN, so they are never selected. Updates go
through ``colorray.train.stepping.Updater`` (mixed precision, gradient
accumulation, clipping, the generator's EMA).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from typing import Iterator

import ray
import ray.train
import torch

from colorray import color
from colorray.config import TrainConfig, config_from_dict
from colorray.data.loader import resolve_data, train_loader, val_loader
from colorray.data.prior import load_prior
from colorray.export import unwrap
from colorray.losses.objective import Objective
from colorray.models import create_model, split_class_logits
from colorray.train import checkpoints, console, preflight
from colorray.train.optim import build_optimizer, build_scheduler
from colorray.train.stepping import Updater
from colorray.train.validation import corrupt_data_problem, skipped_metrics, validate


def train_loop_per_worker(config_dict: dict) -> None:
    config = config_from_dict(config_dict)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    console.one_line_warnings(rank)
    device = ray.train.torch.get_device()
    torch.manual_seed(config.run.seed + rank)

    train_set, val_set = resolve_data(config.data)
    steps_per_epoch = len(train_loader_for(config, train_set, rank, world_size, epoch=0))
    prior = load_prior(config.loss.prior) if config.loss.prior else None
    models = build_models(config, train_set.classes, device)
    optimizers = {name: build_optimizer(model.parameters(), config.optim, lr_for(config, name))
                  for name, model in models.items()}
    updates_per_epoch = math.ceil(steps_per_epoch / config.optim.accumulate_steps)
    schedulers = {name: build_scheduler(opt, config.optim, updates_per_epoch, epochs_for(config, name))
                  for name, opt in optimizers.items()}
    updater = Updater(config, models, optimizers, schedulers, device)
    position = checkpoints.restore_or_init(config, models, updater, {name: lr_for(config, name) for name in optimizers})
    space = models["generator"].output_space
    models = {name: ray.train.torch.prepare_model(model) for name, model in models.items()}
    if config.run.compile:
        models = {name: torch.compile(model) for name, model in models.items()}
    objective = Objective(config, prior, device, getattr(unwrap(models["generator"]), "bins", None))
    artifacts = checkpoints.Artifacts(config, rank)
    step, last_val = position.step, position.val_metrics

    def validate_and_report(losses: dict, epochs_done: int, batches_done: int, clock: float,
                            counts: dict | None = None) -> dict[str, float]:
        """Validate the generator, log it, and report a checkpoint scored by this validation."""
        val, samples = validate(config, updater.generator(models["generator"]),
                                val_loader_for(config, val_set, rank, world_size), device, prior, rank)
        metrics = {**losses, **(counts or {}), **val, "epoch": epochs_done, "step": step}
        artifacts.log_validation(epochs_done, step, metrics, samples, time.perf_counter() - clock,
                                 epoch_end=batches_done == 0)
        report(metrics, config, models, updater, checkpoints.Position(epochs_done, batches_done, step, val), rank,
               samples)
        return val

    for epoch in range(position.epoch, config.run.epochs):
        for model in models.values():
            model.train()
        loader = train_loader_for(config, train_set, rank, world_size, epoch)
        clock, seen, meter, losses, skipped = time.perf_counter(), 0, LossMeter(), {}, 0
        for batch_index, batch in enumerate(loader):
            skipped += int(batch["decode_errors"])
            if epoch == position.epoch and batch_index < position.batches_done:
                continue
            checkpoints.fail_once_if_asked(config, rank, step)
            rgb = batch["rgb"].to(device, non_blocking=True)
            L, ab = color.rgb_to_model_inputs(rgb)
            target = color.training_target(space, rgb, ab)
            labels = batch["label"].to(device)
            if config.run.channels_last:
                L = L.contiguous(memory_format=torch.channels_last)
            adversarial = config.gan.enabled and epoch >= config.gan.pretrain_epochs
            updater.begin(batch_index, len(loader))
            with updater.sync(models):
                meter.add(train_step(models, updater, objective, L, target, labels, adversarial))
            step += 1
            seen += L.shape[0] * world_size
            validating = every(config.run.val_every_steps, step) and batch_index + 1 < len(loader)
            if losses_due(config, step) or batch_index + 1 == len(loader) or validating:
                losses = meter.read()  # the one host sync of the interval
            rate = seen / (time.perf_counter() - clock)
            artifacts.log_progress(epoch, step, batch_index + 1, len(loader), rate, losses)
            if validating:
                last_val = validate_and_report(losses, epoch, batch_index + 1, clock)
            elif every(config.run.checkpoint_every_steps, step):
                state = checkpoints.Position(epoch, batch_index + 1, step, last_val)
                report({**losses, **unvalidated(config), "epoch": epoch, "step": step}, config, models, updater, state,
                       rank)

        counts = skipped_metrics("train", skipped, len(loader) * config.data.batch_size)
        last_val = validate_and_report(losses, epoch + 1, 0, clock, counts)
        if corrupt_data_problem(config, {**counts, **last_val}):
            break  # on every rank (the counts are all-reduced); the driver reports why from the last metrics
    artifacts.close()


def every(interval: int, step: int) -> bool:
    return interval > 0 and step % interval == 0


def unvalidated(config: TrainConfig) -> dict[str, float]:
    """What a checkpoint saved between validations reports for a val/ selection metric: NaN, never selected."""
    return {config.run.metric: float("nan")} if config.run.metric.startswith("val/") else {}


def train_step(models, updater: Updater, objective, L, target, labels, adversarial) -> dict[str, torch.Tensor]:
    """One batch: forward passes and losses under the run's autocast, backward, and (on stepping batches) the steps."""
    generator = models["generator"]
    with updater.autocast():
        prediction, class_logits = split_class_logits(generator(L))
    losses: dict[str, torch.Tensor] = {}
    if adversarial:
        critic = models["critic"]
        real_pair, fake_pair = torch.cat([L, target], 1), torch.cat([L, prediction], 1)
        with updater.autocast():
            losses.update(objective.critic(critic(real_pair), critic(fake_pair.detach())))
        updater.backward("critic", losses["critic"])
        updater.step("critic", critic)
        with frozen(critic), updater.autocast():
            critic_fake = unwrap(critic)(fake_pair)
            losses.update(objective.generator(prediction, target, L, critic_fake, class_logits, labels))
    else:
        with updater.autocast():
            losses.update(objective.supervised(prediction, target, L, class_logits, labels))
    updater.backward("generator", losses["total"])
    updater.step("generator", generator)
    return losses


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """The critic takes no gradient from the generator's loss (pix2pix), and accumulates none across batches."""
    model.requires_grad_(False)
    try:
        yield
    finally:
        model.requires_grad_(True)


def report(metrics, config, models, updater, position, rank, samples=None) -> None:
    """Report on every rank (a barrier); only rank 0 attaches a checkpoint."""
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        checkpoints.save(folder, config, models, updater, position, metrics, samples)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def losses_due(config: TrainConfig, step: int) -> bool:
    """Whether this step's losses are logged (TensorBoard every log_every_steps, console every print_every_steps)."""
    run = config.run
    return step % run.log_every_steps == 0 or bool(run.print_every_steps and step % run.print_every_steps == 0)


class LossMeter:
    """Sums of the step losses kept on the device; ``read`` gives their means (``train/<name>``) with one sync.

    Reading a loss with ``float()`` every step would make the host wait for the
    device each step; the loop reads once per ``run.log_every_steps``.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.steps += 1

    def read(self) -> dict[str, float]:
        """Means since the last read, then start over."""
        if not self.steps:
            return {}
        names = list(self.sums)
        totals = torch.stack([self.sums[name] for name in names]).tolist()
        means = {f"train/{name}": total / self.steps for name, total in zip(names, totals)}
        self.sums, self.steps = {}, 0
        return means


def build_models(config: TrainConfig, classes: dict, device: torch.device) -> dict[str, torch.nn.Module]:
    models = {"generator": create_model(config.model.name, **preflight.model_options(config, classes))}
    if config.gan.enabled:
        models["critic"] = create_model(config.gan.discriminator, **preflight.critic_options(config))
    memory_format = torch.channels_last if config.run.channels_last else torch.contiguous_format
    return {name: model.to(device, memory_format=memory_format) for name, model in models.items()}


def lr_for(config: TrainConfig, model_name: str) -> float:
    return config.gan.lr if model_name == "critic" else config.optim.lr


def epochs_for(config: TrainConfig, model_name: str) -> int:
    """Epochs each model's schedule spans: the critic only trains after the generator's pretraining."""
    return config.run.epochs - config.gan.pretrain_epochs if model_name == "critic" else config.run.epochs


def train_loader_for(config: TrainConfig, shards, rank: int, world_size: int, epoch: int):
    data = config.data
    return train_loader(
        shards, image_size=data.image_size, batch_size=data.batch_size, rank=rank, world_size=world_size,
        epoch=epoch, seed=config.run.seed, loader_workers=data.loader_workers,
        shuffle_buffer=data.shuffle_buffer, samples_per_epoch=data.samples_per_epoch,
    )


def val_loader_for(config: TrainConfig, shards, rank: int, world_size: int):
    data = config.data
    return val_loader(shards, image_size=data.image_size, batch_size=data.batch_size, rank=rank,
                      world_size=world_size, limit=data.val_samples, loader_workers=data.loader_workers)
