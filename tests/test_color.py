"""Color science against scikit-image, and the properties of the quantized ab space."""

import warnings

import numpy as np
import pytest
import skimage.color
import skimage.data
import torch

from colorray import color


def to_nchw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)


def to_nhwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(0, 2, 3, 1).numpy()


def gamut_corners() -> np.ndarray:
    corners = [[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)]
    return np.array(corners, dtype=np.uint8).reshape(1, 2, 4, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rgb_to_lab_matches_skimage_on_random_colors_and_corners(dtype):
    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (4, 17, 23, 3), dtype=np.uint8), gamut_corners()):
        ours = to_nhwc(color.rgb_to_lab(to_nchw(image).to(dtype) / 255.0))
        assert np.abs(ours - skimage.color.rgb2lab(image)).max() < 0.01


def test_rgb_to_lab_accepts_uint8_and_a_real_photo():
    photo = skimage.data.astronaut()[None, ::4, ::4]
    ours = to_nhwc(color.rgb_to_lab(to_nchw(photo)))
    assert np.abs(ours - skimage.color.rgb2lab(photo)).max() < 0.01


def test_uint8_batches_on_the_cpu_match_the_float_formula():
    rng = np.random.default_rng(4)
    rgb = torch.from_numpy(rng.integers(0, 256, (3, 3, 19, 23), dtype=np.uint8))
    fast, exact = color.rgb_to_lab(rgb), color.rgb_to_lab(rgb.double() / 255.0)
    assert fast.shape == exact.shape and fast.dtype == torch.float32
    assert (fast.double() - exact).abs().max() < 2e-4
    assert color.rgb_to_lab(rgb[:0]).shape == (0, 3, 19, 23)
    channels_last = rgb.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert torch.equal(color.rgb_to_lab(channels_last), fast)


def test_lab_to_rgb_matches_skimage_inside_the_ab_box():
    rng = np.random.default_rng(1)
    lab = rng.uniform([0, -110, -110], [100, 110, 110], (3, 19, 21, 3))
    with pytest.warns(UserWarning):  # scikit-image warns when it clips negative Z, as we do
        reference = skimage.color.lab2rgb(lab)
    ours = to_nhwc(color.lab_to_rgb(to_nchw(lab)))
    assert np.abs(ours - reference).max() < 1e-4


def test_round_trip_is_exact_within_tolerance():
    rng = np.random.default_rng(2)
    rgb = torch.from_numpy(rng.uniform(0, 1, (2, 3, 9, 11)))
    assert torch.allclose(color.lab_to_rgb(color.rgb_to_lab(rgb)), rgb, atol=1e-6)


def test_out_of_gamut_lab_is_clipped_without_nan():
    lab = torch.tensor([[-50.0, 300.0, -400.0], [150.0, -500.0, 500.0], [50.0, 1e6, 0.0]]).T.reshape(1, 3, 3, 1)
    rgb = color.lab_to_rgb(lab)
    assert torch.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1


def test_conversion_is_differentiable_without_nan_gradients():
    rgb = torch.rand(2, 3, 8, 8, requires_grad=True)
    lab = color.rgb_to_lab(rgb)
    back = color.lab_to_rgb(lab + torch.randn_like(lab) * 30)
    back.sum().backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_model_inputs_of_uint8_cpu_batches_are_the_normalized_float_formula():
    rgb = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (2, 3, 13, 17), dtype=np.uint8))
    L, ab = color.rgb_to_model_inputs(rgb)
    exact = color.rgb_to_lab(rgb.double() / 255.0)
    assert L.shape == (2, 1, 13, 17) and ab.shape == (2, 2, 13, 17) and L.dtype == ab.dtype == torch.float32
    assert (L.double() - color.normalize_l(exact[:, 0:1])).abs().max() < 1e-5
    assert (ab.double() - color.normalize_ab(exact[:, 1:3])).abs().max() < 1e-5


