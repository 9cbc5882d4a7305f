"""Measurement (not a test): how much PSNR desaturation buys, and the bounds on color_score's gap weight.

On real photos, simulated colorizations with known kinds of error (the right
colors blurred, hues rotated by 45 or 90 degrees, another photo's colors) are
scaled towards gray by s = 1, 0.75, 0.5, 0.25, 0 and scored with
``colorray.metrics.image_metrics``. PSNR rises as almost any imperfect
colorization is desaturated; ``color_score = PSNR - lambda * colorfulness gap``
must not. The script prints the table and the range of lambda (dB per unit of
colorfulness gap) for which four orderings hold (docs/metrics.md, "Model
selection"); the last line is one JSON object.

    python bench/selection_score.py --photos FOLDER [--size 96]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorray import cli, color, metrics

SCALES = (1.0, 0.75, 0.5, 0.25, 0.0)


def load_photos(folder: Path, size: int) -> torch.Tensor:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    images = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in files]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def rotate_hue(ab: torch.Tensor, degrees: float) -> torch.Tensor:
    angle = torch.tensor(np.deg2rad(degrees), dtype=ab.dtype)
    a, b = ab[:, 0], ab[:, 1]
    return torch.stack([angle.cos() * a - angle.sin() * b, angle.sin() * a + angle.cos() * b], 1)


def error_models(ab: torch.Tensor) -> dict[str, torch.Tensor]:
    blurred = F.interpolate(F.avg_pool2d(ab, 16), size=ab.shape[-2:], mode="bilinear", align_corners=False)
    return {
        "right colors, blurred (1/16)": blurred,
        "hues rotated 45 deg": rotate_hue(ab, 45),
        "hues rotated 90 deg": rotate_hue(ab, 90),
        "another photo's colors": torch.roll(ab, 1, 0),
    }


def measure(rgb: torch.Tensor) -> dict[str, dict[float, tuple[float, float]]]:
    """error model -> scale -> (mean PSNR dB, mean colorfulness gap)."""
    L, ab = color.rgb_to_model_inputs(rgb)
    table = {}
    for name, prediction in error_models(ab).items():
        table[name] = {}
        for scale in SCALES:
            scores = metrics.image_metrics(L, prediction * scale, ab)
            table[name][scale] = (scores["psnr"].mean().item(), scores["colorfulness_gap"].mean().item())
    return table


def better_than(winner: tuple[float, float], loser: tuple[float, float]) -> tuple[str, float]:
    """The condition on lambda under which ``winner`` (psnr, gap) scores higher than ``loser``."""
    (psnr_w, gap_w), (psnr_l, gap_l) = winner, loser
    bound = (psnr_w - psnr_l) / (gap_w - gap_l)
    return (">" if gap_w < gap_l else "<"), bound


def main() -> None:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", required=True, type=Path)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    table = measure(load_photos(args.photos, args.size))
    print(f"{'error model':30s} {'s':>5s} {'PSNR dB':>8s} {'CF gap':>7s}")
    for name, rows in table.items():
        for scale, (psnr, gap) in rows.items():
            print(f"{name:30s} {scale:5.2f} {psnr:8.2f} {gap:7.2f}")
    blur, rot45, rot90, other = (table[name] for name in error_models(torch.zeros(1, 2, 16, 16)))
    conditions = {
        "a. another photo's colors beat gray": better_than(other[1.0], other[0.0]),
        "b1. another photo's colors at full beat half saturation": better_than(other[1.0], other[0.5]),
        "b2. 90-degree hue errors at full beat half saturation": better_than(rot90[1.0], rot90[0.5]),
        "c. right colors at half saturation beat 90-degree errors at full": better_than(blur[0.5], rot90[1.0]),
        "d. right colors at 3/4 saturation beat 45-degree errors at full": better_than(blur[0.75], rot45[1.0]),
    }
    low = max(bound for sign, bound in conditions.values() if sign == ">")
    high = min(bound for sign, bound in conditions.values() if sign == "<")
    for text, (sign, bound) in conditions.items():
        print(f"{text}: lambda {sign} {bound:.3f}")
    print(f"all hold for {low:.3f} < lambda < {high:.3f}; colorray uses {metrics.COLOR_SCORE_DB_PER_CF}")
    print(json.dumps({"table": {n: {str(s): v for s, v in r.items()} for n, r in table.items()},
                      "lambda_low": low, "lambda_high": high, "lambda": metrics.COLOR_SCORE_DB_PER_CF}))


if __name__ == "__main__":
    main()
