"""``python -m colorray.study NAME --data SHARDS [--scale small|full] [--out DIR] [key=value ...]``.

Runs a study's recipe as one Ray Tune run with one trial per row (the Tune
machinery of ``colorray.tune.driver``: ``run_trial`` fits each row's
TrainConfig as a Ray Train run reporting through ``TuneReportCallback``),
takes each trial's checkpoint selected by the scale's metric, scores them all
with the evaluation harness on the SHARDS' val split, and writes into a fresh
``--out`` folder: ``study.md``/``study.csv``/``study.json`` (the study's table
with the grayscale baseline, colorfulness and its gap, beside the published
numbers), the harness's ``results.*`` (every metric, per image) and
``sheet.png`` (gray / each row / truth), plus ``tune/`` (the trials' runs) and
``prior.npy`` when a row or metric needs the ab prior.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from ray import tune

from colorray import cli, color
from colorray.config import TrainConfig, config_from_dict, config_to_dict, is_remote
from colorray.data.loader import DataError
from colorray.data.prior import PriorError, compute_prior, load_prior
from colorray.evaluate import harness
from colorray.export import ExportError
from colorray.inference import Colorizer
from colorray.losses.objective import PRIOR_LOSSES
from colorray.study import report
from colorray.study.recipes import (
    SCALES,
    Recipe,
    RecipeError,
    ScaleSettings,
    list_recipes,
    load_recipe,
    study_configs,
)
from colorray.train import preflight
from colorray.tune.driver import (
    TrialRow,
    build_tuner,
    check_sweep_folder,
    run_trial,
    trial_rows,
    write_table,
)
from colorray.tune.sweep import (
    SchedulerSpec,
    SearchSpec,
    Sweep,
    SweepConfig,
    check_resources,
)

TUNE_DIR = "tune"
PRIOR_FILE = "prior.npy"
STUDY_FILES = ("study.md", "study.csv", "study.json")
ERRORS = (*preflight.PREFLIGHT_ERRORS, harness.EvaluateError, ExportError, PriorError, OSError)


class StudyError(ValueError):
    """Bad input to the study command: the message names the problem."""


class StudyInterrupted(RuntimeError):
    """The Tune run stopped (Ctrl-C) before every row finished."""


def row_trial(sampled: dict, rows: dict, trials_uri: str) -> None:
    """One Tune trial: the Ray Train run of the study row named by ``sampled['row']``."""
    run_trial(config_from_dict(rows[sampled["row"]]), trials_uri)


# --- Checks -----------------------------------------------------------------------


def data_root(spec: str) -> str:
    """The dataset root (``python -m colorray.shards`` output) holding train/ and val/ shards, absolute."""
    if is_remote(spec):
        return spec.rstrip("/")
    root = Path(spec).expanduser().resolve()
    if not root.exists():
        raise StudyError(f"data not found: {spec}")
    for split in ("train", "val"):
        if not harness.holds_shards(root / split):
            raise StudyError(f"{spec} is not a dataset root with train/ and val/ shard folders (no shards in "
                             f"{root / split}); make one with: python -m colorray.shards PHOTOS {spec} --val-count N")
    return str(root)


def output_folder(args: argparse.Namespace) -> Path:
    out = Path(args.out or f"runs/study/{args.name}-{args.scale}").expanduser().resolve()
    if args.resume and not (out / TUNE_DIR).is_dir():
        raise StudyError(f"--resume: no study run to continue in {out}")
    if not args.resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StudyError(f"output folder {out} already exists and is not empty: choose another --out, or pass "
                         "--resume to continue the study run in it (nothing was changed)")
    return out


def wants_prior(recipe: Recipe, configs: dict[str, TrainConfig]) -> bool:
    """A row's loss rebalances by the ab prior without naming one, or the table has the rebalanced AuC."""
    rebalancing = any(name in PRIOR_LOSSES and not config.loss.prior
                      for config in configs.values() for name in config.loss.terms)
    return rebalancing or "auc_rebalanced" in recipe.spec.metrics


