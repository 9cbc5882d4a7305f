"""colorray.prior: the ab histogram CLI on the real smoke shards, and prior file validation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from colorray import color
from colorray.data.prior import PriorError, compute_prior, load_prior
from colorray.data.smoke import ensure_smoke_dataset


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    return ensure_smoke_dataset(tmp_path_factory.mktemp("cache"))


def run_prior(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "colorray.prior", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cli_prior(smoke_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior") / "prior.npy"
    done = run_prior(f"{smoke_root}/val", str(out), "--limit", "16", "--image-size", "32")
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_cli_writes_a_prior_the_losses_can_use(cli_prior):
    prior = load_prior(cli_prior)
    bins = color.ab_bins()

    assert prior.shape == (bins.shape[0],) and prior.sum() == 16 * 32 * 32
    assert (prior > 0).sum() > 5, "photos cover more than a handful of colors"
    weights = color.rebalance_weights(prior, bins)
    assert torch.isfinite(weights).all() and (weights > 0).all()


@pytest.mark.slow
def test_compute_prior_matches_the_cli(smoke_root, cli_prior):
    counts = compute_prior(f"{smoke_root}/val", limit=16, image_size=32)

    assert torch.equal(counts, torch.from_numpy(np.load(cli_prior)))


@pytest.mark.slow
def test_bad_prior_files_and_arguments(smoke_root, tmp_path):
    np.save(tmp_path / "short.npy", np.ones(5))
    with pytest.raises(PriorError, match="expected"):
        load_prior(tmp_path / "short.npy")
    with pytest.raises(PriorError, match="not found"):
        load_prior(tmp_path / "absent.npy")
    for args, message in [((str(tmp_path / "nope"), str(tmp_path / "p.npy")), "not found"),
                          ((str(smoke_root), str(tmp_path / "p.txt")), ".npy")]:
        done = run_prior(*args)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr
        assert "Traceback" not in done.stderr