def test_normalization_round_trips():
    rgb = torch.randint(0, 256, (2, 3, 6, 6), dtype=torch.uint8)
    L, ab = color.rgb_to_model_inputs(rgb)
    assert L.min() >= -1 and L.max() <= 1 and ab.abs().max() <= 128 / 110
    rebuilt = color.model_outputs_to_rgb(L, ab)
    assert (rebuilt * 255 - rgb.float()).abs().max() < 1.0


def test_ab_bins_are_the_in_gamut_cells_of_the_grid():
    bins = color.ab_bins()
    assert bins.shape == (262, 2)
    assert torch.all(bins.remainder(10) == 0) and bins.abs().max() <= 110
    # every sRGB color's ab falls into (the cell of) a kept bin
    levels = torch.arange(0, 256, 15, dtype=torch.uint8)
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    rgb = torch.stack([r.flatten(), g.flatten(), b.flatten()]).reshape(1, 3, -1, 1)
    ab = color.rgb_to_lab(rgb)[:, 1:3]
    _, sq_dist = color.nearest_bins(ab, bins, 1)
    assert sq_dist.max().sqrt() <= 5 * 2**0.5 + 1e-4
    assert color.ab_bins(grid=20).shape[0] < bins.shape[0]


def test_soft_encoding_weights_sum_to_one_and_favor_the_nearest_bin():
    bins = color.ab_bins()
    ab = torch.tensor([[[[12.0]], [[-31.0]]]])
    index, weight = color.soft_encode(ab, bins, neighbours=5, sigma=5.0)
    assert index.shape == (1, 5, 1, 1) and torch.allclose(weight.sum(1), torch.ones(1, 1, 1))
    assert tuple(bins[index[0, weight[0].argmax(0)].item()].tolist()) == (10.0, -30.0)
    dense = color.dense_soft_encoding(index, weight, bins.shape[0])
    assert dense.shape == (1, 262, 1, 1) and torch.isclose(dense.sum(), torch.tensor(1.0))
    _, wide = color.soft_encode(ab, bins, neighbours=10, sigma=20.0)
    assert wide.max() < weight.max()


def test_rebalancing_weights_favor_rare_colors_and_have_unit_expectation():
    bins = color.ab_bins()
    prior = torch.ones(bins.shape[0])
    prior[0] = 1000.0
    weights = color.rebalance_weights(prior, bins, mix=0.5, sigma=5.0)
    smoothed = color.smooth_prior(prior / prior.sum(), bins, 5.0)
    assert weights[0] < weights[100]
    assert torch.isclose((weights.double() * smoothed).sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5)
    uniform = color.rebalance_weights(torch.ones(bins.shape[0]), bins)
    assert torch.allclose(uniform, torch.ones_like(uniform), atol=0.2)
    with pytest.raises(ValueError, match="prior"):
        color.rebalance_weights(torch.zeros(bins.shape[0]), bins)


def test_annealed_mean_interpolates_between_mode_and_mean():
    bins = color.ab_bins()
    logits = torch.full((1, bins.shape[0], 1, 1), -10.0)
    logits[0, 0], logits[0, 200] = 2.0, 1.5
    mode = color.annealed_mean(logits, bins, 0.0)[0, :, 0, 0]
    mean = color.annealed_mean(logits, bins, 1.0)[0, :, 0, 0]
    annealed = color.annealed_mean(logits, bins, 0.38)[0, :, 0, 0]
    assert torch.equal(mode, bins[0])
    assert (annealed - bins[0]).norm() < (mean - bins[0]).norm()
    assert (annealed - bins[0]).norm() > 0
    with pytest.raises(ValueError):
        color.annealed_mean(logits, bins, -1.0)


def test_histogram_counts_pixels_per_nearest_bin():
    bins = color.ab_bins()
    ab = torch.zeros(1, 2, 4, 4)
    counts = color.ab_histogram(ab, bins)
    assert counts.sum() == 16 and counts.argmax() == int(((bins == 0).all(1)).nonzero())


# --- uint8 images at full resolution -------------------------------------------------


