"""``python -m colorray.tune SWEEP.yaml``: hyperparameter sweeps of colorray training on Ray Tune.

The Train V2 pattern: each Tune trial runs ``trial_fn``, a function trainable
that builds the trial's ``TrainConfig`` (the sweep's base plus the sampled
dotted keys), names its Ray Train run after the Tune trial id (so a resumed
sweep resumes the same run) and fits a ``TorchTrainer`` whose
``TuneReportCallback`` forwards rank 0's epoch reports (and checkpoint paths)
to Tune. The trial itself holds a sliver of CPU; the Train workers get theirs.
ASHA schedules on the reported ``epoch``.

At the end the driver writes the results table (``results.csv``), two plots,
and the best trial's ``best/config.yaml`` (accepted by ``python -m
colorray.train --config``), ``best/generator.pt`` (its checkpoint chosen by
the sweep's metric with training's own rule, ``colorray.metrics.select_best``;
``python -m colorray.serve --model OUT/best``) and ``best/generator-last.pt``. The sweep file is described in
``colorray.tune.sweep`` and ``docs/tune.md``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import ray
import ray.train
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

from colorray import cli
from colorray.config import ConfigError, TrainConfig, config_to_dict, dump_config
from colorray.data import storage
from colorray.export import EXPORT_FILENAME, LAST_EXPORT_FILENAME, select_run_export
from colorray.metrics import select_best
from colorray.train import checkpoints, preflight
from colorray.train.driver import build_trainer
from colorray.train.tracking import sweep_callbacks
from colorray.train.validation import corrupt_data_problem
from colorray.tune import population
from colorray.tune.sweep import (
    TRIAL_CPU,
    Sweep,
    check_resources,
    load_sweep,
    log_scaled,
    param_space,
    scheduler,
    search_algorithm,
    trial_config,
)

RESULTS_FILE = "results.csv"
OVER_TIME_PLOT = "metric_over_time.png"
VS_PARAMS_PLOT = "metric_vs_params.png"
BEST_DIR = "best"
SCHEDULER_STATE = "scheduler_state.pkl"


def trial_fn(sampled: dict, base: dict, trials_uri: str, checkpointed: bool = False, verbose: bool = False) -> None:
    """One Tune trial: a Ray Train run of the base config with the sampled values, reporting to Tune."""
    run_trial(trial_config(base, sampled), trials_uri, checkpointed, verbose)


def run_trial(config: TrainConfig, trials_uri: str, checkpointed: bool = False, verbose: bool = False) -> None:
    """Fit ``config`` as this Tune trial's Ray Train run, named after the trial id (stable across resumes).

    ``checkpointed`` (PBT) also hands Tune a checkpoint per report (``colorray.tune.population``).
    """
    builder = functools.partial(build_trainer, verbose=verbose)
    if checkpointed:
        population.run_checkpointed_trial(config, trials_uri, builder)
        return
    config.run.name = ray.tune.get_context().get_trial_id()
    config.run.storage_path = trials_uri
    checkpoints.save_run_config(config)
    result = builder(config, callbacks=[TuneReportCallback()]).fit()
    problem = corrupt_data_problem(config, result.metrics or {})
    if problem:
        raise RuntimeError(f"trial stopped: {problem}")  # the trial fails with this message, not silently


class TrialLog(tune.Callback):
    """One line per finished trial, with its sampled values, so people (and tests) can follow the sweep."""

    def __init__(self, metric: str, keys: list[str], prefix: str = "colorray.tune"):
        self.metric, self.keys, self.prefix = metric, keys, prefix

    def _name(self, trial) -> str:
        values = " ".join(f"{key}={_label((trial.config or {}).get(key))}" for key in self.keys)
        return f"trial {trial.trial_id} ({values})" if values else f"trial {trial.trial_id}"

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        value = result.get(self.metric)
        shown = f"{self.metric} {value:.4f}" if isinstance(value, (int, float)) else "no result"
        print(f"{self.prefix}: {self._name(trial)} finished at epoch {result.get('epoch')} ({shown})", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(f"{self.prefix}: {self._name(trial)} failed: see {trial.path}", flush=True)


def build_tuner(sweep: Sweep, resume: bool, out: Path, trainable=None, prefix: str = "colorray.tune",
                verbose: int = 0) -> tune.Tuner:
    """The sweep's Tuner; ``trainable`` (default: ``trial_fn`` over the sweep's base) takes the sampled values.

    ``verbose`` is Tune's own (0: only colorray's line per finished trial; 1: Tune's status tables too).
    """
    default = tune.with_parameters(trial_fn, base=config_to_dict(sweep.base), trials_uri=sweep.trials_uri,
                                   checkpointed=sweep.spec.scheduler.type == "pbt", verbose=verbose > 0)
    trainable = tune.with_resources(trainable or default, {"cpu": TRIAL_CPU})
    if resume:
        path, filesystem = storage.ray_storage(sweep.uri)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=filesystem)
    spec = sweep.spec
    storage_path, filesystem = storage.ray_storage(sweep.storage_uri)
    (out / SCHEDULER_STATE).unlink(missing_ok=True)
    return tune.Tuner(
        trainable,
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, search_alg=search_algorithm(spec), num_samples=spec.num_samples,
            scheduler=scheduler(spec, sweep.base.run.epochs, out / SCHEDULER_STATE),
            time_budget_s=spec.time_budget_s or None,
        ),
        run_config=tune.RunConfig(name=spec.name, storage_path=storage_path, storage_filesystem=filesystem,
                                  callbacks=[TrialLog(spec.metric, sweep.keys, prefix), *sweep_callbacks(spec, out)],
                                  verbose=verbose),
    )


def check_sweep_folder(sweep: Sweep, resume: bool) -> None:
    exists = tune.Tuner.can_restore(*storage.ray_storage(sweep.uri))
    if resume and not exists:
        raise ConfigError(f"--resume: no sweep to continue at {sweep.uri} (check name and storage_path)")
    if not resume and exists:
        raise ConfigError(f"sweep '{sweep.spec.name}' already exists at {sweep.uri}: pass --resume to "
                          "continue it, or choose another name (nothing was changed)")


# --- Results ----------------------------------------------------------------------


@dataclass
class TrialRow:
    trial_id: str
    status: str  # completed | stopped early | error
    params: dict
    epochs: int = 0
    best: float | None = None
    last: float | None = None
    best_epoch: int | None = None
    best_checkpoint: str | None = None  # the report chosen by colorray.metrics.select_best, as in training
    last_checkpoint: str | None = None
    history: list[tuple[int, float]] = field(default_factory=list)  # (epoch, metric) per report


def trial_rows(sweep: Sweep, grid) -> list[TrialRow]:
    rows = [trial_row(sweep, result) for result in grid]
    better = (lambda v: -v) if sweep.spec.mode == "max" else (lambda v: v)
    return sorted(rows, key=lambda r: (r.best is None, better(r.best) if r.best is not None else 0))


def trial_row(sweep: Sweep, result) -> TrialRow:
    metric, max_epochs = sweep.spec.metric, sweep.base.run.epochs
    params = {key: (result.config or {}).get(key) for key in sweep.keys}
    row = TrialRow(str(result.metrics.get("trial_id") or Path(result.path).name), "error", params)
    frame = result.metrics_dataframe
    if frame is not None and metric in frame and "epoch" in frame:
        reports = frame.dropna(subset=[metric, "epoch"]).to_dict("records")
        row.history = [(int(report["epoch"]), float(report[metric])) for report in reports]
        if row.history:
            row.epochs, row.last = row.history[-1]
            best = select_best([(report, report) for report in reports], metric, sweep.spec.mode)[0]
            row.best, row.best_epoch = float(best[metric]), int(best["epoch"])
            row.best_checkpoint = _checkpoint_uri(sweep, best.get(CHECKPOINT_PATH_KEY))
            row.last_checkpoint = _checkpoint_uri(sweep, reports[-1].get(CHECKPOINT_PATH_KEY))
    if result.error is None:
        row.status = "completed" if row.epochs >= max_epochs else "stopped early"
    return row


def planned_trials(spec) -> int:
    """How many trials the sweep makes: num_samples times every combination of its grid entries."""
    return spec.num_samples * math.prod(len(entry["grid"]) for entry in spec.search_space.values() if "grid" in entry)


def was_interrupted(result, max_epochs: int) -> bool:
    """Neither failed, stopped by the scheduler (Tune marks those done) nor through all its epochs. A trial
    whose last epoch ended just before an interrupt may come back from Tune's state without 'done'."""
    metrics = result.metrics or {}
    return result.error is None and not metrics.get("done") and int(metrics.get("epoch") or 0) < max_epochs


