"""The evaluation harness: ``python -m colorray.evaluate --model PATH [--model PATH ...] --data SHARDS_OR_FOLDER``.

Scores exported generators, the grayscale baseline (ab = 0) and the ground
truth itself on the same center crops of WebDataset shards or of a folder of
the user's own photos, with every metric of ``colorray.metrics``, and writes a
Markdown table, a CSV of the same table, a JSON of per-image values and a
comparison sheet into a fresh output folder; ``--judge DB`` adds the human judgements of a
``colorray.judge`` study as columns. ``--distributed`` runs the same
per-shard work as Ray tasks, one per shard, and merges the per-image results.

The protocol (cropping, resolutions, color spaces, rounding) is ``PROTOCOL``
below; ``docs/evaluate.md`` explains it and how to read the tables.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import functools
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from colorray import cli, color
from colorray.data import storage
from colorray.data.images import ImageError, decode_image
from colorray.data.loader import (
    DataError,
    ShardSet,
    center_box,
    decode_crop,
    open_shard_set,
    val_loader,
)
from colorray.data.prior import PriorError, load_prior
from colorray.data.shards import is_grayscale, list_sources
from colorray.export import EXPORT_FILENAME, ExportError
from colorray.inference import Colorizer, DeviceError, to_uint8_image
from colorray.judge import results as judge_results
from colorray.judge.stats import ResultRow
from colorray.judge.store import StoreError
from colorray.metrics import (
    ACCURACY_THRESHOLDS,
    COLOR_SCORE_DB_PER_CF,
    accuracy_key,
    frechet_distance,
    image_metrics,
    load_fid_features_or_none,
    load_lpips_or_none,
    summarize,
    true_pixel_weights,
)

GRAY_ROW = "grayscale baseline"
TRUTH_ROW = "ground truth"
SHEET_GRAY_TITLE = "grayscale input"
RESULT_FILES = ("results.md", "results.csv", "results.json", "sheet.png")
MIN_SIZE = 8  # SSIM's 7x7 window must fit


def protocol(size: int) -> dict[str, str]:
    """Every choice behind the numbers, written into each result file."""
    return {
        "crop": f"the centered square of each image resized to {size}x{size} (antialiased bilinear), i.e. short side "
                f"to {size} and center crop, uint8 sRGB: the crop of colorray.data.loader's validation loader, for shards "
                "and folders alike (EXIF orientation is not applied, as in training)",
        "skipped": "crops whose three channels are (nearly) equal are skipped as grayscale (no ground-truth color); "
                   "unreadable images are skipped; both are counted",
        "model input": "the crop's L, resized (bilinear, antialiased) to the model's training resolution, "
                       "the path of colorize and Serve",
        "prediction": f"the model's ab, upsampled bilinearly to {size}x{size}, joined with the crop's own L",
        "rgb metrics": "PSNR, SSIM, MSE, MAE and colorfulness on sRGB rebuilt from the true L and the predicted ab "
                       "(clipped to the gamut), rounded to uint8, data range 255, against the same rebuild with "
                       "the true ab",
        "lpips": "LPIPS v0.1 (AlexNet) on the same RGB as floats 0..1, only with real ImageNet AlexNet weights",
        "fid": "Frechet distance between the Inception v3 pool features (torchvision's ImageNet weights, images "
               "resized to 299x299) of a row's images and of the ground-truth images, one number per row over the "
               "whole set; only with real Inception weights, else skipped; not comparable with TF-Inception FIDs, "
               "and biased upward on small sets",
        "ab metrics": "AuC (thresholds 0..150 step 1) and acc_t on ab in Lab units, predicted ab clipped to +-110; "
                      "the rebalanced AuC weighs each pixel by the rebalancing weight of its true color (--prior)",
        "colorfulness gap": "mean over images of |CF(prediction) - CF(ground truth)| (Hasler & Suesstrunk 2003)",
        "color score": f"PSNR - {COLOR_SCORE_DB_PER_CF:g} x colorfulness gap per image, training's default selection metric without LPIPS "
                       "(docs/metrics.md)",
        "intervals": "mean +- half-width of the 95% Student-t confidence interval over images",
        "references": "grayscale baseline: ab = 0 (the input's own L, gray); ground truth: the true ab "
                      "(PSNR inf, SSIM 1)",
    }


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    decimals: int


COLUMNS = (
    Column("psnr", "PSNR dB ↑", 2),
    Column("ssim", "SSIM ↑", 4),
    Column("lpips", "LPIPS ↓", 4),
    Column("fid", "FID ↓", 2),
    Column("mse", "MSE ↓", 1),
    Column("mae", "MAE ↓", 2),
    Column("auc", "AuC ↑", 4),
    Column("auc_rebalanced", "AuC rebal. ↑", 4),
    *(Column(accuracy_key(t), f"{accuracy_key(t)} ↑", 4) for t in ACCURACY_THRESHOLDS),
    Column("colorfulness", "colorfulness", 2),
    Column("colorfulness_gap", "colorfulness gap ↓", 2),
    Column("color_score", "color score ↑", 2),
)


class EvaluateError(ValueError):
    """Bad input to the harness: the message names the problem."""


@dataclass
class Settings:
    size: int = 256
    batch_size: int = 32
    temperature: float | None = None
    workers: int = 0
    rebalance: torch.Tensor | None = None  # class weights over color.ab_bins(), from --prior
    fid: bool = True  # FID of every row against the ground truth, where the Inception weights can be had


@dataclass
class Skips:
    """Images left out, counted by reason, named where the source knows their names."""

    counts: dict[str, int] = field(default_factory=lambda: {"grayscale": 0, "unreadable": 0})
    items: dict[str, list[str]] = field(default_factory=lambda: {"grayscale": [], "unreadable": []})

    def add(self, reason: str, name: str | None = None, count: int = 1) -> None:
        self.counts[reason] += count
        if name is not None:
            self.items[reason].append(name)

    def merge(self, other: Skips) -> None:
        for reason, count in other.counts.items():
            self.counts[reason] += count
            self.items[reason].extend(other.items[reason])


@dataclass
class Batch:
    keys: list[str]
    rgb: torch.Tensor  # (B, 3, S, S) uint8
    skips: Skips  # unreadable images met while making this batch

    def images_read(self) -> int:
        return len(self.keys) + self.skips.counts["unreadable"]


@dataclass
class PartResult:
    """Per-image metrics of every row over one part of the data (the whole of it, or one shard)."""

    keys: list[str]
    values: dict[str, dict[str, torch.Tensor]]  # row -> metric -> (N,) float64
    sheet: list[list[np.ndarray]]  # sheet rows: uint8 (S, S, 3) images, one per row of the table
    skips: Skips
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # row -> (N, 2048) Inception features for FID
    fid_skipped: str = ""  # why there are no features ("" when FID was computed or not asked for)


# --- Scoring: the one function of the local and the distributed path -----------------


def row_predictions(L_norm: torch.Tensor, true_ab: torch.Tensor, colorizers: dict[str, Colorizer],
                    temperature: float | None = None) -> dict[str, torch.Tensor]:
    """Normalized ab of every table row: the grayscale baseline, each model, the ground truth."""
    rows = {GRAY_ROW: torch.zeros_like(true_ab)}
    rows.update({label: colorizer.predict_ab(L_norm, temperature) for label, colorizer in colorizers.items()})
    rows[TRUTH_ROW] = true_ab
    return rows


def score_predictions(L_norm: torch.Tensor, true_ab: torch.Tensor, predictions: dict[str, torch.Tensor], *,
                      lpips=None, rebalance: torch.Tensor | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """``image_metrics`` of each row's predicted ab against the true ab: row -> metric -> (N,) float64.

    The true ab's rebalancing weights are found once for all rows.
    """
    weights = true_pixel_weights(true_ab, rebalance) if rebalance is not None else None
    return {row: image_metrics(L_norm, ab, true_ab, lpips=lpips, pixel_weights=weights)
            for row, ab in predictions.items()}


class Evaluator:
    """Loaded models and metric helpers on one device; ``run`` scores a stream of crops."""

    def __init__(self, colorizers: dict[str, Colorizer], settings: Settings, device: torch.device):
        self.colorizers, self.settings, self.device = colorizers, settings, device
        self.rebalance = settings.rebalance.to(device) if settings.rebalance is not None else None

    @functools.cached_property
    def lpips(self):
        """LPIPS on this device, or None without its weights; loaded when the first color image is scored."""
        metric = load_lpips_or_none()
        return metric.to(self.device) if metric is not None else None

    @functools.cached_property
    def inception(self):
        """FID's feature network on this device, or None (and the reason kept) when off or without its weights."""
        if not self.settings.fid:
            return None
        network, self.fid_skipped = load_fid_features_or_none()
        return network.to(self.device) if network is not None else None

    @classmethod
    def from_paths(cls, models: dict[str, str], settings: Settings) -> Evaluator:
        colorizers = {label: Colorizer.from_path(path) for label, path in models.items()}
        return cls(colorizers, settings, next(iter(colorizers.values())).device)

    @torch.inference_mode()
    def run(self, batches: Iterable[Batch], sheet_images: int = 0, progress: tqdm | None = None) -> PartResult:
        result = PartResult([], {}, [], Skips())
        collected: dict[str, dict[str, list[torch.Tensor]]] = {}
        features: dict[str, list[torch.Tensor]] = {}
        for batch in batches:
            result.skips.merge(batch.skips)
            keys, rgb = self._color_only(batch, result.skips)
            if keys:
                self._score(keys, rgb, result, collected, sheet_images, features)
            if progress is not None:
                progress.update(batch.images_read())
        result.values = {row: {name: torch.cat(parts) for name, parts in metrics.items()}
                         for row, metrics in collected.items()}
        result.features = {row: torch.cat(parts) for row, parts in features.items()}
        result.fid_skipped = getattr(self, "fid_skipped", "")
        return result

    def _color_only(self, batch: Batch, skips: Skips) -> tuple[list[str], torch.Tensor]:
        gray = [is_grayscale(Image.fromarray(image.permute(1, 2, 0).numpy())) for image in batch.rgb]
        for key, is_gray in zip(batch.keys, gray):
            if is_gray:
                skips.add("grayscale", key)
        keep = [i for i, is_gray in enumerate(gray) if not is_gray]
        return [batch.keys[i] for i in keep], batch.rgb[keep]

    def _score(self, keys: list[str], rgb: torch.Tensor, result: PartResult,
               collected: dict[str, dict[str, list[torch.Tensor]]], sheet_images: int,
               features: dict[str, list[torch.Tensor]]) -> None:
        L_norm, true_ab = color.rgb_to_model_inputs(rgb.to(self.device))
        predictions = row_predictions(L_norm, true_ab, self.colorizers, self.settings.temperature)
        scores = score_predictions(L_norm, true_ab, predictions, lpips=self.lpips, rebalance=self.rebalance)
        for row, metrics in scores.items():
            for name, values in metrics.items():
                collected.setdefault(row, {}).setdefault(name, []).append(values)
        if self.inception is not None:
            for row, ab in predictions.items():
                features.setdefault(row, []).append(self.inception(color.model_outputs_to_rgb(L_norm, ab)))
        result.keys.extend(keys)
        wanted = min(sheet_images - len(result.sheet), len(keys))
        if wanted > 0:
            renders = [color.model_outputs_to_rgb(L_norm[:wanted], ab[:wanted]) for ab in predictions.values()]
            result.sheet.extend([to_uint8_image(render[i]) for render in renders] for i in range(wanted))