def prepare_prior(recipe: Recipe, settings: ScaleSettings, configs: dict[str, TrainConfig], root: str,
                  folder: Path) -> Path | None:
    """The training split's ab prior at ``folder/prior.npy`` (computed unless there), set where rows need it."""
    if not wants_prior(recipe, configs):
        return None
    path = folder / PRIOR_FILE
    if not path.is_file():
        print(f"colorray.study: counting the ab prior of {root}/train", flush=True)
        counts = compute_prior(f"{root}/train", settings.prior.limit, settings.prior.image_size)
        np.save(path, counts.numpy())
    for config in configs.values():
        if not config.loss.prior and any(name in PRIOR_LOSSES for name in config.loss.terms):
            config.loss.prior = str(path)
    return path


def check_rows(configs: dict[str, TrainConfig]) -> None:
    for name, config in configs.items():
        try:
            preflight.check(config)
        except preflight.PREFLIGHT_ERRORS as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise StudyError(f"row '{name}': {message}") from None


# --- The Tune run -------------------------------------------------------------------


def study_sweep(settings: ScaleSettings, configs: dict[str, TrainConfig], out: Path) -> Sweep:
    """The study as a sweep: a grid over the row names, every trial to its end, ``max_concurrent`` at once."""
    first = next(iter(configs.values()))
    spec = SweepConfig(name=TUNE_DIR, storage_path=str(out), search_space={"row": {"grid": list(configs)}},
                       metric=first.run.metric, mode=first.run.mode, scheduler=SchedulerSpec(type="none"),
                       search=SearchSpec(type="grid"), max_concurrent=settings.max_concurrent,
                       resources=settings.resources)
    return Sweep(spec, first)


def run_trials(name: str, sweep: Sweep, configs: dict[str, TrainConfig], resume: bool) -> dict[str, TrialRow]:
    """Fit every row (one trial each); the trials by row name."""
    rows = {row: config_to_dict(config) for row, config in configs.items()}
    trainable = tune.with_parameters(row_trial, rows=rows, trials_uri=sweep.trials_uri)
    tuner = build_tuner(sweep, resume, Path(sweep.uri), trainable, prefix=f"colorray.study {name}", verbose=0)
    grid = tuner.fit()
    unfinished = sum(result.error is None and not result.metrics.get("done") for result in grid)
    if unfinished:
        raise StudyInterrupted(f"the study run was interrupted with {unfinished} trials unfinished; continue it "
                               "with the same command and --resume")
    trials = trial_rows(sweep, grid)
    write_table(sweep, trials, Path(sweep.uri) / "results.csv")
    by_row = {trial.params["row"]: trial for trial in trials}
    by_row = {row: by_row[row] for row in configs if row in by_row}  # the recipe's order, not the metric's
    for row, trial in by_row.items():
        if trial.status == "stopped early" and trial.epochs >= configs[row].run.epochs:
            trial.status = "completed"  # rows train different epochs; the sweep's base has the first row's
    return by_row


# --- Scoring and writing -------------------------------------------------------------


def score(trials: dict[str, TrialRow], root: str, settings: ScaleSettings, prior: Path | None) -> harness.Report:
    """The harness's scores of every row with a selected checkpoint, on the val split, labelled by row name."""
    chosen = {row: trial.best_checkpoint for row, trial in trials.items() if trial.best_checkpoint}
    if not chosen:
        raise StudyError(f"no row produced a checkpoint: see the trial runs under {TUNE_DIR}/ of the output folder")
    rebalance = color.rebalance_weights(load_prior(prior), color.ab_bins()) if prior else None
    ev = settings.eval
    evaluation = harness.Settings(ev.size, ev.batch_size, rebalance=rebalance)
    colorizers = {row: Colorizer.from_path(path) for row, path in chosen.items()}
    data = harness.open_shards(root)
    result = harness.score_models(data, root, colorizers, list(chosen.values()), evaluation, ev.limit, ev.sheet_images)
    result.settings["prior"] = str(prior) if prior else None
    return result


def measured_rows(configs: dict[str, TrainConfig], trials: dict[str, TrialRow],
                  evaluation: harness.Report) -> list[report.MeasuredRow]:
    gray, truth = report.baseline_rows(evaluation.summary)
    models = []
    for row, config in configs.items():
        trial = trials.get(row)
        models.append(report.MeasuredRow(
            row, "model", evaluation.summary.get(row, {}), trial.status if trial else "not run",
            trial.best_epoch if trial else None, config.run.epochs, trial.epochs if trial else 0,
            (trial.best_checkpoint or "") if trial else "", config_to_dict(config)))
    return [gray, *models, truth]


