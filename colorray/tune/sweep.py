"""The sweep file of ``python -m colorray.tune``: its schema, its checks and its Ray Tune search space.

A sweep file names a base ``TrainConfig`` (inline ``base``, a ``base_config``
file, or both), a ``search_space`` of dotted TrainConfig keys mapped to
plain-YAML distributions (``{loguniform: [1.0e-4, 3.0e-3]}``), the metric, the
scheduler, the search algorithm and the per-trial resources. ``load_sweep``
reads and checks all of it on the CPU before anything starts: unknown keys,
distributions, model names and options, and the full TrainConfig of every
candidate value through ``preflight.check``. ``param_space``, ``search_algorithm``
and ``scheduler`` turn a checked sweep into Ray Tune objects; ``trial_config``
builds one trial's TrainConfig from the base and the sampled values.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import ray
from ray import tune

from colorray.config import (
    ConfigError,
    ScalingSettings,
    TrainConfig,
    absolute_location,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    merge_values,
    read_yaml,
    suggest,
    with_absolute_paths,
)
from colorray.metrics import resolve_selection
from colorray.models import list_models, model_option_names
from colorray.models.weights import PretrainedWeightsMissing, resolve_weights_path
from colorray.train import preflight
from colorray.train.tracking import check_tracking

RANGES = {  # distribution -> number of arguments: [low, high] or [low, high, q]
    "uniform": 2, "quniform": 3, "loguniform": 2, "qloguniform": 3, "randint": 2, "lograndint": 2,
}
LISTS = ("choice", "grid")
DISTRIBUTIONS = (*RANGES, *LISTS)
SEARCHES = ("random", "grid", "optuna")
SCHEDULERS = ("asha", "pbt", "none")
PBT_FIXED = ("model", "gan.enabled", "gan.discriminator", "gan.options", "optim.name", "data.image_size")
TRIAL_CPU = 0.1  # what each trial's driver function holds; the Train workers get their own CPUs
SET_BY_SWEEP = {  # keys a search space may not hold, and why
    "run.name": "each trial's run is named after its Tune trial id",
    "run.storage_path": "trials are stored under the sweep's storage_path",
    "run.metric": "the sweep's `metric` is every trial's run.metric",
    "run.mode": "the sweep's `mode` is every trial's run.mode",
    "run.epochs": "it is the scheduler's max_t: set it in `base`",
    "run.checkpoint_every_steps": "each report must be one epoch for the scheduler",
    "scaling": "set it per trial with `resources`",
}


@dataclass
class SchedulerSpec:
    type: str = "asha"  # asha | pbt | none
    grace_period: int = 1  # epochs every trial runs before ASHA may stop it
    reduction_factor: float = 2.0  # ASHA keeps the best 1/reduction_factor of each rung
    perturbation_interval: int = 1  # pbt: epochs between a trial's exploit/explore steps
    quantile_fraction: float = 0.25  # pbt: the bottom share copies one of the top share
    resample_probability: float = 0.25  # pbt: chance a perturbed value is drawn anew instead of scaled
    synch: bool = False  # pbt: trials wait for the whole population at each interval (paused ones restart)


@dataclass
class SearchSpec:
    type: str = "random"  # random | grid | optuna
    seed: int = -1  # sampler seed; -1: unseeded


@dataclass
class SweepConfig:
    name: str = ""  # sweep folder under storage_path; empty: the sweep file's name
    storage_path: str = "runs/tune"  # local folder, NFS path or s3:// URI
    base_config: str = ""  # a train YAML (as for `python -m colorray.train --config`)
    base: dict[str, Any] = field(default_factory=dict)  # TrainConfig sections, over base_config
    search_space: dict[str, Any] = field(default_factory=dict)  # dotted TrainConfig key -> distribution
    metric: str = "auto"  # the selection rule of colorray.metrics.resolve_selection, as run.metric
    mode: str = "auto"
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    num_samples: int = 1  # random/optuna: trials; grid: repetitions of the grid
    max_concurrent: int = 0  # 0: as many trials at once as the cluster fits
    resources: ScalingSettings = field(default_factory=ScalingSettings)  # per trial: its scaling
    time_budget_s: float = 0.0  # 0: none
    tracking: str = "none"  # none | mlflow | wandb: one tracked run per trial (colorray.train.tracking)
    tracking_uri: str = ""  # MLflow tracking URI; empty: a local store in the output folder (OUT/mlruns)


@dataclass
class Sweep:
    """A checked sweep: its settings, the base config every trial starts from, and where it lives."""

    spec: SweepConfig
    base: TrainConfig

    @property
    def uri(self) -> str:
        """The sweep's folder: local absolute path or remote URI."""
        return f"{self.storage_uri.rstrip('/')}/{self.spec.name}"

    @property
    def storage_uri(self) -> str:
        return absolute_location(self.spec.storage_path)

    @property
    def trials_uri(self) -> str:
        return f"{self.uri}/trials"

    @property
    def keys(self) -> list[str]:
        return list(self.spec.search_space)


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Read, complete and fully check a sweep file (``overrides``: dotted ``key=value`` over it)."""
    sweep = parse_sweep(path, overrides)
    check_candidates(sweep)
    return sweep


def parse_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Read and check a sweep file's settings, keys and distributions, without building models or opening data."""
    path = Path(path)
    values = apply_overrides(read_yaml(path), overrides)
    try:
        spec = config_from_dict(values, SweepConfig)
    except ConfigError as error:
        raise ConfigError(f"sweep file {path}: {str(error).replace('config key', 'key')}") from None
    spec.name = spec.name or path.stem
    check_settings(spec)
    base = base_config(spec, values.get("resources") or {})
    if spec.scheduler.type == "asha" and spec.scheduler.grace_period > base.run.epochs:
        raise ConfigError(f"scheduler.grace_period ({spec.scheduler.grace_period}) exceeds base run.epochs "
                          f"({base.run.epochs}), the most epochs a trial runs")
    check_search_space(spec, base)
    return Sweep(spec, base)