def merge_parts(parts: list[PartResult]) -> PartResult:
    """One result from parts in order; metrics missing from a part (LPIPS on one node) are left out of all."""
    merged = PartResult([], {}, next((p.sheet for p in parts if p.sheet), []), Skips())
    scored = [part for part in parts if part.keys]
    for part in parts:
        merged.keys.extend(part.keys)
        merged.skips.merge(part.skips)
        merged.fid_skipped = merged.fid_skipped or part.fid_skipped
    if scored and all(part.features for part in scored):
        merged.features = {row: torch.cat([part.features[row] for part in scored]) for row in scored[0].features}
    if scored:
        for row in scored[0].values:
            common = set.intersection(*(set(part.values[row]) for part in scored))
            merged.values[row] = {name: torch.cat([part.values[row][name] for part in scored])
                                  for name in scored[0].values[row] if name in common}
    return merged


# --- Data: shards or a folder of photos, as batches of center crops ---------------------


def center_crop(data: bytes, size: int) -> torch.Tensor:
    """The protocol crop of encoded image bytes: ``val_loader``'s short side to ``size``, center ``size`` x ``size``.

    Raises ``ImageError`` naming the problem when the bytes are not a usable image.
    """
    decode_image(data)
    return decode_crop(data, size, center_box)


@dataclass
class FolderData:
    root: Path
    files: list[tuple[str, str]]  # (path, name relative to root)

    @property
    def description(self) -> str:
        return f"{len(self.files)} image files under {self.root}"