def _checkpoint_uri(sweep: Sweep, path) -> str | None:
    """The reported checkpoint path as a URI (remote filesystems report it without their scheme)."""
    if not isinstance(path, str) or not path:
        return None
    if "://" in sweep.uri and "://" not in path:
        return f"{sweep.uri.split('://')[0]}://{path}"
    return path


def write_table(sweep: Sweep, rows: list[TrialRow], path: Path) -> str:
    """Write the CSV and return the same table as aligned text."""
    metric = sweep.spec.metric
    header = ["rank", "trial", "status", "epochs", f"best {metric}", f"last {metric}", *sweep.keys]
    table = [[str(i + 1), r.trial_id, r.status, str(r.epochs), _label(r.best), _label(r.last),
              *(_label(r.params[k]) for k in sweep.keys)] for i, r in enumerate(rows)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(table)
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header, *table])


def _label(value) -> str:
    """A short cell for a metric or sampled value (whole-section choices are mappings)."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_label(v)}" for k, v in value.items()) + "}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_results(sweep: Sweep, rows: list[TrialRow], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    metric = sweep.spec.metric
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        if row.history:
            epochs, values = zip(*row.history)
            marker = "o" if row.status == "completed" else "x"
            axes.plot(epochs, values, marker=marker, label=f"{row.trial_id} ({row.status})")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set(xlabel="epoch (training iteration)", ylabel=metric, title=f"sweep '{sweep.spec.name}': {metric} per trial")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out / OVER_TIME_PLOT, dpi=100)
    plt.close(figure)

    scored = [row for row in rows if row.best is not None]
    figure, panels = plt.subplots(1, len(sweep.keys), figsize=(4.5 * len(sweep.keys), 4), squeeze=False)
    for axes, key in zip(panels[0], sweep.keys):
        values = [row.params[key] for row in scored]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        labels = sorted({_label(v) for v in values})
        xs = values if numeric else [labels.index(_label(v)) for v in values]
        axes.scatter(xs, [row.best for row in scored], c=["tab:blue" if r.status == "completed" else "tab:orange"
                                                           for r in scored])
        if numeric and _log_axis(sweep, key, values):
            axes.set_xscale("log")
        if not numeric:
            axes.set_xticks(range(len(labels)), labels)
        axes.set(xlabel=key, ylabel=f"best {metric}")
    figure.suptitle("best metric per trial (orange: stopped early)")
    figure.tight_layout()
    figure.savefig(out / VS_PARAMS_PLOT, dpi=100)
    plt.close(figure)


def _log_axis(sweep: Sweep, key: str, values: list) -> bool:
    """Log-scale a parameter axis for log distributions and for positive values spanning 100x or more."""
    return log_scaled(sweep, key) or (bool(values) and min(values) > 0 and max(values) >= 100 * min(values))


def export_best(sweep: Sweep, best: TrialRow, out: Path) -> Path:
    """Copy the best trial's selected and last generators; write its full config (run.name cleared)."""
    folder = out / BEST_DIR
    folder.mkdir(parents=True, exist_ok=True)
    chosen, last = kept_checkpoint(best.best_checkpoint, best=True), kept_checkpoint(best.last_checkpoint, best=False)
    for uri, name in ((chosen, EXPORT_FILENAME), (last, LAST_EXPORT_FILENAME)):
        if uri:
            storage.download(storage.join(uri, EXPORT_FILENAME), folder / name)
    config = trial_config(config_to_dict(sweep.base), best.params)
    config.run.name = ""
    (folder / "config.yaml").write_text(dump_config(config))
    summary = {"trial_id": best.trial_id, "metric": sweep.spec.metric, "value": best.best, "epoch": best.best_epoch,
               "params": best.params, "checkpoint": best.best_checkpoint}
    (folder / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    return folder


def kept_checkpoint(checkpoint: str | None, best: bool) -> str | None:
    """``checkpoint`` while its export is there; else one its trial run kept. A trial the scheduler stopped may
    train on past its last report until Tune ends it, and the run's retention (``run.keep_checkpoints``) may
    then remove reported checkpoints: the last becomes the newest kept, the best the one the run's own
    selection rule picks among those kept (the newest on remote storage)."""
    if not checkpoint or storage.is_file(storage.join(checkpoint, EXPORT_FILENAME)):
        return checkpoint
    run, _ = storage.split(checkpoint)
    if best and not storage.is_uri(run):
        selected = select_run_export(Path(run))
        return str(selected.parent) if selected is not None else None
    names = sorted({name.split("/")[0] for name in storage.list_files(run)
                    if name.startswith("checkpoint_") and name.endswith(f"/{EXPORT_FILENAME}")})
    return storage.join(run, names[-1]) if names else None


def summarize(sweep: Sweep, rows: list[TrialRow], out: Path) -> list[str]:
    """Write the table, plots and best export; the closing lines that say where everything is."""
    out.mkdir(parents=True, exist_ok=True)
    metric = sweep.spec.metric
    table = write_table(sweep, rows, out / RESULTS_FILE)
    plot_results(sweep, rows, out)
    counts = {status: sum(r.status == status for r in rows) for status in ("completed", "stopped early", "error")}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines = [table, "", f"colorray.tune: sweep '{sweep.spec.name}' finished: {len(rows)} trials ({tally}), "
                        f"{sum(r.epochs for r in rows)} trial-epochs"]
    best = next((row for row in rows if row.best_checkpoint), None)
    if best is not None:
        folder = export_best(sweep, best, out)
        chosen = " ".join(f"{k}={_label(v)}" for k, v in best.params.items())
        lines += [
            f"  best {metric}: {best.best:.4f} (trial {best.trial_id}, epoch {best.best_epoch}): {chosen}",
            f"  best config: {folder / 'config.yaml'} (train it with python -m colorray.train --config FILE)",
            f"  best generator: {folder / EXPORT_FILENAME} (serve it with python -m colorray.serve --model FOLDER)",
        ]
    if storage.is_uri(sweep.uri):
        storage.upload(out, sweep.uri)
        lines.append(f"  copied the table, plots and best/ to {sweep.uri}")
    lines += [
        f"  results table: {out / RESULTS_FILE}",
        f"  plots: {out / OVER_TIME_PLOT} and {VS_PARAMS_PLOT} beside it",
        f"  trial runs (checkpoints, metrics.jsonl): {sweep.trials_uri}/<trial id>",
        f"  Tune state: {sweep.uri}",
    ]
    return lines


def output_dir(sweep: Sweep, asked: str | None) -> Path:
    """Where the table, plots and best/ go: --output, else the sweep folder, else (remote storage) runs/tune/NAME."""
    if asked:
        return Path(asked).expanduser()
    return Path(sweep.uri) if "://" not in sweep.uri else Path("runs/tune") / sweep.spec.name


# --- CLI ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="python -m colorray.tune",
        description="Run a hyperparameter sweep of colorray training on Ray Tune (see docs/tune.md).",
    )
    parser.add_argument("sweep_file", help="sweep YAML, e.g. tune_configs/smoke.yaml")
    parser.add_argument("--num-samples", type=int, help="override num_samples")
    parser.add_argument("--max-concurrent", type=int, help="override max_concurrent")
    parser.add_argument("--storage-path", help="override storage_path")
    parser.add_argument("--output", help="folder for the table, plots and best/ (default: the sweep folder)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials are kept")
    parser.add_argument("--verbose", action="store_true", help="print Tune's status tables and Ray's own logs")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides of the sweep file, e.g. base.run.epochs=2 scheduler.type=none")
    return parser.parse_intermixed_args(argv)