def check_settings(spec: SweepConfig) -> None:
    if "/" in spec.name or spec.name.startswith("."):
        raise ConfigError(f"name must be a plain folder name, got '{spec.name}'")
    try:
        spec.metric, spec.mode = resolve_selection(spec.metric, spec.mode)
    except ValueError as error:
        raise ConfigError(f"metric/mode: {error}") from None
    if spec.metric == "val/lpips":
        try:
            resolve_weights_path("alexnet", "imagenet")
        except PretrainedWeightsMissing as error:
            raise ConfigError(f"metric val/lpips is only reported with the AlexNet weights: {error}") from None
    for key, value, least in (("num_samples", spec.num_samples, 1), ("max_concurrent", spec.max_concurrent, 0),
                              ("time_budget_s", spec.time_budget_s, 0)):
        if value < least:
            raise ConfigError(f"{key} must be >= {least}, got {value}")
    _check_choice("search.type", spec.search.type, SEARCHES)
    if spec.search.type == "optuna" and importlib.util.find_spec("optuna") is None:
        raise ConfigError("search.type optuna needs the optuna package, which is not installed "
                          "(pip install optuna), or use search.type random")
    _check_choice("scheduler.type", spec.scheduler.type, SCHEDULERS)
    check_tracking(spec.tracking, "tracking")
    if spec.scheduler.grace_period < 1:
        raise ConfigError(f"scheduler.grace_period must be >= 1 epoch, got {spec.scheduler.grace_period}")
    if spec.scheduler.reduction_factor <= 1:
        raise ConfigError(f"scheduler.reduction_factor must be > 1, got {spec.scheduler.reduction_factor}")
    if spec.scheduler.type == "pbt":
        _check_pbt(spec)
    if not spec.search_space:
        raise ConfigError("search_space is empty: map at least one dotted TrainConfig key to a distribution, "
                          "e.g. optim.lr: {loguniform: [1.0e-4, 3.0e-3]}")