def open_folder(root: Path, limit: int) -> FolderData:
    sources, _ = list_sources(root, labels=False)
    if not sources:
        raise EvaluateError(f"no images (.jpg, .png, ...) and no .tar shards in {root}")
    files = [(source.path, source.relative) for source in sources]
    return FolderData(root, files[:limit] if limit else files)


def folder_batches(folder: FolderData, settings: Settings) -> Iterator[Batch]:
    keys, crops, skips = [], [], Skips()
    for path, name in folder.files:
        try:
            crops.append(center_crop(Path(path).read_bytes(), settings.size))
            keys.append(name)
        except (ImageError, OSError) as error:
            skips.add("unreadable", f"{name}: {error}")
        if len(keys) == settings.batch_size:
            yield Batch(keys, torch.stack(crops), skips)
            keys, crops, skips = [], [], Skips()
    empty = torch.zeros(0, 3, settings.size, settings.size, dtype=torch.uint8)
    yield Batch(keys, torch.stack(crops) if crops else empty, skips)


def shard_batches(shards: ShardSet, settings: Settings, limit: int) -> Iterator[Batch]:
    loader = val_loader(shards, image_size=settings.size, batch_size=settings.batch_size, rank=0, world_size=1,
                        limit=limit, loader_workers=settings.workers)
    for batch in loader:
        skips = Skips()
        skips.add("unreadable", count=batch["decode_errors"])
        yield Batch(list(batch["key"]), batch["rgb"], skips)


