"""Per-epoch validation inside the training workers: metrics over the validation split and a sample grid.

Each rank scores its own part of the validation shards with
``colorray.metrics.image_metrics``; sums are all-reduced so every rank returns
the same means. Rank 0 also renders a fixed set of its images as a grid of
rows ``gray | prediction | ground truth``.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torchvision

from colorray import color
from colorray.config import TrainConfig
from colorray.export import unwrap
from colorray.metrics import image_metrics, load_lpips_or_none
from colorray.models import predict_ab


@functools.lru_cache(maxsize=1)
def _lpips(device_type: str, rank: int):
    metric = load_lpips_or_none(warn=rank == 0)  # the warning once per run, not once per rank
    return metric.to(device_type) if metric is not None else None


@torch.no_grad()
def validate(config: TrainConfig, generator, loader, device, prior, rank: int):
    """Mean validation metrics (``val/<name>``) over all ranks, and rank 0's sample grid (or None)."""
    model = unwrap(generator).eval()
    rebalance = color.rebalance_weights(prior, color.ab_bins()) if prior is not None else None
    lpips = _lpips(device.type, rank)
    sums: dict[str, torch.Tensor] = {}
    count = skipped = 0
    rows: list[torch.Tensor] = []
    for batch in loader:
        skipped += int(batch["decode_errors"])
        if not batch["key"]:  # a last batch that only carries a count of skipped samples
            continue
        rgb = batch["rgb"].to(device)
        L, ab = color.rgb_to_model_inputs(rgb)
        pred_ab = predict_ab(model, L).float()
        for name, values in image_metrics(L, pred_ab, ab, lpips=lpips, rebalance=rebalance).items():
            sums[name] = sums.get(name, torch.zeros((), dtype=torch.float64)) + values.sum()
        count += rgb.shape[0]
        if rank == 0 and len(rows) < config.run.sample_images:
            rows.extend(_sample_rows(L, pred_ab, rgb)[: config.run.sample_images - len(rows)])
    means = {**_all_reduce_means(sums, count), **skipped_metrics("val", skipped, count)}
    model.train()
    samples = torchvision.utils.make_grid(torch.cat(rows), nrow=3, padding=2) if rows else None
    return means, samples


def _sample_rows(L: torch.Tensor, pred_ab: torch.Tensor, rgb: torch.Tensor) -> list[torch.Tensor]:
    gray = color.model_outputs_to_rgb(L, torch.zeros_like(pred_ab))
    prediction = color.model_outputs_to_rgb(L, pred_ab)
    truth = rgb.float() / 255.0
    return [torch.stack([g, p, t]).cpu() for g, p, t in zip(gray, prediction, truth)]


def all_reduce_sums(values: list[float]) -> list[float]:
    """Element-wise sums over all ranks (the values themselves when training runs without torch.distributed)."""
    totals = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        totals = totals.to(backend_device)
        dist.all_reduce(totals)
    return totals.cpu().tolist()


def _all_reduce_means(sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    names = sorted(sums)
    totals = all_reduce_sums([float(sums[name]) for name in names] + [float(count)])
    n = max(totals[-1], 1.0)
    return {f"val/{name}": total / n for name, total in zip(names, totals[:-1])}


def skipped_metrics(split: str, skipped: int, used: int) -> dict[str, float]:
    """``<split>/skipped_corrupt`` (summed over loader workers and ranks) and ``<split>/corrupt_share`` of those read."""
    skipped, used = all_reduce_sums([float(skipped), float(used)])
    return {f"{split}/skipped_corrupt": int(skipped), f"{split}/corrupt_share": skipped / max(skipped + used, 1.0)}


def corrupt_data_problem(config: TrainConfig, metrics: dict[str, float]) -> str | None:
    """Why the run must stop: an epoch's share of corrupt samples above ``data.max_corrupt_share``; else None."""
    limit = config.data.max_corrupt_share
    for split, what in (("train", "training"), ("val", "validation")):
        share = metrics.get(f"{split}/corrupt_share", 0.0)
        if share > limit:
            return (f"epoch {metrics.get('epoch')}: skipped {int(metrics[f'{split}/skipped_corrupt'])} corrupt {what} "
                    f"samples ({share:.1%} of those read), more than data.max_corrupt_share = {limit:g} allows; "
                    "rebuild or fix the shards (python -m colorray.shards), or raise data.max_corrupt_share")
    return None
