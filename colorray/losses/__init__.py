"""The loss registry: every training objective, built by name.

``create_loss(name, **options)`` builds any registered loss as an
``nn.Module``; each registers itself in a file of this package with its
family, which fixes how it is called:

- ``"pixel"``: ``loss(pred_ab, true_ab, L)`` -> scalar, all normalized
  (ab / 110, L / 50 - 1), same shape; pred may be any float dtype;
- ``"bins"``: ``loss(logits, true_ab, L)`` with logits (N, Q, h, w) over
  ``color.ab_bins()``, at a resolution at most that of true_ab;
- ``"class"``: ``loss(class_logits, labels)`` with int64 labels, -1 = unlabeled;
- ``"adversarial"``: ``loss(critic_logits, target_is_real)``.

Also here: ``combined_generator_loss`` (the HASHeD study's objective). The
rebalancing losses read their ab prior with ``colorray.data.prior.load_prior``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import torch
from torch import nn

from colorray.registry import Registry

LOSSES = Registry("loss")


def _import_families() -> None:
    """Import every module of this package so that each loss registers itself."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def create_loss(name: str, **options: Any) -> nn.Module:
    """Build a registered loss; its ``family`` and ``registry_name`` are set on it."""
    _import_families()
    loss = LOSSES.create(name, **options)
    loss.family = LOSSES.facts(name)["family"]
    loss.registry_name = name
    return loss


def list_losses(family: str | None = None) -> list[str]:
    _import_families()
    return [n for n in LOSSES.names() if family is None or LOSSES.facts(n)["family"] == family]


def loss_family(name: str) -> str:
    _import_families()
    return LOSSES.facts(name)["family"]


def combined_generator_loss(
    adversarial: torch.Tensor,
    l1: torch.Tensor,
    perceptual: torch.Tensor | None = None,
    lam: float = 100.0,
    gamma: float = 1.0,
) -> torch.Tensor:
    """The HASHeD objective ``gamma * (adversarial + lam * l1) + (1 - gamma) * perceptual``."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in 0..1, got {gamma}")
    objective = gamma * (adversarial + lam * l1)
    if gamma == 1.0:
        return objective
    if perceptual is None:
        raise ValueError(f"gamma={gamma} < 1 mixes in a perceptual loss, but none was given")
    return objective + (1.0 - gamma) * perceptual