def holds_shards(folder: Path) -> bool:
    return (folder / "index.json").is_file() or any(folder.glob("*.tar"))


def open_shards(spec: str) -> ShardSet:
    """Shards to evaluate; a local dataset root stands for its val split, never its train split."""
    root = Path(spec).expanduser()
    if holds_shards(root / "train"):
        if not (root / "val").is_dir():
            raise EvaluateError(f"dataset root {spec} has no val/ split: pass the shard folder to evaluate as --data "
                                f"(e.g. {root / 'train'})")
        spec = str(root / "val")
    return open_shard_set(spec)


def open_data(spec: str, limit: int) -> ShardSet | FolderData:
    """Shards (folder with .tar/index.json, dataset root, .tar, brace pattern, URL) or a folder of photos."""
    path = Path(spec).expanduser()
    remote = spec.startswith(("http://", "https://")) or storage.is_uri(spec)
    if not remote and "{" not in spec and not path.exists():
        raise EvaluateError(f"data not found: {spec}")
    if path.is_dir() and not holds_shards(path) and not holds_shards(path / "train"):
        return open_folder(path, limit)
    return open_shards(spec)


# --- Running -----------------------------------------------------------------------


def evaluate_shard_part(shards: ShardSet, limit: int, models: dict[str, str], settings: Settings,
                        sheet_images: int) -> PartResult:
    """Evaluate one part of the shards with freshly loaded models: the body of a distributed task."""
    return Evaluator.from_paths(models, settings).run(shard_batches(shards, settings, limit), sheet_images)


def shard_parts(shards: ShardSet, limit: int) -> list[tuple[ShardSet, int]]:
    """One (single-shard set, sample limit) per shard, covering the first ``limit`` samples (0: all)."""
    if limit and shards.sample_counts is None:
        raise EvaluateError("--limit with --distributed needs the shards' index.json (sample counts)")
    counts = shards.sample_counts or [0] * len(shards.urls)
    parts, remaining = [], limit or math.inf
    for url, count in zip(shards.urls, counts):
        if remaining <= 0:
            break
        part = dataclasses.replace(shards, urls=[url], sample_counts=[count] if shards.sample_counts else None)
        parts.append((part, int(min(count, remaining)) if limit else 0))
        remaining -= count
    return parts