def cli_overrides(args: argparse.Namespace) -> list[str]:
    flags = {"num_samples": args.num_samples, "max_concurrent": args.max_concurrent, "storage_path": args.storage_path}
    return [*args.overrides, *(f"{key}={value}" for key, value in flags.items() if value is not None)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sweep = load_sweep(args.sweep_file, cli_overrides(args))
        cli.connect_ray(verbose=args.verbose)
        check_resources(sweep)
        check_sweep_folder(sweep, args.resume)
        out = output_dir(sweep, args.output)
        tuner = build_tuner(sweep, args.resume, out, verbose=int(args.verbose))
    except preflight.PREFLIGHT_ERRORS as error:
        return cli.fail(error)
    grid = tuner.fit()
    unfinished = sum(was_interrupted(result, sweep.base.run.epochs) for result in grid)
    unfinished += max(0, planned_trials(sweep.spec) - len(grid))  # an interrupt came before they were created
    if unfinished and not sweep.spec.time_budget_s:
        print(f"colorray.tune: sweep '{sweep.spec.name}' interrupted with {unfinished} trials unfinished; continue "
              f"it with: python -m colorray.tune {args.sweep_file} --resume (same options)", file=sys.stderr)
        return 1
    rows = trial_rows(sweep, grid)
    print("\n".join(summarize(sweep, rows, out)))
    return 0 if any(row.best_checkpoint for row in rows) else 1
