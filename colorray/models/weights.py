"""Pretrained ImageNet weights, found locally or not at all.

colorray never downloads weights. A backbone asked for with
``pretrained="imagenet"`` is read from torchvision's file name in the torch hub
cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``);
``pretrained=PATH`` reads that file. When the file is absent the error names
the file and where it was looked for, so a user behind a firewall can copy it
there. Nothing ever falls back to random weights silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

TORCHVISION_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
    "alexnet": "alexnet-owt-7be5be79.pth",
}


class PretrainedWeightsMissing(FileNotFoundError):
    """The pretrained weights a model, loss or metric needs are not on this machine."""


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def expected_path(arch: str) -> Path:
    if arch not in TORCHVISION_FILES:
        raise KeyError(f"no known ImageNet weights for '{arch}'; known: {', '.join(TORCHVISION_FILES)}")
    return hub_checkpoint_dir() / TORCHVISION_FILES[arch]


def resolve_weights_path(arch: str, pretrained: str) -> Path:
    """The file to load for ``pretrained`` ('imagenet' or a path); raises if it is absent."""
    path = expected_path(arch) if pretrained == "imagenet" else Path(pretrained).expanduser()
    if not path.is_file():
        url = f"https://download.pytorch.org/models/{TORCHVISION_FILES.get(arch, '')}"
        raise PretrainedWeightsMissing(
            f"pretrained {arch} weights not found at {path}. colorray does not download weights: "
            f"copy torchvision's {TORCHVISION_FILES.get(arch, arch + ' file')} ({url}) there, "
            f"pass pretrained=PATH, or use pretrained=none to train from scratch"
        )
    return path


def load_state_dict(arch: str, pretrained: str) -> dict[str, torch.Tensor]:
    """The state dict of ``arch``'s pretrained weights ('imagenet' or a path to a .pth file)."""
    path = resolve_weights_path(arch, pretrained)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file: say which file
        raise PretrainedWeightsMissing(f"could not read {arch} weights from {path}: {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedWeightsMissing(f"{path} does not hold a state dict")
    return state


def load_into(module: nn.Module, arch: str, pretrained: str, source_key: Callable[[str], str] = str) -> None:
    """Fill ``module`` from ``arch``'s pretrained weights ('imagenet' or a path); 'none' loads nothing.

    ``source_key`` maps each key of ``module.state_dict()`` to its key in the
    checkpoint; extra checkpoint tensors are ignored, so a partial file holding
    only the needed layers works. A needed tensor the file lacks, or one of
    the wrong shape, raises ``ValueError``: random weights are never left in place.
    """
    if not isinstance(pretrained, str):
        raise TypeError(f"pretrained must be 'none', 'imagenet' or a path, got {pretrained!r}")
    if pretrained == "none":
        return
    state = load_state_dict(arch, pretrained)
    wanted = {key: source_key(key) for key in module.state_dict()}
    # checkpoints older than BatchNorm's step counter lack num_batches_tracked; torch accepts that
    missing = sorted(s for k, s in wanted.items() if s not in state and not k.endswith("num_batches_tracked"))
    if missing:
        raise ValueError(
            f"the {arch} weights '{pretrained}' do not fit: they lack {len(missing)} tensors this network "
            f"needs ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})"
        )
    try:
        module.load_state_dict({k: state[s] for k, s in wanted.items() if s in state}, strict=False)
    except RuntimeError as error:
        raise ValueError(f"the {arch} weights '{pretrained}' do not fit: {error}") from None
