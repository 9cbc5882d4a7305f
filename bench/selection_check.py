"""Measurement (not a test): is a run's selected checkpoint in the grayer half of its checkpoints, on held-out photos?

Scores every ``checkpoint_*/generator.pt`` of a finished run, the run's selected
export (``RUN/generator.pt``) and its last (``RUN/generator-last.pt``) with the
evaluation harness on a folder of photos the run never saw, then prints per
checkpoint its validation PSNR and ``color_score`` (from training) and its
held-out PSNR, colorfulness and colorfulness gap, and the check of issue 12:
the selected checkpoint's held-out gap against the median over all checkpoints
(with a paired 95% interval against the checkpoint nearest the median), and
which checkpoint ``val/psnr`` would have selected. docs/metrics.md holds the figures.

    python bench/selection_check.py RUN PHOTOS OUT [--size 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from colorray.evaluate import harness


def checkpoint_rows(run: Path) -> dict[str, tuple[str, dict]]:
    """label (epoch and step) -> (export path, training metrics) of every checkpoint of the run."""
    rows = {}
    for folder in sorted(p for p in run.glob("checkpoint_*") if p.is_dir()):
        metrics = torch.load(folder / "state.pt", map_location="cpu", weights_only=True, mmap=True)["metrics"]
        rows[f"e{metrics['epoch']:02d}-s{metrics['step']:04d}"] = (str(folder / "generator.pt"), metrics)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("photos")
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="64")
    args = parser.parse_args()
    rows = checkpoint_rows(args.run)
    models = {**{label: path for label, (path, _) in rows.items()},
              "SELECTED": str(args.run), "LAST": str(args.run / "generator-last.pt")}
    argv = [item for label, path in models.items() for item in ("--model", path, "--label", label)]
    assert harness.main([*argv, "--data", args.photos, "--size", args.size, "--out", str(args.out), "--no-fid",
                         "--sheet-images", "6"]) == 0
    results = json.loads((args.out / "results.json").read_text())
    mean = {row: {k: float(v["mean"]) for k, v in metrics.items()} for row, metrics in results["summary"].items()}
    per_image = {row: np.array(v["colorfulness_gap"], dtype=float) for row, v in results["per_image"]["values"].items()}
    truth = mean[harness.TRUTH_ROW]["colorfulness"]
    print("checkpoint | val PSNR | val color_score | held-out PSNR | held-out colorfulness (% of truth) | held-out gap")
    for label in models:
        val = rows[label][1] if label in rows else {}
        m = mean[label]
        print(f"{label} | {val.get('val/psnr', float('nan')):.2f} | {val.get('val/color_score', float('nan')):.2f} | "
              f"{m['psnr']:.2f} | {m['colorfulness']:.2f} ({100 * m['colorfulness'] / truth:.0f}%) | "
              f"{m['colorfulness_gap']:.2f}")
    gaps = {label: mean[label]["colorfulness_gap"] for label in rows}
    median = statistics.median(gaps.values())
    nearest = min(gaps, key=lambda label: abs(gaps[label] - median))
    diff = per_image["SELECTED"] - per_image[nearest]
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    selected = mean["SELECTED"]["colorfulness_gap"]
    by_psnr = max(rows, key=lambda label: (rows[label][1].get("val/psnr", float("-inf")), label))
    print(f"truth colorfulness {truth:.2f}; median gap over {len(rows)} checkpoints {median:.2f}; selected "
          f"{selected:.2f} ({'at most' if selected <= median else 'above'} the median; vs {nearest}: "
          f"{diff.mean():+.2f} +- {half:.2f} paired 95%)")
    print(f"val/psnr would have selected {by_psnr}: held-out gap {gaps[by_psnr]:.2f}, colorfulness "
          f"{100 * mean[by_psnr]['colorfulness'] / truth:.0f}% of truth")


if __name__ == "__main__":
    main()
