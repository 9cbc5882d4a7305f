"""The evaluation harness on the photos scikit-image ships: real exports, real files, the CLI as a subprocess.

The oracle check is honest without a fake model: a model can only see L, so
"a model that returns the true ab" is the ground-truth row, which goes through
the same ``score_predictions`` as every model; the test also feeds the true ab
to ``score_predictions`` directly.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from skimage import color as skcolor
from skimage import data as skimage_data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from colorray import color
from colorray.data.shards import SKIP_REASONS, Sample, split_index, write_tar
from colorray.evaluate import harness
from colorray.export import save_generator
from colorray.metrics import image_metrics
from colorray.models import create_model

SIZE = 64
PHOTOS = {"astronaut.png": skimage_data.astronaut, "chelsea.png": skimage_data.chelsea,
          "coffee.png": skimage_data.coffee, "more/rocket.png": skimage_data.rocket}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "colorray.evaluate", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def protocol_crop(path: Path) -> np.ndarray:
    """The harness's crop of a file (the validation loader's), as a uint8 (SIZE, SIZE, 3) array."""
    return harness.center_crop(path.read_bytes(), SIZE).permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    for name, photo in PHOTOS.items():
        (root / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo()).save(root / "photos" / name)
    Image.fromarray(skimage_data.camera()).save(root / "photos" / "camera.png")
    (root / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "gray").mkdir()
    Image.fromarray(skimage_data.camera()).save(root / "gray" / "camera.png")
    (root / "empty").mkdir()
    torch.manual_seed(0)
    save_generator(root / "cnn.pt", create_model("cnn", width=8), image_size=32)
    (root / "torch-home").mkdir()
    return root


@pytest.fixture(scope="module")
def evaluated(workspace) -> tuple[str, Path]:
    """One run on the photo folder (in this process, to save an interpreter start), TORCH_HOME an empty folder."""
    out, console = workspace / "out", io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(console):
        patch.setenv("TORCH_HOME", str(workspace / "torch-home"))
        code = harness.main(["--model", str(workspace / "cnn.pt"), "--data", str(workspace / "photos"),
                              "--size", str(SIZE), "--sheet-images", "3", "--out", str(out)])
    assert code == 0
    return console.getvalue(), out


@pytest.fixture(scope="module")
def results(evaluated) -> dict:
    return json.loads((evaluated[1] / "results.json").read_text())


def markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def cell_mean(cell: str) -> float:
    return float(cell.split(" ± ")[0])


def test_table_csv_json_and_sheet_agree(evaluated, results):
    console, out = evaluated
    rows = list(csv.reader((out / "results.csv").open(encoding="utf-8")))
    header, body = rows[0], rows[1:]
    assert [row[0] for row in body] == [harness.GRAY_ROW, "cnn (cnn)", harness.TRUTH_ROW] == results["rows"]
    assert markdown_rows((out / "results.md").read_text(encoding="utf-8"))[1:] == body
    assert markdown_rows(console)[1:] == body
    for row in body:
        for key, cell in zip(header[1:], row[1:]):
            if cell == "unavailable":
                continue
            summary = results["summary"][row[0]][key]
            per_image = [float(v) for v in results["per_image"]["values"][row[0]][key]]
            assert float(summary["mean"]) == pytest.approx(np.mean(per_image), rel=1e-9, abs=1e-12)
            decimals = next(c.decimals for c in harness.COLUMNS if c.key == key)
            assert cell_mean(cell) == pytest.approx(float(summary["mean"]), abs=0.51 * 10.0**-decimals)
    sheet = Image.open(out / "sheet.png")
    step = SIZE + 2
    header = 2 + 2 * harness.LINE_HEIGHT  # "grayscale input" and "ground truth" take two lines at 64 px
    assert sheet.size == (2 + 3 * step, header + 2 + 3 * step)


def test_skipped_images_are_counted_and_named(results):
    skipped = results["data"]["skipped"]
    assert skipped["grayscale"] == {"count": 1, "items": ["camera.png"]}
    assert skipped["unreadable"]["count"] == 1 and skipped["unreadable"]["items"][0].startswith("broken.jpg: ")
    assert sorted(results["per_image"]["keys"]) == sorted(PHOTOS)
    assert results["data"]["images_scored"] == len(PHOTOS)
    assert set(results["protocol"]) >= {"crop", "rgb metrics", "ab metrics", "model input"}


def test_grayscale_baseline_equals_scikit_image(workspace, results):
    keys = results["per_image"]["keys"]
    values = results["per_image"]["values"][harness.GRAY_ROW]
    for index, key in enumerate(keys):
        crop = protocol_crop(workspace / "photos" / key)
        lab = skcolor.rgb2lab(crop)
        lab[..., 1:] = 0.0
        gray = (np.clip(skcolor.lab2rgb(lab), 0, 1) * 255).round().astype(np.uint8)
        assert values["psnr"][index] == pytest.approx(peak_signal_noise_ratio(crop, gray, data_range=255), abs=0.01)
        expected_ssim = structural_similarity(crop, gray, channel_axis=-1, data_range=255)
        assert values["ssim"][index] == pytest.approx(expected_ssim, abs=1e-4)


def test_ground_truth_row_is_the_perfect_prediction(results):
    truth = results["per_image"]["values"][harness.TRUTH_ROW]
    assert all(value == "inf" for value in truth["psnr"])
    assert truth["ssim"] == pytest.approx([1.0] * len(PHOTOS))
    assert truth["colorfulness_gap"] == [0.0] * len(PHOTOS)
    assert truth["auc"] == pytest.approx([1.0] * len(PHOTOS))
    gray = results["summary"][harness.GRAY_ROW]
    assert float(gray["colorfulness_gap"]["mean"]) > 10.0


def test_score_predictions_gives_the_true_ab_infinite_psnr_and_no_colorfulness_gap(workspace):
    crops = np.stack([protocol_crop(workspace / "photos" / name) for name in PHOTOS])
    L, true_ab = color.rgb_to_model_inputs(torch.from_numpy(crops).permute(0, 3, 1, 2))
    scores = harness.score_predictions(L, true_ab, {"oracle": true_ab, "gray": torch.zeros_like(true_ab)})
    assert torch.isinf(scores["oracle"]["psnr"]).all()
    assert torch.equal(scores["oracle"]["colorfulness_gap"], torch.zeros(len(PHOTOS), dtype=torch.float64))
    assert torch.isfinite(scores["gray"]["psnr"]).all() and (scores["gray"]["colorfulness_gap"] > 0).all()


def test_lpips_is_unavailable_without_its_weights(evaluated, results):
    _, out = evaluated
    assert results["lpips"] == "unavailable"
    assert "lpips" not in results["per_image"]["values"][harness.GRAY_ROW]
    assert "LPIPS unavailable" in (out / "results.md").read_text(encoding="utf-8")
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert {row["lpips"] for row in rows} == {"unavailable"}


@pytest.mark.slow
def test_bad_inputs_exit_2_with_one_error_line(workspace, evaluated):
    photos, model = str(workspace / "photos"), str(workspace / "cnn.pt")
    cases = {
        "not a colorray generator export": ["--model", str(workspace / "photos" / "astronaut.png"), "--data", photos],
        "no images": ["--model", model, "--data", str(workspace / "empty")],
        "no color image to score": ["--model", model, "--data", str(workspace / "gray")],
        "already exists and is not empty": ["--model", model, "--data", photos, "--out", str(evaluated[1])],
    }
    before = sorted(p.name for p in evaluated[1].iterdir())
    processes = {expected: run_cli(*args, "--size", str(SIZE), "--out", str(workspace / f"bad-{i}"))
                 if "--out" not in args else run_cli(*args, "--size", str(SIZE))
                 for i, (expected, args) in enumerate(cases.items())}
    for expected, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, (expected, stderr)
        lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and expected in lines[0], stderr
        assert "Traceback" not in stderr
    assert sorted(p.name for p in evaluated[1].iterdir()) == before


@pytest.mark.parametrize("args, expected", [
    (["--data", "missing"], "data not found: "),
    (["--prior", "missing.npy"], "ab prior file not found: "),
    (["--size", "4"], "--size must be at least 8"),
    (["--distributed"], "--distributed evaluates WebDataset shards"),
])
def test_more_bad_inputs_name_the_problem(workspace, capsys, args, expected):
    defaults = ["--model", str(workspace / "cnn.pt"), "--data", str(workspace / "photos"),
                "--out", str(workspace / "never-written")]
    assert harness.main(defaults + args) == 2  # a repeated option: the last one counts
    assert capsys.readouterr().err.startswith(f"error: {expected}")
    assert not (workspace / "never-written").exists()


def write_shards(folder: Path, sources: Path) -> None:
    """The four photos as PNG samples in two shards with an index.json (sample counts)."""
    folder.mkdir()
    names = list(PHOTOS)
    entries = []
    for number in range(2):
        samples = [Sample(name.replace("/", "_").removesuffix(".png"), "png", (sources / name).read_bytes(), 0,
                          name, None) for name in names[2 * number:2 * number + 2]]
        entries.append({"file": f"val-{number:06d}.tar", "samples": write_tar(folder / f"val-{number:06d}.tar",
                                                                                  samples)})
    index = split_index("val", entries, {}, {reason: [] for reason in SKIP_REASONS}, {})
    (folder / "index.json").write_text(json.dumps(index))


def per_image_by_key(out: Path, row: str, metric: str) -> dict[str, float]:
    results = json.loads((out / "results.json").read_text())
    return dict(zip(results["per_image"]["keys"], map(float, results["per_image"]["values"][row][metric])))


def test_shards_score_like_the_folder_and_prior_adds_the_rebalanced_auc(workspace, results, capsys):
    write_shards(workspace / "shards", workspace / "photos")
    np.save(workspace / "prior.npy", np.linspace(1.0, 2.0, color.ab_bins().shape[0]))
    out = workspace / "out-shards"
    assert harness.main(["--model", str(workspace / "cnn.pt"), "--data", str(workspace / "shards"), "--size",
                          str(SIZE), "--batch-size", "3", "--prior", str(workspace / "prior.npy"),
                          "--out", str(out)]) == 0
    rebalanced = json.loads((out / "results.json").read_text())["summary"]["cnn (cnn)"]["auc_rebalanced"]
    assert 0.0 < float(rebalanced["mean"]) < 1.0
    assert "auc_rebalanced" in (out / "results.csv").read_text().splitlines()[0].split(",")
    from_shards = per_image_by_key(out, "cnn (cnn)", "psnr")
    from_folder = dict(zip(results["per_image"]["keys"], results["per_image"]["values"]["cnn (cnn)"]["psnr"]))
    assert from_shards == pytest.approx({k.replace("/", "_").removesuffix(".png"): v for k, v in from_folder.items()},
                                        abs=1e-6)
    assert "4 images scored" in capsys.readouterr().out


@pytest.mark.slow
def test_distributed_evaluation_merges_the_same_per_image_values(workspace, ray_cluster):
    shards = workspace / "shards"
    if not shards.exists():
        write_shards(shards, workspace / "photos")
    local, distributed = workspace / "out-local", workspace / "out-distributed"
    common = ["--model", str(workspace / "cnn.pt"), "--data", str(shards), "--size", str(SIZE), "--limit", "3"]
    assert harness.main([*common, "--out", str(local)]) == 0
    assert harness.main([*common, "--out", str(distributed), "--distributed"]) == 0
    for metric in ("psnr", "auc", "colorfulness_gap"):
        expected = per_image_by_key(local, "cnn (cnn)", metric)
        assert len(expected) == 3
        assert per_image_by_key(distributed, "cnn (cnn)", metric) == pytest.approx(expected, abs=1e-9)
    assert (distributed / "sheet.png").is_file()
    assert not math.isnan(float(json.loads((distributed / "results.json").read_text())
                                ["summary"][harness.GRAY_ROW]["psnr"]["ci95"]))


def test_two_checkpoints_of_one_run_never_share_a_label_or_a_sheet_title(tmp_path):
    torch.manual_seed(0)
    names = ["checkpoint_2026-12-02_10-00-00.000001", "checkpoint_2026-12-02_10-05-00.000002"]
    for folder in [f"run/{name}" for name in names] + ["a/best", "b/best"]:
        save_generator(tmp_path / folder / "generator.pt", create_model("cnn", width=8), image_size=32)
    checkpoints = [str(tmp_path / "run" / name) for name in names]
    labels = list(harness.load_models(checkpoints))
    assert labels == [f"{name} (cnn)" for name in names]
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    shown = ["".join(harness.title_lines(draw, label, SIZE)) for label in labels]  # as the sheet writes them
    assert len(set(shown)) == 2 and all(title.endswith("(cnn)") for title in shown)
    bests = [str(tmp_path / "a" / "best" / "generator.pt"), str(tmp_path / "b" / "best")]
    assert list(harness.load_models(bests)) == ["a/best (cnn)", "b/best (cnn)"]
    assert list(harness.load_models(checkpoints, ["early", "late"])) == ["early", "late"]
    with pytest.raises(harness.EvaluateError, match="--label must be given once per --model"):
        harness.load_models(checkpoints, ["same", "same"])


def test_rows_share_one_nearest_bin_search_with_the_same_rebalanced_auc():
    torch.manual_seed(0)
    rgb = (torch.rand(2, 3, 16, 16) * 255).to(torch.uint8)
    L, true_ab = color.rgb_to_model_inputs(rgb)
    rebalance = color.rebalance_weights(torch.linspace(1.0, 2.0, color.ab_bins().shape[0]), color.ab_bins())
    predictions = {"gray": torch.zeros_like(true_ab), "noisy": (true_ab + 0.1 * torch.randn_like(true_ab)).clamp(-1, 1)}
    shared = harness.score_predictions(L, true_ab, predictions, rebalance=rebalance)
    for row, ab in predictions.items():
        alone = image_metrics(L, ab, true_ab, rebalance=rebalance)["auc_rebalanced"]
        assert torch.equal(shared[row]["auc_rebalanced"], alone)


def test_human_judgements_of_a_judge_database_become_columns_of_the_table(workspace, tmp_path, capsys):
    from colorray.judge.store import VoteRecord, open_store
    from colorray.judge.tasks import PAIRWISE, REAL_OR_FAKE, TRUTH

    url = f"sqlite:///{tmp_path / 'votes.sqlite'}"
    store = open_store(url)
    votes = [(PAIRWISE, "cnn", "other", "left" if n < 4 else "right") for n in range(5)]  # cnn preferred 4 of 5
    votes += [(REAL_OR_FAKE, TRUTH, None, "real" if n < 3 else "fake") for n in range(4)]
    votes += [(REAL_OR_FAKE, "cnn", None, "real" if n < 1 else "fake") for n in range(4)]
    for number, (task, system, other, answer) in enumerate(votes):
        store.add(VoteRecord(f"r{number % 2}", task, f"{number:016x}", "photo", system, other, answer, 500))
    out = tmp_path / "out"
    assert harness.main(["--model", str(workspace / "cnn.pt"), "--label", "cnn", "--data", str(workspace / "photos"),
                         "--size", str(SIZE), "--no-fid", "--judge", url, "--out", str(out)]) == 0
    header, *rows = markdown_rows((out / "results.md").read_text(encoding="utf-8"))
    human = header.index("human preference (pairwise)")
    assert header[human:] == ["human preference (pairwise)", "human fooled (real or fake)",
                              "human judged real (real or fake)"]  # Bradley-Terry only ranks more than two systems
    by_row = {row[0]: row[human:] for row in rows}
    assert by_row["cnn"][0].startswith("0.800 [") and by_row["cnn"][0].endswith("(n=5)")
    assert by_row["cnn"][1].startswith("0.250 [") and by_row[harness.TRUTH_ROW][2].startswith("0.750 [")
    assert by_row[harness.GRAY_ROW] == ["-"] * 3
    assert "systems with no row here (name rows with --label): other" in (out / "results.md").read_text()
    table = list(csv.reader((out / "results.csv").open(encoding="utf-8")))
    assert table[0][-3:] == header[human:] and markdown_rows(capsys.readouterr().out)[0] == header
    assert {row["system"] for row in json.loads((out / "results.json").read_text())["human"]} == {"cnn", "other", TRUTH}

    assert harness.main(["--model", str(workspace / "cnn.pt"), "--data", str(workspace / "photos"),
                         "--judge", f"sqlite:///{tmp_path / 'none.sqlite'}", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: --judge: ") and not (tmp_path / "x").exists()
