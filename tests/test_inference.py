"""The full-resolution path against the original one (scikit-image's Lab, torch's resizes): colour within ΔE 0.5."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import skimage.color
import skimage.data
import torch
import torch.nn.functional as F

from colorray import color
from colorray.export import save_generator
from colorray.inference import Colorizer, resolve_device
from colorray.models import create_model, predict_ab

MODEL_SIZE = 32


@pytest.fixture(scope="module")
def colorizer(tmp_path_factory) -> Colorizer:
    """A random cnn whose output layer is scaled up, so its colours are strong and vary over the image."""
    torch.manual_seed(0)
    model = create_model("cnn", width=8)
    with torch.no_grad():
        for parameter in list(model.parameters())[-2:]:
            parameter.mul_(6)
    path = save_generator(tmp_path_factory.mktemp("inference") / "cnn.pt", model, image_size=MODEL_SIZE)
    return Colorizer.from_path(path, device="cpu")


def original_path(colorizer: Colorizer, image: np.ndarray) -> np.ndarray:
    """The full-resolution path as first written: float L from scikit-image, float resizes, lab2rgb."""
    L = skimage.color.rgb2lab(image)[..., 0]
    full_L = torch.from_numpy(L).float()[None, None]
    small_L = F.interpolate(full_L, size=(MODEL_SIZE, MODEL_SIZE), mode="bilinear", antialias=True)
    with torch.no_grad():
        ab_norm = predict_ab(colorizer.model, color.normalize_l(small_L), colorizer.info.temperature)
    ab = F.interpolate(color.denormalize_ab(ab_norm), size=L.shape, mode="bilinear")[0].permute(1, 2, 0).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # negative Z clipped
        rgb = skimage.color.lab2rgb(np.dstack([L, np.clip(ab, -110, 110)]))
    return (rgb * 255).round().astype(np.uint8)


def mean_delta_e(first: np.ndarray, second: np.ndarray) -> float:
    return float(skimage.color.deltaE_ciede2000(skimage.color.rgb2lab(first), skimage.color.rgb2lab(second)).mean())


@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize("numpy_path", [True, False])
def test_output_colour_stays_within_delta_e_of_the_original_path(colorizer, photo, numpy_path):
    image = np.ascontiguousarray(getattr(skimage.data, photo)()[::2, ::2])  # odd sizes, about 250 x 300
    colorizer.numpy_path = numpy_path
    try:
        ours = colorizer.colorize([image])[0]
    finally:
        colorizer.numpy_path = True
    reference = original_path(colorizer, image)
    assert ours.shape == image.shape and ours.dtype == np.uint8
    assert mean_delta_e(ours, reference) <= 0.5
    assert np.abs(skimage.color.rgb2lab(reference)[..., 1:]).mean() > 10  # a real test: strong colours
    lightness = np.abs(skimage.color.rgb2lab(ours)[..., 0] - skimage.color.rgb2lab(image)[..., 0])
    assert np.median(lightness) < 0.5  # the input's own L (only out-of-gamut pixels move)


def test_batched_and_single_calls_agree_on_mixed_sizes(colorizer):
    images = [skimage.data.astronaut()[:90, :130], skimage.data.coffee()[:41, :77], skimage.data.chelsea()[:8, :9]]
    together = colorizer.colorize(images)
    for image, result in zip(images, together):
        assert result.shape == image.shape
        assert np.array_equal(result, colorizer.colorize([image])[0])


def test_prepare_predict_finish_is_colorize(colorizer):
    image = skimage.data.coffee()[::3, ::3]
    prepared = colorizer.prepare(image)
    ab = colorizer.predict_small_ab(prepared.small_L)
    assert ab.shape == (1, 2, MODEL_SIZE, MODEL_SIZE)
    assert np.array_equal(colorizer.finish(prepared, ab[0]), colorizer.colorize([image])[0])


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_precision_and_channels_last_keep_the_colours(colorizer, precision):
    image = skimage.data.astronaut()[::4, ::4]
    other = Colorizer(colorizer.model, colorizer.info, torch.device("cpu"), precision=precision, channels_last=True)
    assert mean_delta_e(other.colorize([image])[0], colorizer.colorize([image])[0]) < 1.0


def test_bad_arrays_and_settings_are_refused(colorizer):
    with pytest.raises(ValueError, match="uint8"):
        colorizer.colorize([np.zeros((4, 4), np.uint8)])
    with pytest.raises(ValueError, match="precision"):
        Colorizer(colorizer.model, colorizer.info, torch.device("cpu"), precision="fp8")


def test_auto_device_is_cuda_only_when_present():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu").type == "cpu"
