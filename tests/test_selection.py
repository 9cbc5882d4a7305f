"""Model selection: the one rule (colorray.metrics) that training's export, Tune's best/ and loading a run folder share.

The default metric must not reward gray: on real photos (skimage.data) PSNR prefers
a desaturated copy of a colorization with wrong hues, color_score does not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import ray.train
import torch
from skimage import data

from colorray import color, metrics
from colorray.config import TrainConfig, dump_config
from colorray.export import (
    LAST_EXPORT_FILENAME,
    find_export,
    load_generator,
    save_generator,
)
from colorray.models import create_model
from colorray.models.weights import expected_path
from colorray.train.checkpoints import finish


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache without the AlexNet weights (downloads are off in tests)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.mark.parametrize("metric, mode", [
    ("val/psnr", "max"), ("val/ssim", "max"), ("val/acc_5", "max"), ("val/color_score", "max"),
    ("val/lpips", "min"), ("val/colorfulness_gap", "min"), ("val/mae", "min"), ("train/total", "min"),
])
def test_every_selection_metric_knows_its_direction(metric, mode):
    assert metrics.metric_mode(metric) == mode
    assert metrics.resolve_selection(metric, "auto") == (metric, mode)


def test_a_metric_without_a_direction_or_a_bad_name_is_refused():
    with pytest.raises(ValueError, match="set the mode to max or min"):
        metrics.resolve_selection("val/colorfulness", "auto")
    assert metrics.resolve_selection("val/colorfulness", "max") == ("val/colorfulness", "max")
    with pytest.raises(ValueError, match="must name a reported metric"):
        metrics.resolve_selection("psnr", "auto")
    with pytest.raises(ValueError, match="max, min or auto"):
        metrics.resolve_selection("val/psnr", "maximum")


def test_auto_is_color_score_without_lpips_weights_and_lpips_with_them(empty_hub):
    assert metrics.resolve_selection("auto", "auto") == ("val/color_score", "max")
    alexnet = expected_path("alexnet")
    alexnet.parent.mkdir(parents=True)
    alexnet.write_bytes(b"weights")
    assert metrics.resolve_selection("auto", "auto") == ("val/lpips", "min")


def test_select_best_skips_missing_and_nan_and_prefers_the_later_on_ties():
    candidates = [("a", {"val/x": 1.0}), ("b", {"val/x": 3.0}), ("c", {"val/x": math.nan}),
                  ("d", {"train/y": 9.0}), ("e", {"val/x": 3.0}), ("f", {"val/x": 2.0})]
    assert metrics.select_best(candidates, "val/x", "max")[0] == "e"
    assert metrics.select_best(candidates, "val/x", "min")[0] == "a"
    assert metrics.select_best(candidates, "val/z", "max") is None
    assert metrics.select_best([], "val/x", "max") is None


def photo_batch() -> tuple[torch.Tensor, torch.Tensor]:
    crops = [image[:96, :96] for image in (data.astronaut(), data.chelsea(), data.coffee())]
    return color.rgb_to_model_inputs(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2))


def test_psnr_rewards_desaturation_and_color_score_does_not():
    L, ab = photo_batch()
    wrong_hues = torch.stack([-ab[:, 1], ab[:, 0]], 1)  # every hue turned 90 degrees: colorful and wrong
    scores = {s: metrics.image_metrics(L, wrong_hues * s, ab) for s in (1.0, 0.5, 0.0)}
    psnr = {s: m["psnr"].mean().item() for s, m in scores.items()}
    score = {s: m["color_score"].mean().item() for s, m in scores.items()}
    assert psnr[0.0] > psnr[0.5] > psnr[1.0]  # PSNR would select gray
    assert score[1.0] > score[0.5] > score[0.0]
    expected = scores[1.0]["psnr"] - metrics.COLOR_SCORE_DB_PER_CF * scores[1.0]["colorfulness_gap"]
    assert torch.allclose(scores[1.0]["color_score"], expected)


def write_checkpoint(folder, width: int, val: dict) -> None:
    folder.mkdir(parents=True)
    save_generator(folder / "generator.pt", create_model("cnn", width=width), 32, val)


def test_a_run_folder_without_an_export_loads_the_checkpoint_its_rule_selects(tmp_path):
    run = tmp_path / "run"
    config = TrainConfig()
    config.run.metric, config.run.mode = "val/color_score", "max"
    write_checkpoint(run / "checkpoint_2026-01-01_00-00-01.000000", 4, {"val/color_score": 10.0})
    write_checkpoint(run / "checkpoint_2026-01-01_00-00-02.000000", 5, {"val/color_score": 12.0})
    write_checkpoint(run / "checkpoint_2026-01-01_00-00-03.000000", 6, {"val/color_score": math.nan})
    write_checkpoint(run / "checkpoint_2026-01-01_00-00-04.000000", 7, {"val/color_score": 11.0})
    (run / "config.yaml").write_text(dump_config(config))
    _, info = load_generator(run)
    assert info.options == {"width": 5}
    config.run.mode = "min"
    (run / "config.yaml").write_text(dump_config(config))
    assert find_export(run).parent.name.endswith("00-00-01.000000")


def test_finish_exports_the_selected_and_the_last_checkpoint(tmp_path, empty_hub):
    config = TrainConfig()
    config.run.name, config.run.storage_path = "run", str(tmp_path)
    reports = [(5, {"val/psnr": 24.0, "val/color_score": 9.0}),   # gray-ish: best PSNR
               (6, {"val/psnr": 23.0, "val/color_score": 11.0}),  # selected by the default rule
               (7, {"val/psnr": 22.5, "val/color_score": 10.0})]  # last
    kept = []
    for step, (width, val) in enumerate(reports, 1):
        folder = tmp_path / "run" / f"checkpoint_{step}"
        write_checkpoint(folder, width, val)
        kept.append((ray.train.Checkpoint.from_directory(folder), {**val, "step": step, "epoch": step}))
    result = ray.train.Result(metrics=kept[-1][1], checkpoint=kept[-1][0], error=None, path=str(tmp_path / "run"),
                              best_checkpoints=[kept[1], kept[0], kept[2]])
    lines = finish(config, result)
    assert "selected by val/color_score: 11.0000 (epoch 2, step 2)" in lines
    assert load_generator(tmp_path / "run")[1].options == {"width": 6}
    assert load_generator(tmp_path / "run" / LAST_EXPORT_FILENAME)[1].options == {"width": 7}
    config.run.metric, config.run.mode = "val/psnr", "max"
    finish(config, result)
    assert load_generator(tmp_path / "run")[1].options == {"width": 5}
