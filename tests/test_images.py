"""Decoding input images (``colorray.data.images``): JPEGs, float images with NaN/inf, and the pixel limit named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from colorray import colorize
from colorray.data.images import ImageError, decode_image
from colorray.export import save_generator
from colorray.models import create_model


def float_tiff(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.float32), mode="F").save(buffer, "TIFF")
    return buffer.getvalue()


def gradient() -> np.ndarray:
    return np.linspace(0.0, 1.0, 20 * 30).reshape(20, 30)


def jpeg(mode: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()[:300, :200]).convert(mode).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_a_jpeg_decodes_to_pillows_pixels(mode):
    data = jpeg(mode)
    decoded = decode_image(data)
    assert np.array_equal(decoded.rgb, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert decoded.rgb.shape == (300, 200, 3) and decoded.was_gray == (mode == "L") and decoded.alpha is None


def test_a_jpeg_with_an_exif_rotation_is_turned_upright_and_a_truncated_one_refused():
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    assert decode_image(jpeg("RGB", exif=exif.tobytes())).rgb.shape == (200, 300, 3)
    with pytest.raises(ImageError, match="truncated"):
        decode_image(jpeg("RGB")[:4000])


@pytest.mark.parametrize("bad, count", [(np.nan, 1), (np.inf, 2), (-np.inf, 1)])
def test_float_images_with_non_finite_pixels_are_refused_naming_them(bad, count):
    values = gradient()
    values.flat[[7, 99][:count]] = bad
    with pytest.raises(ImageError, match=rf"image has {count} non-finite pixel value\(s\) \(NaN or infinite\)"):
        decode_image(float_tiff(values))


def test_finite_float_images_decode_to_a_gray_ramp():
    decoded = decode_image(float_tiff(gradient()))
    assert decoded.was_gray and decoded.rgb.shape == (20, 30, 3)
    assert decoded.rgb[0, 0, 0] == 0 and decoded.rgb[-1, -1, 0] == 255


def test_colorize_skips_a_nan_image_with_the_reason_instead_of_writing_black(tmp_path, capsys):
    save_generator(tmp_path / "cnn.pt", create_model("cnn", width=8), image_size=16)
    values = gradient()
    values[3, 4] = np.nan
    (tmp_path / "nan.tif").write_bytes(float_tiff(values))
    assert colorize.main([str(tmp_path / "cnn.pt"), str(tmp_path / "nan.tif"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nan.tif: image has 1 non-finite pixel value(s)" in err
    assert err.rstrip().endswith("error: none of the 1 input images could be read")
    assert not (tmp_path / "out" / "nan.png").exists()


def test_the_pixel_limit_named_is_the_configured_one_not_pillows(monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 100, 50)).save(buffer, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own limit, far below the image
    assert decode_image(buffer.getvalue(), max_pixels=1200).rgb.shape == (30, 40, 3)
    with pytest.raises(ImageError, match=r"image has 40x30 = 1200 pixels, over the limit of 1000 \(refused before "
                                         r"decoding, as a possible decompression bomb\)"):
        decode_image(buffer.getvalue(), max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == 100, "Pillow's setting is put back"