def test_lightness_of_uint8_images_matches_skimage():
    rng = np.random.default_rng(3)
    for image in (rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), gamut_corners()[0],
                  skimage.data.astronaut()[::3, ::3], np.zeros((2, 2, 3), np.uint8)):
        L = color.lightness(np.ascontiguousarray(image))
        assert L.dtype == np.float32 and L.shape == image.shape[:2]
        assert np.abs(L - skimage.color.rgb2lab(image)[..., 0]).max() < 1e-3


def test_lightness_refuses_other_arrays():
    with pytest.raises(ValueError, match="uint8"):
        color.lightness(np.zeros((4, 4, 3), np.float32))


def reference_join(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """scikit-image's lab2rgb of L with ab resized by torch's bilinear (half-pixel centers), as uint8."""
    full_ab = color.resize_ab(to_nchw(ab[None]), L.shape).numpy()[0].transpose(1, 2, 0)
    lab = np.dstack([L, np.clip(full_ab, -110, 110)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image warns when it clips negative Z, as we do
        return (skimage.color.lab2rgb(lab) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("saturation", [0.5, 1.5, 4.0])
@pytest.mark.parametrize("ab_size", [(16, 16), (61, 43)])
def test_join_lightness_ab_matches_skimage(saturation, ab_size):
    photo = skimage.data.astronaut()[::4, ::3]
    L = color.lightness(np.ascontiguousarray(photo))
    ab = skimage.color.rgb2lab(skimage.data.coffee())[..., 1:]
    ab = (torch.nn.functional.interpolate(to_nchw(ab[None]), size=ab_size, mode="area")[0].permute(1, 2, 0).numpy()
          * saturation).astype(np.float32)
    ours = color.join_lightness_ab(L, ab)
    reference = reference_join(L.astype(np.float64), ab.astype(np.float64))
    assert ours.dtype == np.uint8 and ours.shape == photo.shape
    assert np.abs(ours.astype(int) - reference).max() <= 1
    assert (ours != reference).mean() < 0.01


def test_every_output_space_decodes_to_normalized_ab_at_the_input_size():
    L_norm = torch.zeros(1, 1, 8, 12)
    ab = torch.full((1, 2, 4, 6), 0.25)
    assert torch.allclose(color.prediction_to_ab(ab, "ab", L_norm), torch.full((1, 2, 8, 12), 0.25))
    bins = color.ab_bins()
    chosen = 17
    logits = torch.full((1, bins.shape[0], 2, 3), -50.0)
    logits[:, chosen] = 50.0
    decoded = color.prediction_to_ab(logits, "bins", L_norm)
    assert decoded.shape == (1, 2, 8, 12)
    assert torch.allclose(decoded[0, :, 0, 0], bins[chosen] / color.AB_SCALE, atol=1e-5)
    rgb = torch.tensor([0.8, 0.3, 0.1]).view(1, 3, 1, 1).expand(1, 3, 8, 12)
    expected = skimage.color.rgb2lab(np.array([[[0.8, 0.3, 0.1]]]))[0, 0, 1:] / color.AB_SCALE
    assert np.allclose(color.prediction_to_ab(rgb, "rgb", L_norm)[0, :, 3, 5].numpy(), expected, atol=1e-4)
    with pytest.raises(ValueError, match="output space 'critic' has no ab decoding; output spaces: ab, bins, rgb"):
        color.prediction_to_ab(ab, "critic", L_norm)


def test_training_targets_are_rgb_in_0_1_for_rgb_models_and_ab_otherwise():
    rgb = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    _, ab = color.rgb_to_model_inputs(rgb)
    assert torch.equal(color.training_target("rgb", rgb, ab), torch.tensor([0.0, 0.2, 1.0]).view(1, 3, 1, 1))
    assert color.training_target("ab", rgb, ab) is ab and color.training_target("bins", rgb, ab) is ab
    assert color.annealed_mean.__defaults__ == (color.ANNEALED_MEAN_T,) == (0.38,)
