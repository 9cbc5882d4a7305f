"""Optimizers and learning-rate schedules built from ``OptimConfig`` (Adam/AdamW; warmup + cosine, step, constant)."""

from __future__ import annotations

import math

import torch

from colorray.config import OptimConfig

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("cosine", "step", "constant")


def check_optim(optim: OptimConfig) -> None:
    if optim.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{optim.name}' (optim.name); known: {', '.join(OPTIMIZERS)}")
    if optim.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule '{optim.schedule}' (optim.schedule); known: {', '.join(SCHEDULES)}")


def build_optimizer(params, optim: OptimConfig, lr: float | None = None) -> torch.optim.Optimizer:
    return OPTIMIZERS[optim.name](
        params, lr=lr or optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(1, steps_per_epoch * epochs)
    warmup = optim.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if optim.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if optim.schedule == "step":
            return optim.step_gamma ** (step // max(1, optim.step_epochs * steps_per_epoch))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
