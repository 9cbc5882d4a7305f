"""The empirical ab prior: ``python -m colorray.prior SHARDS OUT.npy [--limit N] [--image-size S]``.

Counts the ground-truth ab of every pixel of the shards (decoded
deterministically, as for validation) per nearest bin of
``colorray.color.ab_bins()`` and saves them as a ``.npy`` vector. The losses
turn it into weights with ``colorray.color.rebalance_weights(prior, bins)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from colorray import cli, color
from colorray.data.loader import DataError, open_shard_set, val_loader

_BATCH_SIZE = 8  # the nearest-bin search holds (pixels x bins) distances: keep batches small


PRIOR_HELP = "compute one with `python -m colorray.prior SHARDS prior.npy` and set loss.prior"


class PriorError(ValueError):
    """A prior that is missing or does not match the ab bins."""


def compute_prior(spec: str, limit: int = 0, image_size: int = 64, loader_workers: int = 0) -> torch.Tensor:
    """Counts (Q,) of ab pixels per bin over the shards at ``spec`` (the first ``limit`` images, 0: all)."""
    shards = open_shard_set(spec)
    bins = color.ab_bins()
    counts = torch.zeros(bins.shape[0], dtype=torch.float64)
    batches = val_loader(shards, image_size=image_size, batch_size=_BATCH_SIZE, rank=0, world_size=1,
                         limit=limit, loader_workers=loader_workers)
    for batch in batches:
        lab = color.rgb_to_lab(batch["rgb"])
        counts += color.ab_histogram(lab[:, 1:3], bins)
    if counts.sum() == 0:
        raise DataError(f"no image of {spec} could be decoded")
    return counts


def load_prior(prior: torch.Tensor | np.ndarray | str | Path) -> torch.Tensor:
    """An ab prior (counts per bin of ``color.ab_bins()``) from a tensor, an array or a .npy file."""
    if isinstance(prior, (str, Path)):
        path = Path(prior).expanduser()
        if not path.is_file():
            raise PriorError(f"ab prior file not found: {path}; {PRIOR_HELP}")
        try:
            prior = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise PriorError(f"ab prior file {path} is not a .npy array: {error}") from None
    values = torch.as_tensor(prior, dtype=torch.float64)
    expected = color.ab_bins().shape[0]
    if values.shape != (expected,):
        raise PriorError(f"ab prior has shape {tuple(values.shape)}, expected ({expected},): one count per ab bin")
    if not torch.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise PriorError("an ab prior must hold finite non-negative counts with a positive sum")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m colorray.prior", description=__doc__.splitlines()[0])
    parser.add_argument("shards", help="shard folder, dataset root, brace pattern or URL")
    parser.add_argument("out", help="output .npy file of counts per ab bin")
    parser.add_argument("--limit", type=int, default=0, help="use the first N images (0: all)")
    parser.add_argument("--image-size", type=int, default=64, help="decode size (short side, center crop)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: in-process)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".npy":
        return cli.fail(f"output file must end in .npy, got {out}")
    try:
        if args.limit < 0:
            raise DataError(f"--limit must be >= 0, got {args.limit}")
        prior = compute_prior(args.shards, args.limit, args.image_size, args.workers)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, prior.numpy())
    except (DataError, OSError) as error:
        return cli.fail(error)
    print(f"wrote {out}: {int(prior.sum())} pixels over {prior.shape[0]} ab bins ({int((prior > 0).sum())} used)")
    return 0
