"""The exported generator artifact: the one thing Serve, Evaluate and colorize load.

An export is a single ``generator.pt`` file holding only plain data (loadable
with ``torch.load(weights_only=True)``): the registry name and options of the
model, its weights, the color settings it was trained with, its training
resolution and metrics. It needs no training config or training code to load.

``load_generator`` accepts an export file, a folder holding ``generator.pt``
(a Tune ``best/`` folder, a training checkpoint, a finished run folder, whose
``generator.pt`` is the selected checkpoint's and ``generator-last.pt`` the
last one's) or a run folder still without one (stopped or running: its
checkpoint chosen by the run's own selection rule, ``colorray.metrics.select_best``),
or Zhang et al.'s released ECCV16 state dict (``colorization_release_v2-9b330a0b.pth``,
read as an ``eccv16`` export by ``colorray.models.eccv16.release_export``),
as a local path or an ``s3://`` / ``gs://`` URI (a bucket's run folder needs its
``generator.pt``), and fails with a clear ``ExportError`` on anything else.
"""

from __future__ import annotations

import datetime
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from colorray import color
from colorray.data import storage
from colorray.metrics import AUTO, resolve_selection, select_best
from colorray.models import create_model, eccv16

EXPORT_FORMAT = "colorray-generator"
EXPORT_VERSION = 1
EXPORT_FILENAME = "generator.pt"
LAST_EXPORT_FILENAME = "generator-last.pt"
RUN_CONFIG_FILE = "config.yaml"


class ExportError(ValueError):
    """A path that does not hold a loadable colorray generator export."""


@dataclass
class GeneratorInfo:
    model: str
    options: dict[str, Any]
    output_space: str
    image_size: int
    temperature: float = color.ANNEALED_MEAN_T
    metrics: dict[str, float] = field(default_factory=dict)
    created: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "options": self.options,
            "output_space": self.output_space,
            "image_size": self.image_size,
            "temperature": self.temperature,
            "metrics": self.metrics,
            "created": self.created,
            "source": self.source,
        }


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under a DistributedDataParallel (or compiled) wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def export_payload(model: nn.Module, image_size: int, metrics: dict[str, float] | None = None) -> dict[str, Any]:
    bare = unwrap(model)
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model": bare.registry_name,
        "options": dict(bare.registry_options),
        "output_space": bare.output_space,
        "image_size": int(image_size),
        "color": {"l_scale": color.L_SCALE, "ab_scale": color.AB_SCALE,
                  "bins": int(getattr(bare, "bins", color.ab_bins()).shape[0])},
        "temperature": color.ANNEALED_MEAN_T,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "state_dict": {k: v.detach().cpu() for k, v in bare.state_dict().items()},
    }


def write_atomically(path: str | Path, write: Callable[[str], Any]) -> Path:
    """``write(temporary_path)`` beside ``path``, then rename it to ``path``: readers see the old file or the
    whole new one, never half of one, whatever interrupts the writing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_atomic(payload: Any, path: str | Path) -> Path:
    """torch.save without a half-written file on failure (``write_atomically``)."""
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


def save_generator(
    path: str | Path, model: nn.Module, image_size: int, metrics: dict[str, float] | None = None
) -> Path:
    """Write ``model`` (built by ``create_model``) as a standalone export file."""
    return save_atomic(export_payload(model, image_size, metrics), path)


def find_export(path: str | Path) -> Path | str:
    """The export file at ``path`` or inside the folder ``path`` (local path or URI)."""
    if storage.is_uri(str(path)):
        return _find_remote_export(str(path))
    path = Path(path).expanduser()
    if not path.exists():
        raise ExportError(f"model path not found: {path}")
    if path.is_dir():
        for candidate in (path / EXPORT_FILENAME, path / "best" / EXPORT_FILENAME):
            if candidate.is_file():
                return candidate
        selected = select_run_export(path)
        if selected is not None:
            return selected
        raise ExportError(
            f"{path} holds no {EXPORT_FILENAME}: expected a colorray export, a Tune best/ folder, "
            "a training checkpoint or a finished training run folder"
        )
    return path


def select_run_export(run: Path) -> Path | None:
    """The export of the checkpoint a run folder's selection rule picks (the latest without scores), or None."""
    exports = sorted(run.glob(f"checkpoint_*/{EXPORT_FILENAME}"))
    if not exports:
        return None
    rule = {}
    if (run / RUN_CONFIG_FILE).is_file():
        rule = (yaml.safe_load((run / RUN_CONFIG_FILE).read_text()) or {}).get("run", {})
    metric, mode = resolve_selection(rule.get("metric", AUTO), rule.get("mode", AUTO))
    best = select_best([(file, _export_metrics(file)) for file in exports], metric, mode)
    return best[0] if best is not None else exports[-1]


def _export_metrics(file: Path) -> dict[str, float]:
    """The metrics an export file records; none for a file that does not load (it is then never selected)."""
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a torn checkpoint of a crashed run: not a candidate
        return {}
    return payload.get("metrics", {}) if isinstance(payload, dict) else {}


def _find_remote_export(uri: str) -> str:
    try:
        if storage.is_file(uri):
            return uri
        for candidate in (storage.join(uri, EXPORT_FILENAME), storage.join(uri, "best", EXPORT_FILENAME)):
            if storage.is_file(candidate):
                return candidate
        found = storage.is_dir(uri)
    except storage.StorageError as error:
        raise ExportError(str(error)) from None
    if not found:
        raise ExportError(f"model path not found: {uri}")
    raise ExportError(f"{uri} holds no {EXPORT_FILENAME}: expected a colorray export, a Tune best/ folder, "
                      "a training checkpoint or a finished training run folder")


def read_export(path: str | Path) -> tuple[dict[str, Any], Path | str]:
    file = find_export(path)
    try:
        source = io.BytesIO(storage.read_bytes(file)) if isinstance(file, str) else file
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's message for foreign pickles runs to many lines: keep its first
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{file} is not a colorray generator export (it does not load as plain data: {reason})") from None
    if eccv16.is_release(payload):
        return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, **eccv16.release_export(payload)}, file
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{file} is not a colorray generator export (no '{EXPORT_FORMAT}' header)")
    if payload.get("version", 0) > EXPORT_VERSION:
        raise ExportError(f"{file} was written by a newer colorray (export version {payload['version']})")
    return payload, file


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, GeneratorInfo]:
    """Build the exported generator in eval mode on ``device`` with its info."""
    payload, file = read_export(path)
    options = dict(payload["options"])
    if "pretrained" in options:
        options["pretrained"] = "none"  # the export's own weights replace any ImageNet start
    model = create_model(payload["model"], **options)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise ExportError(f"{file}: weights do not fit model '{payload['model']}': {error}") from None
    info = GeneratorInfo(
        model=payload["model"],
        options=payload["options"],
        output_space=payload["output_space"],
        image_size=payload["image_size"],
        temperature=payload.get("temperature", color.ANNEALED_MEAN_T),
        metrics=payload.get("metrics", {}),
        created=payload.get("created", ""),
        source=str(file),
    )
    return model.to(device).eval(), info
