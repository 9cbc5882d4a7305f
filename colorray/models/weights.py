"""Pretrained ImageNet weights: found in the torch hub cache, else downloaded there once per node.

A backbone asked for with ``pretrained="imagenet"`` is read from torchvision's
file (``torchvision.models.get_weight``'s URL and name) in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``);
``pretrained=PATH`` reads that file. A missing cache file is downloaded on
first use with torch's own downloader (SHA-256 checked against the hash in
torchvision's file name, written to a temporary file and moved into place),
under a ``filelock`` lock beside the file so the workers of one node download
it once, announced by one line on stderr. ``COLORRAY_WEIGHTS_URL`` names a
mirror (a base URL holding torchvision's file names); ``COLORRAY_OFFLINE=1``
forbids downloads, and a missing file then raises one error naming the file
and where to put it. A failed download is not retried within the process.
Nothing ever falls back to random weights silently.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import filelock
import torch
import torchvision
from torch import nn

SOURCES = {  # arch -> torchvision's weights entry (its URL and file name)
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "vgg19": "VGG19_Weights.IMAGENET1K_V1",
    "alexnet": "AlexNet_Weights.IMAGENET1K_V1",
    "inception_v3": "Inception_V3_Weights.IMAGENET1K_V1",  # FID's feature network (colorray.metrics)
}
OFFLINE_ENV = "COLORRAY_OFFLINE"
MIRROR_ENV = "COLORRAY_WEIGHTS_URL"
_failed: dict[str, PretrainedWeightsMissing] = {}  # url -> why its download failed in this process (not retried)


def _official_url(arch: str) -> str:
    return torchvision.models.get_weight(SOURCES[arch]).url


TORCHVISION_FILES = {arch: _official_url(arch).rsplit("/", 1)[1] for arch in SOURCES}


class PretrainedWeightsMissing(FileNotFoundError):
    """The pretrained weights a model, loss or metric needs are not on this machine and cannot be fetched.

    The message is ``reason: advice``; ``reason`` alone (what is missing, where, why) suits a warning line.
    """

    def __init__(self, reason: str, advice: str = ""):
        super().__init__(f"{reason}: {advice}" if advice else reason)
        self.reason = reason


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def weights_url(arch: str) -> str:
    """Where ``arch``'s ImageNet weights are downloaded from: torchvision's URL, or the same file on the mirror."""
    if arch not in SOURCES:
        raise KeyError(f"no known ImageNet weights for '{arch}'; known: {', '.join(SOURCES)}")
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{TORCHVISION_FILES[arch]}" if mirror else _official_url(arch)


def expected_path(arch: str) -> Path:
    """Where ``arch``'s ImageNet weights live on this machine (they may not be there yet)."""
    return hub_checkpoint_dir() / Path(urlparse(weights_url(arch)).path).name


def fetch(url: str, what: str) -> Path:
    """The file at ``url`` in the torch hub cache, downloaded first if absent (once per node, under a lock)."""
    path = hub_checkpoint_dir() / Path(urlparse(url).path).name
    if path.is_file():
        return path
    if offline():
        raise PretrainedWeightsMissing(
            f"{what} weights not found at {path} and downloads are off ({OFFLINE_ENV}=1)",
            f"copy {path.name} ({url}) into {path.parent}, pass pretrained=PATH, or use pretrained=none "
            "to train from scratch",
        )
    if url in _failed:
        raise _failed[url]
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(f"{path}.lock"):
        if not path.is_file():  # another process of this node may have fetched it while we waited
            _download(url, path, what)
    return path


def _download(url: str, path: Path, what: str) -> None:
    match = torch.hub.HASH_REGEX.search(path.name)
    print(f"colorray: downloading {what} weights {url} -> {path}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, sys.stderr.isatty())
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a hash mismatch a RuntimeError
        raise _failed.setdefault(url, PretrainedWeightsMissing(
            f"could not download {what} weights {path.name} ({error})",
            f"fetch {url} into {path.parent} by hand, set {MIRROR_ENV} to a mirror holding it, "
            "or use pretrained=none to train from scratch",
        )) from None
    size = path.stat().st_size / 1e6
    print(f"colorray: downloaded {path.name} ({size:.1f} MB in {time.perf_counter() - start:.1f} s)",
          file=sys.stderr, flush=True)


def resolve_weights_path(arch: str, pretrained: str) -> Path:
    """The file to load for ``pretrained`` ('imagenet': fetched if absent; or a path); raises if unavailable."""
    if pretrained == "imagenet":
        return fetch(weights_url(arch), f"pretrained {arch}")
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedWeightsMissing(
            f"pretrained {arch} weights not found at {path}",
            f"give the path of torchvision's {TORCHVISION_FILES.get(arch, arch + ' file')}, "
            "pretrained=imagenet to fetch it, or pretrained=none to train from scratch",
        )
    return path


def load_state_dict(arch: str, pretrained: str) -> dict[str, torch.Tensor]:
    """The state dict of ``arch``'s pretrained weights ('imagenet' or a path to a .pth file)."""
    return read_state_dict(resolve_weights_path(arch, pretrained), arch)


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file; ``PretrainedWeightsMissing`` naming the file when it is absent or unreadable."""
    if not path.is_file():
        raise PretrainedWeightsMissing(f"{what} weights not found at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file: say which file
        raise PretrainedWeightsMissing(f"could not read {what} weights from {path}: {error}") from error
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
        raise ValueError(f"pretrained must be 'none', 'imagenet' or a path, got {pretrained!r}")
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