def _check_pbt(spec: SweepConfig) -> None:
    """PBT copies a donor's weights into a trial and perturbs the searched values: they must not change the network."""
    pbt = spec.scheduler
    if pbt.perturbation_interval < 1 or not 0 < pbt.quantile_fraction <= 0.5 or not 0 <= pbt.resample_probability <= 1:
        raise ConfigError("scheduler pbt needs perturbation_interval >= 1, 0 < quantile_fraction <= 0.5 and "
                          f"0 <= resample_probability <= 1, got {pbt.perturbation_interval}, "
                          f"{pbt.quantile_fraction}, {pbt.resample_probability}")
    if spec.search.type != "random":
        raise ConfigError(f"scheduler pbt samples its own values: use search.type random, not {spec.search.type}")
    if spec.num_samples < 2:
        raise ConfigError(f"scheduler pbt needs a population: num_samples >= 2, got {spec.num_samples}")
    for key in spec.search_space:
        fixed = next((f for f in PBT_FIXED if key == f or key.startswith(f + ".")), None)
        if fixed:
            raise ConfigError(f"search_space '{key}' cannot be perturbed by pbt: an exploit loads the donor's "
                              f"network, so '{fixed}' must be the same in every trial (set it in base)")
        if "grid" in spec.search_space[key]:
            raise ConfigError(f"search_space '{key}': pbt cannot perturb grid entries: use choice or a range")


def _check_choice(key: str, value: str, known: Sequence[str]) -> None:
    if value not in known:
        raise ConfigError(f"{key} must be one of {', '.join(known)}, got '{value}'{suggest(value, known)}")


def base_config(spec: SweepConfig, resources: dict[str, Any]) -> TrainConfig:
    """The base TrainConfig: base_config file, then ``base``, then ``resources`` and the sweep's run settings."""
    values = read_yaml(spec.base_config) if spec.base_config else {}
    values = merge_values(values, copy.deepcopy(spec.base))
    values = merge_values(values, {"scaling": dict(resources)})
    try:
        config = config_from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"base: {error}") from None
    config.run.metric, config.run.mode, config.run.checkpoint_every_steps = spec.metric, spec.mode, 0
    config.run.name = ""
    return with_absolute_paths(config)


# --- The search space ----------------------------------------------------------------


def distribution(key: str, spec: Any) -> tuple[str, list]:
    """``(name, arguments)`` of one search-space entry, checked."""
    where = f"search_space '{key}'"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where} must be one distribution such as {{loguniform: [1.0e-4, 1.0e-2]}} "
                          f"or {{choice: [a, b]}}, got {spec!r}")
    (name, args), = spec.items()
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution '{name}'{suggest(str(name), DISTRIBUTIONS)}; "
                          f"known: {', '.join(DISTRIBUTIONS)}")
    if name in LISTS:
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {name} needs a non-empty list of values, got {args!r}")
        return name, args
    return name, _range_args(where, name, args)


def _range_args(where: str, name: str, args: Any) -> list[float]:
    count = RANGES[name]
    shape = "[low, high]" if count == 2 else "[low, high, q]"
    numbers = isinstance(args, list) and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if not numbers or len(args) != count:
        raise ConfigError(f"{where}: {name} needs {shape} numbers, got {args!r}")
    low, high = args[0], args[1]
    if name.endswith("randint") and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}: {name} needs integers {shape} (high excluded), got {args!r}")
    if low >= high:
        raise ConfigError(f"{where}: {name} needs low < high, got {args!r}")
    if "log" in name and low <= 0:
        raise ConfigError(f"{where}: {name} needs low > 0, got {args!r}")
    return list(args)


def candidates(name: str, args: list) -> list:
    """Values a distribution may give that every trial config must accept: the ends of a range, every listed value."""
    if name in LISTS:
        return list(args)
    if name.endswith("randint"):
        return [args[0], args[1] - 1]
    return [float(args[0]), float(args[1])]


def check_search_space(spec: SweepConfig, base: TrainConfig) -> None:
    space = {key: distribution(key, value) for key, value in spec.search_space.items()}
    for key, (name, values) in space.items():
        if check_key(key) and (name not in LISTS or not all(isinstance(v, dict) for v in values)):
            raise ConfigError(f"search_space '{key}' names a section: give it a choice or grid of whole "
                              f"'{key}' mappings, or search one of its values such as '{key}.{_first_field(key)}'")
    if spec.search.type == "grid" and any(name != "grid" for name, _ in space.values()):
        others = [k for k, (name, _) in space.items() if name != "grid"]
        raise ConfigError(f"search.type grid needs every search_space entry to be {{grid: [...]}}; "
                          f"not: {', '.join(others)} (use search.type random to mix grids and samples)")
    if spec.search.type == "optuna" and any(name == "grid" for name, _ in space.values()):
        raise ConfigError("search.type optuna cannot sample grid entries: use choice instead of grid")
    _check_model_options(space, base)


