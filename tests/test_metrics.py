"""Metrics against scikit-image and small numpy references on real photos (skimage.data), and LPIPS loading."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torchvision
from scipy import stats
from skimage import data, filters
from skimage.metrics import (
    mean_squared_error,
    peak_signal_noise_ratio,
    structural_similarity,
)

from colorray import color, metrics
from colorray.models.weights import PretrainedWeightsMissing

CROP = (96, 128)


def crop(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - CROP[0]) // 2, (w - CROP[1]) // 2
    return image[top : top + CROP[0], left : left + CROP[1]]


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HWC images to float RGB 0..1 (N, 3, H, W)."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).double() / 255.0


def to_uint8(rgb: torch.Tensor) -> list[np.ndarray]:
    return list((rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [crop(data.astronaut()), crop(data.chelsea()), crop(data.coffee())]


@pytest.fixture(scope="module")
def modified(photos) -> list[np.ndarray]:
    """Noisy, blurred and ab-shifted versions of the three photos, as uint8."""
    rng = np.random.default_rng(0)
    noisy = np.clip(photos[0] + rng.normal(0, 12, photos[0].shape), 0, 255).astype(np.uint8)
    blurred = (filters.gaussian(photos[1], sigma=1.5, channel_axis=-1) * 255).round().astype(np.uint8)
    lab = color.rgb_to_lab(to_tensor([photos[2]]))
    shifted = color.lab_to_rgb(lab + torch.tensor([0.0, 12.0, -8.0], dtype=lab.dtype).view(1, 3, 1, 1))
    return [noisy, blurred, to_uint8(shifted)[0]]


def numpy_colorfulness(image: np.ndarray) -> float:
    r, g, b = (image[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return math.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2)


def test_rgb_metrics_equal_scikit_image(photos, modified):
    true, pred = to_tensor(photos), to_tensor(modified)
    expected_psnr = [peak_signal_noise_ratio(t, p, data_range=255) for t, p in zip(photos, modified)]
    expected_ssim = [structural_similarity(p, t, channel_axis=-1, data_range=255) for t, p in zip(photos, modified)]
    expected_mse = [mean_squared_error(t, p) for t, p in zip(photos, modified)]
    expected_mae = [np.abs(t.astype(float) - p.astype(float)).mean() for t, p in zip(photos, modified)]
    assert metrics.psnr(pred, true).shape == (3,)
    np.testing.assert_allclose(metrics.psnr(pred, true).numpy(), expected_psnr, rtol=1e-9)
    np.testing.assert_allclose(metrics.ssim(pred, true).numpy(), expected_ssim, atol=1e-3)
    np.testing.assert_allclose(metrics.mse(pred, true).numpy(), expected_mse, rtol=1e-9)
    np.testing.assert_allclose(metrics.mae(pred, true).numpy(), expected_mae, rtol=1e-9)


def test_ssim_is_computed_from_uint8_rounding_of_float_input(photos):
    true = to_tensor(photos[:1])
    jittered = (true + 0.4 / 255).float()
    assert metrics.ssim(jittered, true).item() == pytest.approx(1.0)
    assert metrics.psnr(jittered, true).item() == math.inf


def test_ssim_rejects_images_smaller_than_its_window():
    tiny = torch.rand(1, 3, 6, 20)
    with pytest.raises(ValueError, match="at least 7x7"):
        metrics.ssim(tiny, tiny)


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        metrics.psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


def test_colorfulness_matches_numpy_reference(photos, modified):
    images = photos + modified
    expected = [numpy_colorfulness(image) for image in images]
    np.testing.assert_allclose(metrics.colorfulness(to_tensor(images)).numpy(), expected, rtol=1e-9)
    gray = color.rgb_to_gray(to_tensor(photos))
    assert (metrics.colorfulness(gray) < 1.5).all()


def test_constant_ab_shift_gives_exact_accuracy_and_auc():
    true_ab = torch.randint(-80, 80, (2, 2, 16, 16)).double()
    pred_ab = true_ab + torch.tensor([3.0, 4.0], dtype=torch.float64).view(1, 2, 1, 1)  # every pixel 5 ab units off
    assert metrics.accuracy_within(pred_ab, true_ab, 5.0).tolist() == [1.0, 1.0]
    assert metrics.accuracy_within(pred_ab, true_ab, 4.9).tolist() == [0.0, 0.0]
    # Accuracy curve 0 below 5 and 1 from 5 on: trapezoid area 145.5 over the range 150.
    np.testing.assert_allclose(metrics.ab_auc(pred_ab, true_ab).numpy(), [145.5 / 150] * 2, rtol=1e-5)


def test_auc_is_one_for_perfect_prediction_and_lower_for_grayscale(photos):
    true_ab = color.rgb_to_lab(to_tensor(photos))[:, 1:3]
    assert torch.allclose(metrics.ab_auc(true_ab, true_ab), torch.ones(3, dtype=torch.float64))
    gray_auc = metrics.ab_auc(torch.zeros_like(true_ab), true_ab)
    assert (gray_auc < 1.0).all() and (gray_auc > 0.5).all()


def test_rebalanced_auc_weights_rare_colors(photos):
    true_ab = color.rgb_to_lab(to_tensor(photos))[:, 1:3].float()
    bins = color.ab_bins()
    class_weights = color.rebalance_weights(color.ab_histogram(true_ab, bins), bins)
    pixel_weights = color.pixel_rebalance_weights(true_ab, class_weights, bins)
    assert pixel_weights.shape == (3, 1, *CROP)
    gray = torch.zeros_like(true_ab)
    plain = metrics.ab_auc(gray, true_ab)
    uniform = metrics.ab_auc(gray, true_ab, weights=torch.ones_like(pixel_weights))
    rebalanced = metrics.ab_auc(gray, true_ab, weights=pixel_weights)
    assert torch.allclose(plain, uniform)
    assert (rebalanced < plain).all()  # gray output misses exactly the rare, saturated pixels


def test_auc_rejects_bad_thresholds():
    ab = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="step"):
        metrics.ab_auc(ab, ab, step=0)


def test_image_metrics_keys_shapes_and_grayscale_baseline(photos):
    L, true_ab = color.rgb_to_model_inputs(to_tensor(photos).float())
    bins = color.ab_bins()
    rebalance = color.rebalance_weights(color.ab_histogram(color.denormalize_ab(true_ab), bins), bins)
    gray = metrics.image_metrics(L, torch.zeros_like(true_ab), true_ab, rebalance=rebalance)
    expected_keys = {"psnr", "ssim", "mse", "mae", "auc", "auc_rebalanced", "colorfulness", "colorfulness_gt",
                     "colorfulness_gap", "color_score", "acc_2.5", "acc_5", "acc_10", "acc_20"}
    assert set(gray) == expected_keys
    # every key is a valid MLflow metric name (alphanumerics, _ - . space : /), which the tracker logs as is
    assert all(re.fullmatch(r"[\w\-. :/]+", f"val/{key}") for key in gray), sorted(gray)
    for values in gray.values():
        assert values.shape == (3,) and values.dtype == torch.float64 and values.device.type == "cpu"
    noise = metrics.image_metrics(L, torch.rand_like(true_ab) * 2 - 1, true_ab)
    assert (gray["psnr"] > noise["psnr"] + 5).all()  # the true L alone already scores a high PSNR
    assert (gray["auc_rebalanced"] < gray["auc"]).all()
    assert torch.allclose(gray["colorfulness_gap"], gray["colorfulness_gt"] - gray["colorfulness"])
    perfect = metrics.image_metrics(L, true_ab, true_ab)
    assert "auc_rebalanced" not in perfect and "lpips" not in perfect
    assert (perfect["psnr"] == math.inf).all()
    assert torch.allclose(perfect["ssim"], torch.ones(3, dtype=torch.float64))
    assert torch.allclose(perfect["auc"], torch.ones(3, dtype=torch.float64))
    assert (perfect["colorfulness_gap"] == 0).all()


def test_image_metrics_rejects_mismatched_resolutions():
    with pytest.raises(ValueError, match="matching ab"):
        metrics.image_metrics(torch.zeros(1, 1, 16, 16), torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))


def test_summarize_gives_mean_and_student_t_interval():
    values = torch.tensor([20.0, 22.0, 25.0, 21.0, 24.0], dtype=torch.float64)
    summary = metrics.summarize({"psnr": values, "one": torch.tensor([3.0])})
    low, high = stats.t.interval(0.95, 4, loc=values.mean().item(), scale=stats.sem(values.numpy()))
    assert summary["psnr"][0] == pytest.approx(22.4)
    assert summary["psnr"][1] == pytest.approx((high - low) / 2)
    assert summary["one"][0] == 3.0 and math.isnan(summary["one"][1])
    with pytest.raises(ValueError, match="no values"):
        metrics.summarize({"empty": torch.tensor([])})


def test_lpips_without_alexnet_weights_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsMissing, match="alexnet-owt-7be5be79.pth"):
        metrics.LPIPSMetric()
    assert metrics.load_lpips_or_none() is None


def test_lpips_uses_the_alexnet_weights_from_the_file(tmp_path, photos, modified):
    state = torchvision.models.alexnet().state_dict()
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    lpips_metric = metrics.load_lpips_or_none(str(path))
    assert isinstance(lpips_metric, metrics.LPIPSMetric)
    backbone = lpips_metric.model.net
    assert torch.equal(backbone.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(backbone.slice5, "10").bias, state["features.10.bias"])
    true, pred = to_tensor(photos).float(), to_tensor(modified).float()
    distances = lpips_metric(pred, true)
    assert distances.shape == (3,) and (distances > 0).all()
    assert torch.allclose(lpips_metric(true, true), torch.zeros(3), atol=1e-6)
    L, true_ab = color.rgb_to_model_inputs(true)
    scores = metrics.image_metrics(L, torch.zeros_like(true_ab), true_ab, lpips=lpips_metric)
    assert scores["lpips"].shape == (3,) and (scores["lpips"] > 0).all()


def test_lpips_rejects_a_checkpoint_without_the_backbone(tmp_path):
    path = tmp_path / "classifier_only.pth"
    torch.save({"classifier.1.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="do not fit.*features.0.weight"):
        metrics.LPIPSMetric(str(path))