def evaluate_distributed(shards: ShardSet, models: dict[str, str], settings: Settings, limit: int,
                         sheet_images: int) -> PartResult:
    """One Ray task per shard on the running cluster (else a local Ray), merged in shard order."""
    import ray

    started_here = cli.connect_ray(log_to_driver=False)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(evaluate_shard_part).options(num_cpus=1, num_gpus=gpus)
        refs = [task.remote(part, part_limit, models, settings, sheet_images if number == 0 else 0)
                for number, (part, part_limit) in enumerate(shard_parts(shards, limit))]
        pending = list(refs)
        with tqdm(total=len(refs), unit="shard", desc="evaluate", disable=None) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return merge_parts(ray.get(refs))
    except ray.exceptions.RayTaskError as error:
        raise EvaluateError(f"a distributed evaluation task failed: {error.cause}") from None
    finally:
        if started_here:
            ray.shutdown()


def evaluate_local(data: ShardSet | FolderData, evaluator: Evaluator, limit: int, sheet_images: int) -> PartResult:
    if isinstance(data, FolderData):
        batches, total = folder_batches(data, evaluator.settings), len(data.files)
    else:
        batches, total = shard_batches(data, evaluator.settings, limit), data.total_samples
        if limit:
            total = min(total, limit) if total is not None else limit
    with tqdm(total=total, unit="img", desc="evaluate", disable=None) as bar:
        return evaluator.run(batches, sheet_images, bar)


# --- Reports -----------------------------------------------------------------------


def format_cell(mean: float, ci: float, decimals: int) -> str:
    if not math.isfinite(mean):
        return str(mean)
    if not math.isfinite(ci):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {ci:.{decimals}f}"


def table_columns(summary: dict[str, dict[str, tuple[float, float]]]) -> list[Column]:
    """LPIPS always (as unavailable without weights); the rebalanced AuC only when it was computed."""
    present = set(summary[GRAY_ROW])
    return [c for c in COLUMNS if c.key in present or c.key == "lpips"]


def table_cells(summary: dict[str, dict[str, tuple[float, float]]], columns: list[Column]) -> list[list[str]]:
    return [[row] + [format_cell(*metrics[c.key], c.decimals) if c.key in metrics else "unavailable"
                     for c in columns]
            for row, metrics in summary.items()]


