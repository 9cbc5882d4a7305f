"""The one config schema of colorray: dataclasses loaded from YAML, overridden from the CLI.

``TrainConfig`` is what ``python -m colorray.train`` runs, what every Tune trial
runs (a sweep file's ``base`` plus the sampled keys) and what the study recipes
build; each run saves it as ``config.yaml`` beside its checkpoints. Serve,
Evaluate and colorize read no training config: an exported ``generator.pt``
carries what they need (``colorray.export``).

A YAML file holds any subset of the sections; ``key=value`` overrides use dotted
paths (``model.name=unet optim.lr=2e-4 gan.enabled=true``) and their values are
parsed as YAML scalars. Unknown keys, wrongly typed values and values out of
range (a non-finite or negative learning rate, a run name that is not a plain
folder name, ...) are rejected with the key named, before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from colorray.data import storage


class ConfigError(ValueError):
    """A config file or override names a key that does not exist or has a bad value."""


PLAIN_NAME = re.compile(r"\w[\w.+-]*")  # a folder name: no separators, no leading dot, never '..'


def _check_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"config key '{key}' must be > 0, got {value}")


@dataclass
class DataConfig:
    train: str = ""  # shard folder, URL or brace pattern; empty: the embedded smoke dataset
    val: str = ""  # validation shards; empty with an empty `train`: the smoke dataset's val split
    image_size: int = 64  # training resolution (square crops)
    batch_size: int = 16  # per worker
    loader_workers: int = 1  # DataLoader processes per Ray Train worker
    shuffle_buffer: int = 256
    val_samples: int = 64  # validation images scored each epoch (0: all)
    samples_per_epoch: int = 0  # per epoch across all ranks; 0: from the shard index
    max_corrupt_share: float = 0.01  # an epoch whose skipped corrupt samples pass this share fails the run

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_corrupt_share <= 1.0:
            raise ConfigError(f"config key 'data.max_corrupt_share' must be within 0..1, got {self.max_corrupt_share}")


@dataclass
class ModelConfig:
    name: str = "cnn"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    terms: dict[str, float] = field(default_factory=lambda: {"l1": 1.0})  # name -> weight
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> constructor options
    prior: str = ""  # ab prior (.npy from `python -m colorray.prior`) for rebalancing/color weighting
    class_weight: float = 1.0 / 300.0  # alpha of the fusion net's classification head (Iizuka)


@dataclass
class GANConfig:
    enabled: bool = False
    discriminator: str = "patchgan"
    options: dict[str, Any] = field(default_factory=dict)
    mode: str = "vanilla"  # vanilla (BCE) | lsgan
    lambda_l1: float = 100.0
    gamma: float = 1.0  # gamma * (cGAN + lambda * L1) + (1 - gamma) * perceptual
    pretrain_epochs: int = 0  # generator-only L1 epochs before the adversarial phase
    lr: float = 2e-4

    def __post_init__(self) -> None:
        _check_positive("gan.lr", self.lr)


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | step | constant
    warmup_steps: int = 0
    step_epochs: int = 10  # step schedule: decay every this many epochs
    step_gamma: float = 0.5
    grad_clip: float = 0.0  # max gradient norm; 0: off
    accumulate_steps: int = 1  # sum the gradients of this many batches per optimizer step

    def __post_init__(self) -> None:
        _check_positive("optim.lr", self.lr)


@dataclass
class ScalingSettings:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0


@dataclass
class RunSettings:
    name: str = ""  # empty: colorray-<model>-<timestamp>
    storage_path: str = "runs"  # local folder, NFS path, s3:// or gs:// URI (docs/storage.md)
    epochs: int = 8
    seed: int = 0
    amp: str | bool = "none"  # none | fp16 (with GradScaler) | bf16 | auto (GPU: bf16 if it has it, else fp16; CPU: none)
    ema_decay: float = 0.0  # EMA of the generator's weights, validated and exported; 0: off (e.g. 0.999)
    channels_last: bool = False
    compile: bool = False  # torch.compile the models (worth it on GPUs; the first steps compile)
    checkpoint_every_steps: int = 0  # 0: only at each epoch end
    val_every_steps: int = 0  # validate (and checkpoint) every N steps too; 0: only at each epoch end
    keep_checkpoints: int = 2  # top K by `metric`; the latest is always kept as well
    metric: str = "auto"  # selection metric; auto: val/lpips with the AlexNet weights, else val/color_score
    mode: str = "auto"  # max | min | auto (from the metric: psnr max, lpips min, ...)
    max_failures: int = 2
    log_every_steps: int = 10  # TensorBoard train scalars every N steps (and at each epoch end)
    print_every_steps: int = 0  # a console line every N steps within an epoch; 0: one line per epoch
    sample_images: int = 8  # validation images in the PNG grid
    tracking: str = "none"  # none | mlflow | wandb (colorray.train.tracking)
    tracking_uri: str = ""  # MLflow tracking URI; empty: a local store in the run folder (RUN/mlruns)
    fail_once_at_step: int = -1  # test-only: rank 0 raises once at this global step
    init_from: str = ""  # a checkpoint folder (state.pt) to start from when the run has none of its own

    def __post_init__(self) -> None:
        if isinstance(self.amp, bool):  # the old boolean: true was bf16 autocast on GPUs
            self.amp = "auto" if self.amp else "none"
        if self.name and not PLAIN_NAME.fullmatch(self.name):
            raise ConfigError(f"config key 'run.name' must be a plain folder name (letters, digits, '_', '-', '.', "
                              f"'+'; no '/' and no leading '.'), got '{self.name}'")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    run: RunSettings = field(default_factory=RunSettings)


def suggest(word: str, known: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or nothing."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def merge_values(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base``, section by section (neither is changed)."""
    merged = dict(base)
    for key, value in update.items():
        both_sections = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = merge_values(base[key], value) if both_sections else value
    return merged


