"""The model registry: every colorizer and discriminator, built by name.

``create_model(name, **options)`` builds any registered network; each
architecture registers itself in its own file of this package with the space it
predicts: one of ``colorray.color.OUTPUT_SPACES`` (``"ab"``, ``"bins"``,
``"rgb"``, defined and converted there; a ``bins`` model decodes over its own
``bins`` buffer, ``colorray.color.ab_bins`` or Zhang et al.'s 313), or
``"critic"`` for a discriminator's patch logits.

Generators take normalized L (N, 1, H, W) of any H and W. A model with a
classification head (``fusion``) returns ``(prediction, class_logits)``.
``predict_ab`` turns any generator's output into full-resolution ab.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import torch
from torch import nn

from colorray import color
from colorray.registry import Registry

MODELS = Registry("model")



def _import_architectures() -> None:
    """Import every module of this package so that each architecture registers itself."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def create_model(name: str, **options: Any) -> nn.Module:
    """Build a registered model, recording on it ``registry_name``, ``registry_options`` and ``output_space``."""
    _import_architectures()
    model = MODELS.create(name, **options)
    model.output_space = MODELS.facts(name)["output"]
    model.registry_name = name
    # options a builder derived (eccv16 from Zhang et al.'s file: bins='zhang') rebuild the same network from an export
    model.registry_options = {**options, **getattr(model, "implied_options", {})}
    return model


def list_models(output: str | None = None) -> list[str]:
    _import_architectures()
    return [n for n in MODELS.names() if output is None or MODELS.facts(n)["output"] == output]


def output_space(name: str) -> str:
    _import_architectures()
    return MODELS.facts(name)["output"]


def model_option_names(name: str) -> list[str]:
    _import_architectures()
    return MODELS.option_names(name)


def split_class_logits(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A generator's output as ``(prediction, class_logits or None)``."""
    if isinstance(output, tuple):
        return output[0], output[1]
    return output, None


def predict_ab(model: nn.Module, L_norm: torch.Tensor, temperature: float = color.ANNEALED_MEAN_T) -> torch.Tensor:
    """Run a generator on normalized L and return normalized ab at the input's resolution."""
    prediction, _ = split_class_logits(model(L_norm))
    return color.prediction_to_ab(prediction, model.output_space, L_norm, temperature, getattr(model, "bins", None))