def markdown_table(summary: dict[str, dict[str, tuple[float, float]]], human: list[ResultRow] = ()) -> str:
    titles, rows = table_with_human_columns(summary, human, lambda column: column.title)
    lines = ["| row | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def csv_text(summary: dict[str, dict[str, tuple[float, float]]], human: list[ResultRow] = ()) -> str:
    titles, rows = table_with_human_columns(summary, human, lambda column: column.key)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", *titles])
    writer.writerows(rows)
    return buffer.getvalue()


def table_with_human_columns(summary: dict[str, dict[str, tuple[float, float]]], human: list[ResultRow],
                             title: Callable[[Column], str]) -> tuple[list[str], list[list[str]]]:
    """The metric columns' titles and cells, followed by a column per measure of the judge's votes (if any)."""
    columns = table_columns(summary)
    titles, rows = [title(column) for column in columns], table_cells(summary, columns)
    if not human:
        return titles, rows
    human_titles, human_cells = judge_results.columns_for_rows(human, list(summary), TRUTH_ROW)
    return [*titles, *human_titles], [cells + human_cells[cells[0]] for cells in rows]


def read_judgements(url: str) -> list[ResultRow]:
    """Every measure of a ``colorray.judge`` votes database, or an EvaluateError naming it."""
    try:
        return judge_results.study_rows(url)
    except StoreError as error:
        raise EvaluateError(f"--judge: {error}") from None


def json_number(value: float) -> float | str:
    """Strict JSON has no inf/nan: those become the strings "inf", "-inf", "nan" (``float()`` reads them back)."""
    return value if math.isfinite(value) else str(value)


@dataclass
class Report:
    """Everything the output files say about one evaluation."""

    result: PartResult
    summary: dict[str, dict[str, tuple[float, float]]]
    data_description: str
    models: list[dict[str, Any]]
    settings: dict[str, Any]
    lpips_available: bool
    fid_note: str = ""  # how FID was computed, or why it was skipped
    human: list[ResultRow] = field(default_factory=list)  # the judge's measures (--judge), shown as columns

    def headline(self) -> str:
        counts = self.result.skips.counts
        return (f"{len(self.result.keys)} images scored from {self.data_description}; skipped "
                f"{counts['grayscale']} grayscale (no ground-truth color), {counts['unreadable']} unreadable")

    def markdown(self) -> str:
        size = self.settings["size"]
        lines = ["# colorray evaluation", "", f"- data: {self.headline()}",
                 f"- protocol: center crops {size}x{size}; metrics at {size}x{size} on RGB from the true L and "
                 "each row's ab, uint8, data range 255 (details in results.json and docs/evaluate.md)"]
        lines += [f"- model {m['label']}: {m['path']} ({m['info']['model']}, trained at "
                  f"{m['info']['image_size']} px)" for m in self.models]
        if not self.lpips_available:
            lines.append("- LPIPS unavailable: the ImageNet AlexNet weights are not on this machine "
                         "(never computed from a random backbone)")
        if self.fid_note:
            lines.append(f"- {self.fid_note}")
        unmatched = judge_results.unmatched_systems(self.human, list(self.summary), TRUTH_ROW)
        if unmatched:
            lines.append("- human judgements of systems with no row here (name rows with --label): "
                         + ", ".join(unmatched))
        lines += ["", markdown_table(self.summary, self.human), "",
                  f"mean ± 95% confidence half-width over {len(self.result.keys)} images. The grayscale baseline "
                  "(ab = 0) is the floor a model must beat; the ground-truth row is the reference itself "
                  "(PSNR inf, SSIM 1) and gives the colorfulness of the real photos."]
        return "\n".join(lines) + "\n"

    def json(self) -> dict[str, Any]:
        skips = self.result.skips
        return {
            "protocol": protocol(self.settings["size"]),
            "settings": self.settings,
            "data": {"description": self.data_description, "images_scored": len(self.result.keys),
                     "skipped": {reason: {"count": skips.counts[reason], "items": skips.items[reason]}
                                 for reason in skips.counts}},
            "models": self.models,
            "lpips": "available" if self.lpips_available else "unavailable",
            "fid": self.fid_note,
            "human": [{key: json_number(value) if isinstance(value, float) else value
                       for key, value in dataclasses.asdict(row).items()} for row in self.human],
            "rows": list(self.summary),
            "summary": {row: {name: {"mean": json_number(mean), "ci95": json_number(ci)}
                              for name, (mean, ci) in metrics.items()} for row, metrics in self.summary.items()},
            "per_image": {"keys": self.result.keys,
                          "values": {row: {name: [json_number(v) for v in values.tolist()]
                                           for name, values in metrics.items()}
                                     for row, metrics in self.result.values.items()}},
        }


TITLE_LINES = 3  # most lines of a column title
LINE_HEIGHT = 12


def title_lines(draw: ImageDraw.ImageDraw, title: str, width: int, most: int = TITLE_LINES) -> list[str]:
    """``title`` cut into lines that fit ``width``; a title longer than ``most`` lines loses its middle, not its end.

    Labels that differ only at the end (two checkpoints of one run) thus stay tellable apart on the sheet.
    """
    lines, line = [], ""
    for char in title:
        if line and draw.textlength(line + char) > width:
            lines.append(line)
            line = ""
        line += char
    lines.append(line)
    if len(lines) <= most:
        return lines
    tail = ""
    while len(tail) < len(title) and draw.textlength("..." + title[-len(tail) - 1:]) <= width:
        tail = title[-len(tail) - 1:]
    return [*lines[:most - 1], "..." + tail]


def sheet_image(rows: list[list[np.ndarray]], titles: list[str], pad: int = 2) -> Image.Image:
    """Rows of equally sized images under their column titles (wrapped over up to three lines)."""
    size = rows[0][0].shape[0]
    step = size + pad
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [title_lines(draw, title, size) for title in titles]
    header = 2 + LINE_HEIGHT * max(len(lines) for lines in wrapped)
    canvas = Image.new("RGB", (pad + len(titles) * step, header + pad + len(rows) * step), "white")
    draw = ImageDraw.Draw(canvas)
    for column, lines in enumerate(wrapped):
        draw.multiline_text((pad + column * step, 1), "\n".join(lines), fill="black", spacing=2)
    for row_number, row in enumerate(rows):
        for column, image in enumerate(row):
            canvas.paste(Image.fromarray(image), (pad + column * step, header + pad + row_number * step))
    return canvas


def write_report(report: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.md", out / "results.csv", out / "results.json"]
    written[0].write_text(report.markdown(), encoding="utf-8")
    written[1].write_text(csv_text(report.summary, report.human), encoding="utf-8")
    written[2].write_text(json.dumps(report.json(), indent=1, allow_nan=False), encoding="utf-8")
    if report.result.sheet:
        titles = [SHEET_GRAY_TITLE] + [m["label"] for m in report.models] + [TRUTH_ROW]
        sheet_image(report.result.sheet, titles).save(out / "sheet.png")
        written.append(out / "sheet.png")
    return written


# --- Command line -----------------------------------------------------------------


def model_labels(paths: list[str], infos: list[Any]) -> list[str]:
    """A unique row name per model: the shortest tail of its path that tells it from the others, and its architecture.

    ``runs/a/generator.pt`` and ``runs/b/generator.pt`` become ``a (cnn)`` and ``b (cnn)``; two checkpoints
    of one run keep their run and checkpoint names (``run/checkpoint_... (cnn)``). The same path twice gets ``#n``.
    """
    parts = [_label_parts(path) for path in paths]
    depth = 1
    while depth < max(len(p) for p in parts) and len({tuple(p[-depth:]) for p in parts}) < len(set(map(tuple, parts))):
        depth += 1
    labels: list[str] = []
    for place, info in zip(parts, infos):
        label = f"{'/'.join(place[-depth:])} ({info.model})"
        labels.append(label if label not in labels else f"{label} #{len(labels) + 1}")
    return labels


def _label_parts(path: str) -> list[str]:
    """The path's names, without the export file name (``generator.pt`` or ``.pt``) that every model shares."""
    place = Path(path).expanduser().resolve()
    if place.name == EXPORT_FILENAME:
        place = place.parent
    elif place.is_file():
        place = place.with_suffix("")
    return [name for name in place.parts if name != place.anchor] or [str(place)]


def check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvaluateError(f"output folder {out} already exists and is not empty: choose another --out "
                            "(nothing is overwritten)")


def check_numbers(args: argparse.Namespace) -> None:
    if args.size < MIN_SIZE:
        raise EvaluateError(f"--size must be at least {MIN_SIZE} (SSIM's 7x7 window), got {args.size}")
    if args.batch_size < 1:
        raise EvaluateError(f"--batch-size must be >= 1, got {args.batch_size}")
    for name in ("limit", "sheet_images", "workers"):
        if getattr(args, name) < 0:
            raise EvaluateError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.temperature is not None and args.temperature < 0:
        raise EvaluateError(f"--temperature must be >= 0, got {args.temperature}")


def load_models(paths: list[str], labels: list[str] | None = None, device: str = "auto") -> dict[str, Colorizer]:
    """The models on ``device`` by row name: ``labels`` (one per path, unique) or names made from the paths."""
    if labels and (len(labels) != len(paths) or len(set(labels)) != len(labels)):
        raise EvaluateError(f"--label must be given once per --model ({len(paths)}), each different; got {labels}")
    if labels and set(labels) & {GRAY_ROW, TRUTH_ROW}:
        raise EvaluateError(f"--label may not be '{GRAY_ROW}' or '{TRUTH_ROW}' (rows of every table)")
    colorizers = [Colorizer.from_path(path, device=device) for path in paths]
    return dict(zip(labels or model_labels(paths, [c.info for c in colorizers]), colorizers))


def evaluate(args: argparse.Namespace) -> tuple[Report, Path]:
    """Check everything, score every row, write the output folder."""
    check_numbers(args)
    out = Path(args.out or datetime.datetime.now().strftime("eval-%Y%m%d-%H%M%S"))
    check_output(out)
    data = open_data(args.data, args.limit)
    if args.distributed and isinstance(data, FolderData):
        raise EvaluateError(f"--distributed evaluates WebDataset shards; {args.data} is a folder of images")
    prior = load_prior(args.prior) if args.prior else None
    human = read_judgements(args.judge) if args.judge else []
    settings = Settings(args.size, args.batch_size, args.temperature, args.workers,
                        color.rebalance_weights(prior, color.ab_bins()) if prior is not None else None, not args.no_fid)
    colorizers = load_models(args.model, args.label, args.device)
    report = score_models(data, args.data, colorizers, args.model, settings, args.limit, args.sheet_images,
                          args.distributed)
    report.settings["prior"] = args.prior or None
    report.human = human
    write_report(report, out)
    return report, out


def score_models(data: ShardSet | FolderData, spec: str, colorizers: dict[str, Colorizer], paths: list[str],
                 settings: Settings, limit: int = 0, sheet_images: int = 8, distributed: bool = False) -> Report:
    """Score loaded models (row name -> Colorizer, loaded from ``paths``) on ``data`` (opened from ``spec``)."""
    device = next(iter(colorizers.values())).device
    if distributed:
        result = evaluate_distributed(data, dict(zip(colorizers, paths)), settings, limit, sheet_images)
    else:
        result = evaluate_local(data, Evaluator(colorizers, settings, device), limit, sheet_images)
    if not result.keys:
        counts = result.skips.counts
        raise EvaluateError(f"no color image to score in {spec}: {counts['grayscale']} grayscale "
                            f"(no ground-truth color), {counts['unreadable']} unreadable")
    summary = {row: summarize(values) for row, values in result.values.items()}
    fid_note = add_fid(summary, result) if settings.fid else "FID not computed (--no-fid)"
    models = [{"label": label, "path": path, "info": colorizer.info.to_dict()}
              for (label, colorizer), path in zip(colorizers.items(), paths)]
    run_settings = {"size": settings.size, "batch_size": settings.batch_size, "limit": limit,
                    "temperature": settings.temperature, "prior": None, "distributed": distributed,
                    "device": "ray tasks" if distributed else str(device)}
    return Report(result, summary, data.description, models, run_settings, "lpips" in summary[GRAY_ROW], fid_note)


def add_fid(summary: dict[str, dict[str, tuple[float, float]]], result: PartResult) -> str:
    """Each row's FID against the ground-truth images into ``summary`` (no interval: one number per set)."""
    if not result.features:
        return result.fid_skipped or "FID skipped: the Inception v3 weights cannot be had"
    truth = result.features[TRUTH_ROW]
    for row, features in result.features.items():
        summary[row]["fid"] = (frechet_distance(features, truth), math.nan)
    return (f"FID against the ground truth over {len(truth)} images (Inception v3, torchvision's ImageNet weights; "
            "not comparable with TF-Inception FIDs; unreliable below a few thousand images)")


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m colorray.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True,
                   help="export file, Tune best/ folder, checkpoint or run folder (repeat for several models)")
    p.add_argument("--label", action="append", default=None,
                   help="row name of the --model at the same position (repeat once per --model; default: from the paths)")
    p.add_argument("--data", required=True, help="val shards (folder, dataset root, brace pattern, URL) "
                                                 "or a folder of color photos")
    p.add_argument("--out", default="", help="new output folder (default: eval-<timestamp>)")
    p.add_argument("--size", type=int, default=256, help="evaluation crop size (short side resize, center crop)")
    p.add_argument("--limit", type=int, default=0, help="evaluate the first N images (0: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--sheet-images", type=int, default=8, help="images in the comparison sheet")
    p.add_argument("--prior", default="", help="ab prior .npy (python -m colorray.prior) for the rebalanced AuC")
    p.add_argument("--temperature", type=float, default=None, help="annealed-mean temperature of bins models")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding shards (0: in-process)")
    p.add_argument("--distributed", action="store_true", help="one Ray task per shard on the running cluster")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda when present), cpu, cuda, cuda:N")
    p.add_argument("--judge", default="", metavar="DB_URL",
                   help="add the human judgements of a colorray.judge study (its --db URL) as columns; its systems "
                        "match rows by name (--label), its ground truth the ground-truth row")
    p.add_argument("--no-fid", action="store_true", help="skip FID (Inception v3 features of every row's images)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report, out = evaluate(args)
    except (EvaluateError, ExportError, DataError, PriorError, DeviceError, OSError) as error:
        return cli.fail(error)
    print(f"{report.headline()}\n\n{markdown_table(report.summary, report.human)}\n\nwrote {out}")
    return 0
