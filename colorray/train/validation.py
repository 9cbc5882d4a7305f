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
    count = 0
    rows: list[torch.Tensor] = []
    for batch in loader:
        rgb = batch["rgb"].to(device)
        L, ab = color.rgb_to_model_inputs(rgb)
        pred_ab = predict_ab(model, L).float()
        for name, values in image_metrics(L, pred_ab, ab, lpips=lpips, rebalance=rebalance).items():
            sums[name] = sums.get(name, torch.zeros((), dtype=torch.float64)) + values.sum()
        count += rgb.shape[0]
        if rank == 0 and len(rows) < config.run.sample_images:
            rows.extend(_sample_rows(L, pred_ab, rgb)[: config.run.sample_images - len(rows)])
    means = _all_reduce_means(sums, count)
    model.train()
    samples = torchvision.utils.make_grid(torch.cat(rows), nrow=3, padding=2) if rows else None
    return means, samples


def _sample_rows(L: torch.Tensor, pred_ab: torch.Tensor, rgb: torch.Tensor) -> list[torch.Tensor]:
    gray = color.model_outputs_to_rgb(L, torch.zeros_like(pred_ab))
    prediction = color.model_outputs_to_rgb(L, pred_ab)
    truth = rgb.float() / 255.0
    return [torch.stack([g, p, t]).cpu() for g, p, t in zip(gray, prediction, truth)]


def _all_reduce_means(sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    names = sorted(sums)
    totals = torch.stack([sums[n] for n in names] + [torch.tensor(float(count), dtype=torch.float64)])
    if dist.is_available() and dist.is_initialized():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        totals = totals.to(backend_device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    n = max(float(totals[-1]), 1.0)
    return {f"val/{name}": float(total) / n for name, total in zip(names, totals[:-1])}
