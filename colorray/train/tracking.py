"""Experiment tracking of runs and sweeps: MLflow or Weights & Biases, through Ray's own integrations.

``run.tracking`` (and a sweep file's ``tracking``) is ``none``, ``mlflow`` or ``wandb``:

- a training run: rank 0 opens a ``Tracker`` (``open_tracker``) with Ray's
  ``setup_mlflow`` / ``setup_wandb``, which logs the config as parameters; the
  tracker then logs every validation's metrics (at the training step) and its
  sample grid (as an artifact). A
  resumed run, or a worker group restarted after a failure, continues the same
  MLflow / W&B run.
- a sweep: ``sweep_callbacks`` gives Tune's ``MLflowLoggerCallback`` /
  ``WandbLoggerCallback``: one tracked run per trial, with its sampled values
  and per-epoch metrics.

MLflow's default tracking URI is a local store inside the run folder: the
SQLite database ``RUN/mlflow.db`` with artifacts in ``RUN/mlartifacts`` (for a
sweep, in its output folder); ``run.tracking_uri`` (a sweep's
``tracking_uri``) points elsewhere, e.g. ``http://mlflow.internal:5000``.
W&B follows its own environment (``WANDB_API_KEY``, ``WANDB_PROJECT``,
``WANDB_MODE=offline``). Neither package is a dependency: the ``mlflow`` and
``wandb`` extras install them, and asking for a missing one is a config error
naming the extra.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from colorray.config import ConfigError, TrainConfig, config_to_dict, suggest

TRACKERS = ("none", "mlflow", "wandb")
EXPERIMENT = "colorray"
RUN_TAG = "colorray.run"
MLFLOW_DB = "mlflow.db"  # the default local store inside the run folder: its database
MLFLOW_ARTIFACTS = "mlartifacts"  # and its artifacts


def check_tracking(kind: str, key: str = "run.tracking") -> None:
    """A known tracker whose package is installed, else one ConfigError naming the extra to install."""
    if kind not in TRACKERS:
        raise ConfigError(f"{key} must be one of {', '.join(TRACKERS)}, got '{kind}'{suggest(kind, TRACKERS)}")
    if kind != "none" and importlib.util.find_spec(kind) is None:
        raise ConfigError(f"{key} {kind} needs the {kind} package, which is not installed: "
                          f"pip install 'colorray[{kind}]' (or set {key}=none)")


def flat_params(values: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted ``key: value`` strings (the override syntax), for tracking parameters."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def mlflow_store(uri: str, folder: str | Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments): ``uri``, else the local store in ``folder``."""
    if uri:
        return uri, None
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / MLFLOW_DB}", (folder / MLFLOW_ARTIFACTS).as_uri()


class Tracker:
    """No tracking: the interface the MLflow and W&B trackers fill in."""

    def log_validation(self, step: int, metrics: dict[str, float], samples_file: Path | None) -> None:
        """One validation's metrics (at the global training step) and its sample grid."""

    def close(self) -> None:
        pass


class MLflowTracker(Tracker):
    def __init__(self, config: TrainConfig, folder: Path):
        import mlflow
        from ray.air.integrations.mlflow import setup_mlflow

        name = config.run.name
        uri, artifacts = mlflow_store(config.run.tracking_uri, folder)
        mlflow.set_tracking_uri(uri)
        earlier = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=f"tags.`{RUN_TAG}` = '{name}'",
                                     output_format="list")
        if earlier:
            mlflow.start_run(run_id=earlier[0].info.run_id)
            self.mlflow = mlflow
        else:
            self.mlflow = setup_mlflow(flat_params(config_to_dict(config)), tracking_uri=uri, experiment_name=EXPERIMENT,
                                       artifact_location=artifacts, run_name=name,
                                       create_experiment_if_not_exists=True, tags={RUN_TAG: name})

    def log_validation(self, step, metrics, samples_file) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        if samples_file is not None:
            self.mlflow.log_artifact(str(samples_file), artifact_path="samples")

    def close(self) -> None:
        self.mlflow.end_run()


class WandbTracker(Tracker):
    def __init__(self, config: TrainConfig, folder: Path):
        from ray.air.integrations.wandb import setup_wandb

        run_id = re.sub(r"[^A-Za-z0-9_-]", "-", config.run.name)[:64]
        self.run = setup_wandb(flat_params(config_to_dict(config)), project=os.environ.get("WANDB_PROJECT", EXPERIMENT),
                               name=config.run.name, id=run_id, resume="allow", dir=str(folder))

    def log_validation(self, step, metrics, samples_file) -> None:
        import wandb

        logged = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if samples_file is not None:
            logged["samples"] = wandb.Image(str(samples_file))
        self.run.log(logged, step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(config: TrainConfig, folder: Path) -> Tracker:
    """Rank 0's tracker for ``config.run.tracking`` (``folder``: the local run or staging folder)."""
    kinds = {"mlflow": MLflowTracker, "wandb": WandbTracker}
    return kinds[config.run.tracking](config, folder) if config.run.tracking in kinds else Tracker()


def sweep_callbacks(spec, out: Path) -> list:
    """Tune's logger callback for a sweep's ``tracking`` (one tracked run per trial; ``out``: its output folder)."""
    if spec.tracking == "mlflow":
        import mlflow
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri, artifacts = mlflow_store(spec.tracking_uri, out)
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(spec.name) is None:
            mlflow.create_experiment(spec.name, artifact_location=artifacts)
        return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=spec.name, tags={"colorray.sweep": spec.name})]
    if spec.tracking == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        return [WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", EXPERIMENT), group=spec.name)]
    return []
