"""What a training run prints: a console that fits a screen.

The driver prints the data, the config as one line per section holding only
what differs from ``TrainConfig``'s defaults (the full YAML is in the run
folder), then rank 0 prints one line per epoch (``epoch_line``) and the driver
the closing lines. Ray's own INFO chatter (Ray Train's per-report
``TrainingReport`` dumps, ``Checkpoint successfully created``, worker-group
start-up, ``ray.init`` banners, "safe to ignore" warnings) stays off the console
unless ``--verbose``: ``ray_log_level`` feeds ``ray.init(logging_level=...)``,
the driver sets Ray Train's ``RunConfig(logging_config=...)`` to errors only, and
``quiet_ray_console`` skips the lines Ray prints whatever the level (through Ray's
own ``RAY_DEDUP_LOGS_SKIP_REGEX``, read when ``ray`` is imported: call it first).
No line colorray prints is longer than ``WIDTH``. This module must not import ray.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from colorray.config import TrainConfig, config_to_dict

WIDTH = 200  # the widest line a run prints (Ray's "(RayTrainWorker pid=...)" prefix included)
WORKER_WIDTH = WIDTH - 50  # what a worker prints: Ray puts "(RayTrainWorker pid=..., ip=...) " before it
SHOWN_VAL_METRICS = ("psnr", "ssim", "auc", "lpips")  # after run.metric, in this order


RAY_NOISE = (  # lines Ray prints at any log level that tell a user nothing
    r"Reporting training result \d+: TrainingReport\(",  # every report of every rank (its logger is named
    # after its file, so Ray Train's log level does not reach it)
    r"has constructor arguments in the object store and max_restarts > 0",  # Ray Train's PreemptionWatcher
)


def quiet_ray_console(argv: Sequence[str]) -> None:
    """Unless ``--verbose`` is in ``argv``: the driver skips ``RAY_NOISE`` lines, and Tune reports through its
    legacy reporter, silent at ``verbose=0`` (the new one prints its experiment box at every verbosity).
    Call before importing ray."""
    if "--verbose" not in argv:
        os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", "|".join(RAY_NOISE))
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def ray_log_level(verbose: bool) -> int:
    """``ray.init``'s logging level: INFO (start-up banners) with --verbose, else warnings and errors."""
    return logging.INFO if verbose else logging.WARNING


def train_log_level(verbose: bool) -> str:
    """Ray Train's log level: INFO with --verbose, else errors only (its warnings are about its own internals,
    such as "Failed to send resource request ... safe to ignore" with a traceback on a busy machine)."""
    return "INFO" if verbose else "ERROR"


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and prefix == "":
            flat.update(_flat(value, f"{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def clip(line: str, width: int = WIDTH) -> str:
    """``line`` cut to ``width`` characters (ending in ``...`` when cut)."""
    return line if len(line) <= width else line[: width - 3] + "..."


def wrap(head: str, parts: list[str], width: int = WIDTH) -> list[str]:
    """``head`` followed by ``parts`` joined with spaces, broken into lines of at most ``width`` characters."""
    lines, line = [], head
    for part in parts:
        if len(line) + 1 + len(part) > width and line.strip() != head.strip():
            lines.append(line)
            line = " " * len(head)
        line = clip(f"{line} {part}", width)  # a value wider than the screen is cut: the YAML has it whole
    return [*lines, line]


def config_lines(config: TrainConfig) -> list[str]:
    """One line per config section holding what differs from the defaults (run name and storage left out)."""
    defaults, values = _flat(config_to_dict(TrainConfig())), _flat(config_to_dict(config))
    changed: dict[str, list[str]] = {}
    for key, value in values.items():
        if key in ("run.name", "run.storage_path") or defaults.get(key, object()) == value:
            continue
        section, _, name = key.partition(".")
        changed.setdefault(section, []).append(f"{name}={_short(value)}")
    if not changed:
        return ["  config: the defaults"]
    return [line for section, parts in changed.items() for line in wrap(f"  {section}:", parts)]


def shown_val_metrics(metric: str, metrics: dict[str, float]) -> list[str]:
    """The validation metrics worth a column: the run's selection metric first, then PSNR, SSIM, AuC, LPIPS."""
    names = [metric] + [f"val/{name}" for name in SHOWN_VAL_METRICS]
    return [name for index, name in enumerate(names) if name in metrics and name not in names[:index]]


def skipped_parts(metrics: dict[str, float]) -> list[str]:
    """``skipped N corrupt samples (train A, val B)`` when the shards held corrupt samples, else nothing."""
    train, val = int(metrics.get("train/skipped_corrupt", 0)), int(metrics.get("val/skipped_corrupt", 0))
    return [f"skipped {train + val} corrupt samples (train {train}, val {val})"] if train + val else []


def epoch_line(config: TrainConfig, epoch: int, step: int, metrics: dict[str, float], rate: float,
               seconds: float, metric: str | None = None) -> str:
    """``epoch 3/8 step 36 | loss 0.1100 | val psnr 22.62 ssim 0.8769 auc 0.8857 | 41.3 img/s | 21.4 s``.

    ``metric`` is the selection metric shown first (default: ``run.metric``, which may still read 'auto').
    """
    loss = metrics.get("train/total")
    val = " ".join(f"{name.removeprefix('val/')} {metrics[name]:.4g}"
                   for name in shown_val_metrics(metric or config.run.metric, metrics))
    parts = [f"epoch {epoch}/{config.run.epochs} step {step}", f"loss {loss:.4f}" if loss is not None else "loss -",
             *skipped_parts(metrics), f"val {val}" if val else "no validation", f"{rate:.1f} img/s", f"{seconds:.1f} s"]
    return clip(" | ".join(parts), WORKER_WIDTH)


def one_line_warnings(rank: int) -> None:
    """In a Train worker: each Python warning as one clipped line, from rank 0 only (all ranks run the same code;
    Python's default filter already shows each warning once per place)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if rank == 0:
            text = (str(message).strip().splitlines() or [""])[0]
            print(clip(f"{category.__name__}: {text} ({Path(filename).name}:{lineno})", WORKER_WIDTH),
                  file=sys.stderr, flush=True)

    warnings.showwarning = show
