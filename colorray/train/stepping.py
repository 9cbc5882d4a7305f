"""How the losses of a batch become weight updates: mixed precision, gradient accumulation, clipping, EMA.

``Updater`` owns the optimizers and learning-rate schedules of one worker and
applies the run's settings:

- ``run.amp``: ``none``; ``fp16``: forward passes and losses under float16
  autocast, each optimizer with its own ``torch.amp.GradScaler`` so small
  gradients do not underflow; ``bf16``: bfloat16 autocast (no scaling needed),
  refused on a GPU without bfloat16; ``auto``: bf16 on a GPU that has it, else
  fp16 on a GPU, none on the CPU. The old boolean reads ``true`` = auto,
  ``false`` = none.
- ``optim.accumulate_steps`` k: each batch's loss is divided by k and the
  gradients of k batches summed; optimizers (and their schedules) step every k
  batches and at each epoch's end. Under DDP gradients are all-reduced only on
  the stepping batch (``no_sync`` on the others).
- ``optim.grad_clip``: the gradient norm is clipped (after unscaling) before each step.
- ``run.ema_decay`` d > 0: an exponential moving average of the generator's
  weights and buffers (``torch.optim.swa_utils.AveragedModel``), updated after
  every generator step; it is what validation scores and what is exported.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from colorray.config import TrainConfig
from colorray.export import unwrap

AMP_MODES = ("none", "fp16", "bf16", "auto")


def check_stepping(config: TrainConfig) -> None:
    """Reject bad mixed-precision, accumulation and EMA settings before anything runs."""
    if config.run.amp not in AMP_MODES:
        raise ValueError(f"run.amp must be one of {', '.join(AMP_MODES)} (or true/false), got {config.run.amp!r}")
    if config.optim.accumulate_steps < 1:
        raise ValueError(f"optim.accumulate_steps must be >= 1, got {config.optim.accumulate_steps}")
    if not 0.0 <= config.run.ema_decay < 1.0:
        raise ValueError(f"run.ema_decay must be in [0, 1) (0: off), got {config.run.ema_decay}")


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``run.amp`` on ``device``, or None for full precision."""
    on_gpu = device.type == "cuda"
    bf16_ok = not on_gpu or torch.cuda.is_bf16_supported()
    if mode == "auto":
        return (torch.bfloat16 if bf16_ok else torch.float16) if on_gpu else None
    if mode == "bf16" and not bf16_ok:
        raise ValueError(f"run.amp=bf16, but {torch.cuda.get_device_name(device)} has no bfloat16: "
                         "use run.amp=fp16 or auto")
    return {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}[mode]


class Updater:
    def __init__(self, config: TrainConfig, models: dict[str, nn.Module], optimizers: dict, schedulers: dict,
                 device: torch.device):
        self.optimizers, self.schedulers = optimizers, schedulers
        self.accumulate, self.clip = config.optim.accumulate_steps, config.optim.grad_clip
        self.device_type = device.type
        self.dtype = amp_dtype(config.run.amp, device)
        self.scalers = {name: torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
                        for name in optimizers}
        self.decay = config.run.ema_decay
        self.ema = self._new_ema(models["generator"]) if self.decay > 0 else None
        self.stepping = True

    def _new_ema(self, generator: nn.Module) -> AveragedModel:
        return AveragedModel(unwrap(generator), multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def begin(self, batch_index: int, batches: int) -> None:
        """Say where a batch falls: the optimizers step on every k-th batch and on an epoch's last."""
        self.stepping = (batch_index + 1) % self.accumulate == 0 or batch_index + 1 == batches

    @contextlib.contextmanager
    def sync(self, models: dict[str, nn.Module]) -> Iterator[None]:
        """DDP all-reduces gradients only on the stepping batch of an accumulation."""
        with contextlib.ExitStack() as stack:
            if not self.stepping:
                for model in models.values():
                    if hasattr(model, "no_sync"):
                        stack.enter_context(model.no_sync())
            yield

    def backward(self, name: str, loss: torch.Tensor) -> None:
        self.scalers[name].scale(loss / self.accumulate).backward()

    def step(self, name: str, model: nn.Module) -> None:
        """On a stepping batch: unscale, clip, step ``name``'s optimizer and schedule, update the EMA."""
        if not self.stepping:
            return
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        if self.clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        self.schedulers[name].step()
        if name == "generator" and self.ema is not None:
            self.ema.update_parameters(unwrap(model))

    def generator(self, generator: nn.Module) -> nn.Module:
        """The generator to validate and export: its EMA when ``run.ema_decay`` is on."""
        return self.ema.module if self.ema is not None else generator

    def state_dict(self) -> dict:
        return {"scalers": {name: scaler.state_dict() for name, scaler in self.scalers.items()},
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict | None, generator: nn.Module) -> None:
        """Restore a checkpoint's state; an EMA the checkpoint lacks restarts from the restored ``generator``."""
        state = state or {}
        for name, scaler_state in state.get("scalers", {}).items():
            if name in self.scalers and scaler_state:
                self.scalers[name].load_state_dict(scaler_state)
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:
                self.ema = self._new_ema(generator)