def _first_field(section: str) -> str:
    cls = TrainConfig
    for part in section.split("."):
        cls = typing.get_type_hints(cls)[part]
    return dataclasses.fields(cls)[0].name


def check_key(key: str) -> bool:
    """The dotted key must exist in TrainConfig (free-form options mappings may be reached into).

    Returns whether it names a whole section (such as ``model``) rather than a value.
    """
    for blocked, reason in SET_BY_SWEEP.items():
        if key == blocked or key.startswith(blocked + "."):
            raise ConfigError(f"search_space '{key}' cannot be searched: {reason}")
        if blocked.startswith(key + "."):
            raise ConfigError(f"search_space '{key}' cannot be searched whole: it holds '{blocked}' ({reason}); "
                              "search its other values one by one")
    parts, cls = key.split("."), TrainConfig
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            known = list(hints)
            where = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(f"search_space '{key}': unknown config key '{'.'.join(parts[:depth + 1])}'"
                              f"{suggest(part, known)}; known keys in '{where}': {', '.join(known)}")
        hint = hints[part]
        if dataclasses.is_dataclass(hint):
            cls = hint
            continue
        if depth + 1 < len(parts) and typing.get_origin(hint) is not dict:
            raise ConfigError(f"search_space '{key}': '{'.'.join(parts[:depth + 1])}' is a value, not a section")
        return False
    return True


def _model_names(space: dict[str, tuple[str, list]], base: TrainConfig) -> tuple[str, list]:
    """The search key choosing the model, and the model names trials may get."""
    if "model.name" in space:
        if space["model.name"][0] not in LISTS:
            raise ConfigError("search_space 'model.name' must be a choice or grid of model names")
        return "model.name", space["model.name"][1]
    if "model" in space:
        return "model", [section.get("name", base.model.name) for section in space["model"][1]]
    return "model.name", [base.model.name]


def _check_model_options(space: dict[str, tuple[str, list]], base: TrainConfig) -> None:
    key, names = _model_names(space, base)
    for name in names:
        if name not in list_models():
            raise ConfigError(f"search_space '{key}': unknown model '{name}'{suggest(str(name), list_models())};"
                              f" known: {', '.join(list_models())}")
    for key in space:
        if not key.startswith("model.options."):
            continue
        option = key.split(".")[2]
        for name in names:
            if option not in model_option_names(name):
                raise ConfigError(f"search_space '{key}': model '{name}' has no option '{option}'; "
                                  f"its options: {', '.join(model_option_names(name)) or 'none'}")


def check_candidates(sweep: Sweep) -> None:
    """Every candidate value (range ends, listed values) must make a TrainConfig that preflight accepts.

    A value is blamed when it fails both with the other searched keys at their base values and
    at their first candidates (so coupled keys such as model.name and model.options.* are judged
    together); then every value is checked with the others at their first candidates.
    """
    space = {key: distribution(key, value) for key, value in sweep.spec.search_space.items()}
    probe = _Prober(config_to_dict(sweep.base))
    firsts = {key: candidates(*dist)[0] for key, dist in space.items()}
    for key, dist in space.items():
        for value in candidates(*dist):
            alone = probe({key: value})
            if alone is not None and probe({**firsts, key: value}) is not None:
                raise ConfigError(f"search_space '{key}' = {value!r}: {alone}")
    for key, dist in space.items():
        for value in candidates(*dist):
            together = probe({**firsts, key: value})
            if together is not None:
                others = ", ".join(f"{k} = {v!r}" for k, v in firsts.items() if k != key)
                raise ConfigError(f"search_space '{key}' = {value!r} (with {others}): {together}")


class _Prober:
    """``preflight.check`` of the base with some keys set: the error message, or None; each case checked once."""

    def __init__(self, base: dict[str, Any]):
        self.base = base
        self.seen: dict[str, str | None] = {}

    def __call__(self, sampled: dict[str, Any]) -> str | None:
        case = repr(sorted(sampled.items()))
        if case not in self.seen:
            self.seen[case] = self._check(sampled)
        return self.seen[case]

    def _check(self, sampled: dict[str, Any]) -> str | None:
        try:
            preflight.check(trial_config(self.base, sampled))
        except preflight.PREFLIGHT_ERRORS as error:
            return str(error.args[0] if isinstance(error, KeyError) and error.args else error)
        return None


