"""FID: the Fréchet distance itself, and the evaluation harness computing it with Inception weights, skipping it without.

A random-weight Inception file stands in for torchvision's here to exercise the code
path; such numbers are never reported (the harness only ever loads the real file).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg
from skimage import data as skimage_data
from torchvision.models import inception_v3

from colorray import metrics
from colorray.evaluate import harness
from colorray.export import save_generator
from colorray.models import create_model
from colorray.models.weights import expected_path


def test_frechet_distance_of_a_mean_shift_and_of_a_scaled_set():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=generator, dtype=torch.float64)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metrics.frechet_distance(a, a + torch.tensor([1.0, 2.0, 0.0])) == pytest.approx(5.0, rel=1e-6)
    # N(0, I) against N(0, 4I) in 3 dimensions: 3 * (1 + 4 - 2 * 2) = 3, up to sampling error
    assert metrics.frechet_distance(a, 2 * torch.randn(4000, 3, generator=generator, dtype=torch.float64)) == \
        pytest.approx(3.0, rel=0.1)
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        metrics.frechet_distance(a[:1], a)


@pytest.mark.parametrize("count_a, count_b", [(6, 9), (40, 60)])  # fewer images than dimensions, and more
def test_frechet_distance_equals_the_matrix_square_root_formula(count_a, count_b):
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(count_a, 8, generator=generator, dtype=torch.float64)
    b = torch.randn(count_b, 8, generator=generator, dtype=torch.float64) * 1.5 + 0.3
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    expected = (((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(cov_a) + np.trace(cov_b)
                - 2 * np.trace(linalg.sqrtm(cov_a @ cov_b).real))
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


@pytest.fixture
def photos_and_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(getattr(skimage_data, name)()).save(tmp_path / f"{name}.png")
    torch.manual_seed(0)
    save_generator(tmp_path / "cnn.pt", create_model("cnn", width=8), image_size=32)
    return tmp_path


def evaluate(root, out: str, *extra: str) -> dict:
    assert harness.main(["--model", str(root / "cnn.pt"), "--data", str(root), "--size", "64", "--out",
                         str(root / out), *extra]) == 0
    return json.loads((root / out / "results.json").read_text())


def test_without_inception_weights_fid_is_skipped_and_says_why(photos_and_model):
    results = evaluate(photos_and_model, "out")
    assert results["fid"].startswith("FID skipped: ") and "inception_v3_google-0cc3c7bd.pth" in results["fid"]
    assert all("fid" not in row for row in results["summary"].values())
    assert results["fid"] in (photos_and_model / "out" / "results.md").read_text()
    assert evaluate(photos_and_model, "off", "--no-fid")["fid"] == "FID not computed (--no-fid)"


def test_with_inception_weights_every_row_gets_its_fid_against_the_truth(photos_and_model):
    path = expected_path("inception_v3")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    results = evaluate(photos_and_model, "out")
    fid = {row: float(values["fid"]["mean"]) for row, values in results["summary"].items()}
    assert fid[harness.TRUTH_ROW] == pytest.approx(0.0, abs=1e-3)
    assert fid[harness.GRAY_ROW] > 0 and np.isfinite(fid["cnn (cnn)"])
    assert results["fid"].startswith("FID against the ground truth over 3 images")
    assert "FID ↓" in (photos_and_model / "out" / "results.md").read_text()