def write_study(recipe: Recipe, scale: str, rows: list[report.MeasuredRow], context: dict, out: Path) -> str:
    table = report.study_markdown(recipe, scale, rows, context)
    (out / "study.md").write_text(table, encoding="utf-8")
    (out / "study.csv").write_text(report.study_csv(recipe, rows), encoding="utf-8")
    document = report.study_json(recipe, scale, rows, context)
    (out / "study.json").write_text(json.dumps(document, indent=1, allow_nan=False), encoding="utf-8")
    return report.markdown(report.measured_table(recipe, rows))


# --- Command line -------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m colorray.study",
                           description="Reproduce one of the source studies: train its models as one Ray Tune run "
                                       "and write its table beside the published numbers (docs/studies.md).")
    p.add_argument("name", help=f"the study: {', '.join(list_recipes())}")
    p.add_argument("--data", required=True,
                   help="dataset root with train/ and val/ shards (python -m colorray.shards ... --val-count N)")
    p.add_argument("--scale", default="small", help=f"{' or '.join(SCALES)}: one CPU machine, or the published "
                                                    "recipe for a GPU cluster (default small)")
    p.add_argument("--out", default="", help="new output folder (default runs/study/NAME-SCALE)")
    p.add_argument("--rows", action="append", default=[], metavar="ROW", help="train only this row (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study run in --out")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="TrainConfig keys set in every row (run.epochs=2) or the scale's settings (eval.limit=8)")
    return p


def prepare(args: argparse.Namespace, recipe: Recipe, root: str, settings: ScaleSettings,
            configs: dict[str, TrainConfig], out: Path) -> tuple[Sweep, Path | None]:
    """Check every row and the cluster before ``out`` is made; the study's sweep and ab prior (if any).

    A fresh run counts the prior in a scratch folder, so that a refused row leaves no ``out`` behind.
    """
    with tempfile.TemporaryDirectory() as scratch:
        folder = out if args.resume else Path(scratch)
        prior = prepare_prior(recipe, settings, configs, root, folder)
        check_rows(configs)
        cli.connect_ray(log_to_driver=False)
        sweep = study_sweep(settings, configs, out)
        check_resources(sweep)
        check_sweep_folder(sweep, args.resume)
        out.mkdir(parents=True, exist_ok=True)
        if prior is not None and folder != out:
            prior = Path(shutil.copy(prior, out / PRIOR_FILE))
            for config in configs.values():
                if config.loss.prior == str(folder / PRIOR_FILE):
                    config.loss.prior = str(prior)
    return sweep, prior


def run(args: argparse.Namespace, command: str) -> int:
    recipe = load_recipe(args.name)
    root = data_root(args.data)
    settings, configs = study_configs(recipe, args.scale, root, args.overrides, args.rows)
    out = output_folder(args)
    sweep, prior = prepare(args, recipe, root, settings, configs, out)
    print(f"colorray.study: {recipe.name} at scale {args.scale}: {len(configs)} rows ({', '.join(configs)}) "
          f"into {out}", flush=True)
    trials = run_trials(recipe.name, sweep, configs, args.resume)
    evaluation = score(trials, root, settings, prior)
    harness.write_report(evaluation, out)
    rows = measured_rows(configs, trials, evaluation)
    context = {"command": command, "data": evaluation.headline(), "metric": sweep.spec.metric,
               "mode": sweep.spec.mode, "size": settings.eval.size}
    table = write_study(recipe, args.scale, rows, context, out)
    print(f"{table}\n\ncolorray.study: wrote {out / 'study.md'} (also .csv, .json), {out / 'sheet.png'}, "
          f"every metric per image in {out / 'results.json'}; trial runs in {out / TUNE_DIR}")
    failed = [row.name for row in rows if row.kind == "model" and row.status != "completed"]
    if failed:
        print(f"colorray.study: rows not trained to the end: {', '.join(failed)}; rerun them with the same "
              "command and --resume", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    command = "python -m colorray.study " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return run(args, command)
    except (StudyError, RecipeError, DataError, *ERRORS) as error:
        return cli.fail(error)
    except StudyInterrupted as error:
        return cli.fail(error, code=1)