def trial_config(base: dict[str, Any], sampled: dict[str, Any]) -> TrainConfig:
    """One trial's TrainConfig: the base mapping with each sampled dotted key set."""
    values = copy.deepcopy(base)
    for key, value in sampled.items():
        *sections, last = key.split(".")
        node = values
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
    return config_from_dict(values)


def param_space(sweep: Sweep) -> dict[str, Any]:
    """The Tune search space: one flat entry per dotted key."""
    return {key: _domain(*distribution(key, value)) for key, value in sweep.spec.search_space.items()}


def _domain(name: str, args: list) -> Any:
    if name == "choice":
        return tune.choice(args)
    if name == "grid":
        return tune.grid_search(args)
    return getattr(tune, name)(*args)


def log_scaled(sweep: Sweep, key: str) -> bool:
    return "log" in distribution(key, sweep.spec.search_space[key])[0]


def search_algorithm(spec: SweepConfig):
    """The search algorithm, itself limiting concurrency (Tune ignores max_concurrent_trials for random/grid)."""
    seed = spec.search.seed if spec.search.seed >= 0 else None
    if spec.search.type != "optuna":
        return tune.search.BasicVariantGenerator(random_state=seed, max_concurrent=spec.max_concurrent)
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(seed=seed)
    return tune.search.ConcurrencyLimiter(searcher, spec.max_concurrent) if spec.max_concurrent else searcher


class ResumableASHA(tune.schedulers.ASHAScheduler):
    """ASHA that keeps its rungs in ``state_file``: Tune's restore rebuilds schedulers empty.

    Without this a resumed sweep forgets every result recorded before the
    interruption, and the first trial to reach each rung afterwards is never stopped.
    """

    def __init__(self, state_file: str, **options: Any):
        super().__init__(**options)
        self.state_file = state_file

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        accepted = super().set_search_properties(metric, mode, **spec)
        if Path(self.state_file).is_file():
            self.restore(self.state_file)
        return accepted

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        self.save(self.state_file)
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self.save(self.state_file)


class ClipToRanges:
    """PBT's explore step scales values by 0.8 or 1.2: keep them inside their search-space range."""

    def __init__(self, search_space: dict[str, Any]):
        self.ranges = {key: args for key, (name, args) in
                       ((key, distribution(key, value)) for key, value in search_space.items()) if name in RANGES}

    def __call__(self, config: dict) -> dict:
        for key, (low, high, *_) in self.ranges.items():
            if key in config:
                top = high - 1 if isinstance(config[key], int) else high  # randint's high is excluded
                config[key] = type(config[key])(min(max(config[key], low), top))
        return config


def scheduler(spec: SweepConfig, epochs: int, state_file: Path):
    """ASHA or PBT on the reported ``epoch`` (stable across resumes, unlike Tune's training_iteration), or FIFO.

    PBT perturbs every searched key within its search-space distribution.
    """
    if spec.scheduler.type == "none":
        return tune.schedulers.FIFOScheduler()
    if spec.scheduler.type == "pbt":
        pbt = spec.scheduler
        return tune.schedulers.PopulationBasedTraining(
            time_attr="epoch", perturbation_interval=pbt.perturbation_interval,
            quantile_fraction=pbt.quantile_fraction, resample_probability=pbt.resample_probability, synch=pbt.synch,
            hyperparam_mutations={key: _domain(*distribution(key, value)) for key, value in spec.search_space.items()},
            custom_explore_fn=ClipToRanges(spec.search_space),
        )
    state_file.parent.mkdir(parents=True, exist_ok=True)
    return ResumableASHA(
        str(state_file), time_attr="epoch", max_t=epochs, grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )


def check_resources(sweep: Sweep) -> None:
    """One trial (its workers plus the trial's own sliver of CPU) must fit in the Ray cluster."""
    try:
        preflight.check_cluster(sweep.base)
    except ConfigError as error:
        raise ConfigError(f"resources (each trial's scaling): {error}") from None
    scaling, cpus = sweep.base.scaling, ray.cluster_resources().get("CPU", 0)
    needed = scaling.num_workers * scaling.cpus_per_worker + TRIAL_CPU
    if cpus < needed:
        raise ConfigError(f"resources: one trial needs {needed:g} CPU ({TRIAL_CPU} of them for the trial itself) "
                          f"but the Ray cluster has {cpus:g}; lower resources.cpus_per_worker or add nodes")
