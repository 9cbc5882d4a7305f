"""The study recipes and ``python -m colorray.study``.

Fast: every recipe loads, cites a source on every value line, and every row of
its small scale passes training's preflight (model, critic, losses, data
built) on the embedded smoke dataset; unknown studies, scales, rows, keys and
data are refused with one line. Slow: one real study run (two Zhang rows, one
tiny epoch each) through Ray Tune, the harness and the written table.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorray import color
from colorray.config import TrainConfig
from colorray.data.smoke import ensure_smoke_dataset
from colorray.metrics import resolve_selection
from colorray.models import model_option_names
from colorray.study import recipes, runner
from colorray.train import preflight

REPO = Path(__file__).resolve().parents[1]
STUDIES = ["dtu", "hashed", "michigan", "places", "zhang"]
VALUE_LINE = re.compile(r"^\s*(- )?[\w@ ]+:\s*\S")  # `key: value` or `- key: value`


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    return ensure_smoke_dataset(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def prior(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prior") / "prior.npy"
    np.save(path, np.linspace(1.0, 2.0, color.ab_bins().shape[0]))
    return str(path)


def test_the_five_studies_are_shipped_as_package_data():
    assert recipes.list_recipes() == STUDIES
    assert all((recipes.RECIPES_DIR / f"{name}.yaml").is_file() for name in STUDIES)


@pytest.mark.parametrize("name", STUDIES)
def test_every_small_row_passes_the_preflight_checks(name, smoke, prior):
    recipe = recipes.load_recipe(name)
    settings, configs = recipes.study_configs(recipe, "small", str(smoke))
    assert list(configs) == [row.name for row in recipe.rows] and settings.eval.size >= 64
    for row, config in configs.items():
        config.loss.prior = config.loss.prior or prior
        preflight.check(config)  # builds the generator, the critic and the losses, opens the data
        selection = resolve_selection(settings.metric or TrainConfig().run.metric, settings.mode or "auto")
        assert config.data.image_size == 64 and (config.run.metric, config.run.mode) == selection


@pytest.mark.parametrize("name", STUDIES)
def test_full_scale_rows_are_valid_configs_at_the_published_size(name, smoke):
    recipe = recipes.load_recipe(name)
    settings, configs = recipes.study_configs(recipe, "full", str(smoke))
    assert settings.resources.use_gpu
    for config in configs.values():
        assert config.data.image_size >= 128 and config.run.epochs >= 4
        assert set(config.model.options) <= set(model_option_names(config.model.name))


@pytest.mark.parametrize("name", STUDIES)
def test_every_setting_cites_its_source(name):
    recipe = recipes.load_recipe(name)
    text = recipe.path.read_text(encoding="utf-8")
    seed = recipe.spec.source
    assert re.fullmatch(r"\d{3}_[0-9a-f]{16}\.txt", seed) and seed in "".join(text.splitlines()[:3])
    uncited = [line for line in text.splitlines() if VALUE_LINE.match(line) and " # " not in line]
    assert not uncited
    assert f"[{seed[:3]} " in text  # sections are cited as [NNN §...]
    for line in text.splitlines():  # rows that train without their ImageNet weights at small scale say so
        if line.strip().startswith("small:") and "pretrained: none" in line:
            assert "weights" in line.split(" # ", 1)[1], line


def test_published_numbers_point_at_recipe_rows():
    dtu = recipes.load_recipe("dtu")
    (table,) = dtu.spec.published
    assert [row.row for row in table.rows] == [row.name for row in dtu.rows]
    assert table.rows[0].values == [10.5663, 0.5023, 0.3370]
    places = recipes.load_recipe("places")
    assert sum(row.row == "MSE, lr 1e-4" for row in places.spec.published[0].rows) == 4


@pytest.mark.parametrize("call, message", [
    (lambda: recipes.load_recipe("dtuu"), "unknown study 'dtuu' (did you mean 'dtu'?); known: dtu, hashed"),
    (lambda: recipes.study_configs(recipes.load_recipe("dtu"), "medium", "/d"), "unknown scale 'medium'"),
    (lambda: recipes.study_configs(recipes.load_recipe("dtu"), "small", "/d", rows=["CNNN"]),
     "study 'dtu' has no row 'CNNN' (did you mean 'CNN'?)"),
    (lambda: recipes.study_configs(recipes.load_recipe("dtu"), "small", "/d", ["run.epochz=1"]),
     "recipe dtu.yaml row 'CNN' (small): unknown config key 'run.epochz'"),
    (lambda: recipes.study_configs(recipes.load_recipe("dtu"), "small", "/d", ["eval.sise=1"]),
     "recipe dtu.yaml scale 'small': unknown config key 'eval.sise' (did you mean 'size'?)"),
])
def test_unknown_names_are_refused_with_a_suggestion(call, message):
    with pytest.raises(recipes.RecipeError) as error:
        call()
    assert str(error.value).startswith(message)


def test_overrides_set_every_row_or_the_scale(smoke):
    settings, configs = recipes.study_configs(recipes.load_recipe("michigan"), "small", str(smoke),
                                              ["run.epochs=1", "eval.limit=8", "max_concurrent=1"])
    assert {config.run.epochs for config in configs.values()} == {1}
    assert settings.eval.limit == 8 and settings.max_concurrent == 1
    assert configs["CNN with LAB"].optim.lr == 1e-2 and configs["CNN with RGB"].data.batch_size == 4


@pytest.mark.parametrize("args, message", [
    (["dtuu", "--data", "{smoke}"], "error: unknown study 'dtuu' (did you mean 'dtu'?)"),
    (["dtu", "--data", "{missing}"], "error: data not found: "),
    (["dtu", "--data", "{photos}"], "error: {photos} is not a dataset root with train/ and val/ shard folders"),
    (["dtu", "--data", "{smoke}", "--scale", "huge"], "error: unknown scale 'huge'"),
    (["dtu", "--data", "{smoke}", "--out", "{taken}"], "error: output folder {taken} already exists"),
])
def test_bad_command_lines_fail_with_one_line(args, message, smoke, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "photos" / "a.png")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "study.md").write_text("kept")
    places = {"smoke": smoke, "missing": tmp_path / "missing", "photos": tmp_path / "photos",
              "taken": tmp_path / "taken"}
    assert runner.main([arg.format(**places) for arg in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(**places)) and err.count("\n") == 1
    assert (tmp_path / "taken" / "study.md").read_text() == "kept"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_study_trains_its_rows_as_one_tune_run_and_writes_its_table(ray_cluster, smoke, tmp_path):
    out = tmp_path / "zhang"
    rows = ["ECCV16 (soft encoding)", "ECCV16 (one-hot)"]
    command = [sys.executable, "-m", "colorray.study", "zhang", "--data", str(smoke), "--out", str(out),
               *(arg for row in rows for arg in ("--rows", row)), "run.epochs=1", "data.image_size=32",
               "data.samples_per_epoch=32", "data.val_samples=8", "prior.limit=16", "eval.limit=8",
               "eval.size=64", "eval.sheet_images=2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finished = [line for line in done.stdout.splitlines() if line.startswith("colorray.study zhang: trial ")]
    assert len(finished) == 2 and all("finished at epoch 1" in line for line in finished)
    assert {re.search(r"row=(.*)\) finished", line).group(1) for line in finished} == set(rows)

    table = list(csv.DictReader((out / "study.csv").open(encoding="utf-8")))
    assert [row["row"] for row in table] == ["grayscale baseline", *rows, "ground truth"]
    assert [row["selected_epoch"] for row in table] == ["", "1", "1", ""]
    for row in table:
        assert set(row) >= {"auc", "auc_rebalanced", "psnr", "colorfulness", "colorfulness_gap"}
        assert 0.0 <= float(row["auc_rebalanced"]) <= 1.0
    assert float(table[-1]["colorfulness_gap"]) == 0.0
    document = json.loads((out / "study.json").read_text())
    assert [row["name"] for row in document["rows"]] == [row["row"] for row in table]
    assert document["rows"][1]["config"]["loss"]["options"]["rebalanced_ce"]["neighbours"] == 5
    assert document["rows"][2]["config"]["loss"]["prior"] == str(out / "prior.npy")
    markdown = (out / "study.md").read_text(encoding="utf-8")
    assert "| ECCV16 (one-hot) | 1/1 |" in markdown and "publishes no numbers" in markdown
    assert json.loads((out / "results.json").read_text())["rows"][1:3] == rows
    sheet = Image.open(out / "sheet.png")
    assert sheet.width == 2 + 4 * (64 + 2)  # gray, the two rows, truth
    assert (out / "tune" / "results.csv").is_file() and len(list((out / "tune" / "trials").iterdir())) == 2