def is_remote(location: str) -> bool:
    return "://" in location or location.startswith("pipe:")


def absolute_location(location: str) -> str:
    """A local path made absolute; URIs (s3://, http://, pipe:) and empty values unchanged."""
    if not location or is_remote(location):
        return location
    return str(Path(location).expanduser().resolve())


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """Resolve the config's local paths against the caller's folder: Ray workers run in folders of their own."""
    config.data.train = absolute_location(config.data.train)
    config.data.val = absolute_location(config.data.val)
    config.loss.prior = absolute_location(config.loss.prior)
    config.run.storage_path = absolute_location(config.run.storage_path)
    return config


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return _build(hint, value, key + ".")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        _, value_hint = typing.get_args(hint)
        return {str(k): _coerce(v, value_hint, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item_hint,) = typing.get_args(hint)
        return [_coerce(v, item_hint, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key '{key}' must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)  # YAML 1.1 reads 2e-4 as a string
        except ValueError:
            pass
        else:
            if not math.isfinite(number):
                raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
            return number
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"config key '{key}' must be of type {hint.__name__}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{suggest(key, names)}; "
                f"known keys in '{prefix.rstrip('.') or 'the top level'}': {', '.join(names)}"
            )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any], cls: type = TrainConfig) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(values).__name__}")
    return _build(cls, values)


def config_to_dict(config: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return list(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a local file or an s3:// / gs:// URI."""
    path = str(path) if storage.is_uri(str(path)) else Path(path)
    try:
        text = storage.read_text(str(path)) if storage.is_file(str(path)) else None
    except storage.StorageError as error:
        raise ConfigError(str(error)) from None
    if text is None:
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return values


def apply_overrides(values: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """A copy of the nested dict ``values`` with dotted ``key=value`` overrides set (values parsed as YAML).

    ``values`` itself is never changed: callers compare the result against it (``--resume`` does).
    """
    values = copy.deepcopy(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return values


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    values = read_yaml(path) if path else {}
    return config_from_dict(apply_overrides(values, overrides))


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
