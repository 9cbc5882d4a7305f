"""Offline colorization on scikit-image photos: sizes, lightness, alpha and folder structure kept; clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color as skcolor
from skimage import data as skimage_data

from colorray import colorize
from colorray.export import save_generator
from colorray.inference import Colorizer
from colorray.models import create_model

COLOR_SHAPE = (45, 67)  # odd, non-square (height, width)
GRAY_SHAPE = (67, 45)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colorize")
    Image.fromarray(skimage_data.chelsea()[100:100 + COLOR_SHAPE[0], 150:150 + COLOR_SHAPE[1]]).save(root / "cat.png")
    Image.fromarray(skimage_data.camera()[200:200 + GRAY_SHAPE[0], 200:200 + GRAY_SHAPE[1]]).save(root / "gray.png")
    album = root / "album"
    (album / "trip" / "day2").mkdir(parents=True)
    coffee = skimage_data.coffee()[:33, :51]
    Image.fromarray(np.dstack([coffee, np.linspace(0, 255, 33 * 51).reshape(33, 51).astype(np.uint8)])).save(
        album / "cup.png")
    Image.fromarray(skimage_data.rocket()[:40, :30]).save(album / "trip" / "rocket.jpg")
    Image.fromarray(skimage_data.astronaut()[:31, :29]).save(album / "trip" / "day2" / "astronaut.png")
    (album / "trip" / "broken.png").write_bytes(b"not a png")
    torch.manual_seed(0)
    save_generator(root / "cnn.pt", create_model("cnn", width=8), image_size=32)
    return root


@pytest.fixture(scope="module")
def colorized(workspace) -> tuple[subprocess.CompletedProcess, Path]:
    out = workspace / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "colorray.colorize", str(workspace / "cnn.pt"), str(workspace / "cat.png"),
         str(workspace / "gray.png"), str(workspace / "album"), "--out", str(out)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    assert completed.returncode == 0, completed.stderr
    return completed, out


def lightness(path: Path) -> np.ndarray:
    return skcolor.rgb2lab(np.asarray(Image.open(path).convert("RGB")))[..., 0]


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("cat", COLOR_SHAPE), ("gray", GRAY_SHAPE)])
def test_output_keeps_size_and_lightness(workspace, colorized, name, shape):
    _, out = colorized
    result = Image.open(out / f"{name}.png")
    assert (result.height, result.width) == shape and result.mode == "RGB"
    assert np.abs(lightness(out / f"{name}.png") - lightness(workspace / f"{name}.png")).max() < 1.0
    chroma = np.hypot(*np.moveaxis(skcolor.rgb2lab(np.asarray(result))[..., 1:], -1, 0))
    assert chroma.mean() > 1.0  # colored, not a gray copy


@pytest.mark.slow
def test_folder_structure_alpha_and_skips(workspace, colorized):
    completed, out = colorized
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["album/cup.png", "album/trip/day2/astronaut.png", "album/trip/rocket.png", "cat.png",
                       "gray.png"]
    cup = Image.open(out / "album" / "cup.png")
    assert cup.mode == "RGBA"
    original_alpha = np.asarray(Image.open(workspace / "album" / "cup.png"))[..., 3]
    assert np.array_equal(np.asarray(cup)[..., 3], original_alpha)
    assert "skipped" in completed.stderr and "broken.png" in completed.stderr
    assert "colorized 5 images" in completed.stdout and "skipped 1 unreadable" in completed.stdout


def test_jpeg_output_and_temperature(workspace, capsys):
    out = workspace / "out-jpeg"
    assert colorize.main([str(workspace / "cnn.pt"), str(workspace / "cat.png"), "--out", str(out), "--format", "jpeg",
                          "--temperature", "0.2"]) == 0
    with Image.open(out / "cat.jpg") as image:
        assert image.format == "JPEG" and (image.height, image.width) == COLOR_SHAPE
    assert "colorized 1 images" in capsys.readouterr().out


def written_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_batched_stream_writes_what_one_image_at_a_time_writes(workspace, capsys):
    inputs = [str(workspace / "cnn.pt"), str(workspace / "album"), str(workspace / "cat.png"),
              str(workspace / "gray.png")]
    one = workspace / "out-one-by-one"
    assert colorize.main(inputs + ["--out", str(one), "--batch-size", "1", "--workers", "0"]) == 0
    batched = workspace / "out-batched"
    assert colorize.main(inputs + ["--out", str(batched), "--batch-size", "3", "--workers", "2"]) == 0
    assert written_files(one) == written_files(batched) and len(written_files(one)) == 5
    colorizer = Colorizer.from_path(workspace / "cnn.pt", device="cpu")
    expected = colorizer.colorize([np.asarray(Image.open(workspace / "cat.png").convert("RGB"))])[0]
    assert np.array_equal(np.asarray(Image.open(batched / "cat.png")), expected)
    assert capsys.readouterr().out.count("skipped 1 unreadable") == 2


@pytest.mark.parametrize("arguments, expected", [
    (["cnn.pt", "cat.png", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["cnn.pt", "cat.png", "--device", "gpu"], "unknown device 'gpu'"),
    pytest.param(["cnn.pt", "cat.png", "--device", "cuda"], "torch sees no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    (["missing.pt", "cat.png"], "model path not found"),
    (["cnn.pt", "missing.png"], "input not found: "),
    (["cat.png", "gray.png"], "is not a colorray generator export"),
    (["cnn.pt", "album/trip/broken.png"], "none of the 1 input images could be read"),
    (["cnn.pt", "cat.png", "--out", "."], "would overwrite the input image"),
])
def test_bad_inputs_give_one_clear_error(workspace, capsys, monkeypatch, arguments, expected):
    monkeypatch.chdir(workspace)
    assert colorize.main(arguments + ["--out", "out-bad"] if "--out" not in arguments else arguments) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1]
