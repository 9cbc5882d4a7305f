"""Checks before a run starts, without Ray: new runs never overwrite old ones, ``--resume`` refuses another
model, relative paths mean the caller's folder. A check that let a run through would start Ray, which the
fast layer refuses."""

from __future__ import annotations

import pytest

from colorray.config import apply_overrides
from colorray.train import preflight
from colorray.train.driver import main


def test_overrides_never_change_the_values_they_are_laid_over():
    saved = {"model": {"name": "cnn"}}
    assert apply_overrides(saved, ["model.name=unet"]) == {"model": {"name": "unet"}}
    assert saved == {"model": {"name": "cnn"}}


def test_existing_runs_are_never_overwritten_and_resume_checks_compatibility(tmp_path, capsys):
    run = tmp_path / "kept"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: cnn\n")
    before = sorted(run.iterdir())
    assert main([f"run.storage_path={tmp_path}", "run.name=kept"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["--resume", str(run), "model.name=unet"]) == 2
    assert "incompatible" in capsys.readouterr().err
    assert sorted(run.iterdir()) == before and (run / "config.yaml").read_text() == "model:\n  name: cnn\n"


def test_a_relative_storage_path_means_the_callers_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = preflight.prepare(None, ["run.storage_path=runs", "run.name=relative"])
    assert config.run.storage_path == str(tmp_path / "runs")
    with pytest.raises(preflight.DataError, match=str(tmp_path / "shards")):
        preflight.prepare(None, ["data.train=shards", "run.name=relative-data"])
