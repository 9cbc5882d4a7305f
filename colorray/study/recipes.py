"""Study recipes: ``recipes/NAME.yaml`` read, checked and turned into one TrainConfig per row of the study's table.

A recipe holds the study's own words (title, seed text, data), the metric
keys of its table (those of ``colorray.evaluate``), the tables it published
(verbatim, each row pointing at the recipe row that reproduces it), two scales
(``small``: one CPU machine; ``full``: the published recipe on a GPU cluster)
and its rows. A scale is sweep-like: ``base`` TrainConfig sections under every
row, each trial's ``resources`` (its ``scaling``), ``max_concurrent`` trials,
the selection ``metric``/``mode``, the ab ``prior`` settings and the ``eval``
settings. A row is its ``name``, optional ``note``, TrainConfig sections for
every scale and, under ``small``/``full``, sections for one scale only.

Every setting cites its source in a YAML comment; ``tests/test_study.py``
checks that every value line of every recipe carries one.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from colorray.config import (
    ConfigError,
    ScalingSettings,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    merge_values,
    suggest,
    with_absolute_paths,
)
from colorray.evaluate.harness import COLUMNS, GRAY_ROW, TRUTH_ROW

RECIPES_DIR = Path(__file__).with_name("recipes")
SCALES = ("small", "full")
METRIC_KEYS = tuple(column.key for column in COLUMNS)
ROW_SECTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "scaling")  # resources: per scale
ROW_FIELDS = ("name", "note", *SCALES)


class RecipeError(ConfigError):
    """An unknown study, a recipe that does not hold together, or a bad override: the message names it."""


@dataclass
class EvalSettings:
    size: int = 256  # evaluation crop: short side to size, center crop (colorray.evaluate --size)
    limit: int = 0  # score the first N images of the val split (0: all)
    sheet_images: int = 6  # images (lines) in the comparison sheet
    batch_size: int = 16


@dataclass
class PriorSettings:
    limit: int = 0  # train images counted for the ab prior (0: all)
    image_size: int = 64  # decode size of those images


@dataclass
class ScaleSettings:
    base: dict[str, Any] = field(default_factory=dict)  # TrainConfig sections under every row
    resources: ScalingSettings = field(default_factory=ScalingSettings)  # each trial's scaling
    max_concurrent: int = 0  # trials at once (0: as many as the cluster fits)
    metric: str = ""  # the metric selecting each trial's checkpoint; empty: TrainConfig's run.metric
    mode: str = ""  # max | min; empty: TrainConfig's run.mode
    prior: PriorSettings = field(default_factory=PriorSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)


@dataclass
class PublishedRow:
    label: str  # the row as the study names it
    values: list[Any]  # one per column, as printed
    row: str = ""  # the recipe row reproducing it; empty: none (e.g. another paper's model)


@dataclass
class PublishedTable:
    where: str  # the table's place in the seed text
    columns: list[str]  # metric keys where colorray measures the same quantity, else the study's words
    rows: list[PublishedRow] = field(default_factory=list)
    note: str = ""


@dataclass
class RecipeSpec:
    name: str = ""
    title: str = ""
    source: str = ""  # the seed text's file name under shared/seeds/
    data: str = ""  # the study's data, in its words
    metrics: list[str] = field(default_factory=list)  # the study's table columns (colorray.evaluate keys)
    published: list[PublishedTable] = field(default_factory=list)
    published_note: str = ""  # what the study published when it has no table
    scales: dict[str, Any] = field(default_factory=dict)  # scale -> ScaleSettings mapping, parsed when used
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Row:
    name: str
    note: str
    sections: dict[str, Any]  # TrainConfig sections at every scale
    per_scale: dict[str, dict[str, Any]]  # scale -> TrainConfig sections over them


@dataclass
class Recipe:
    spec: RecipeSpec
    rows: list[Row]
    path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    def row(self, name: str) -> Row:
        return next(row for row in self.rows if row.name == name)


def list_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name: str) -> Recipe:
    """The checked recipe of study ``name``; ``RecipeError`` for an unknown name or a broken recipe."""
    known = list_recipes()
    if name not in known:
        raise RecipeError(f"unknown study '{name}'{suggest(name, known)}; known: {', '.join(known)}")
    path = RECIPES_DIR / f"{name}.yaml"
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        spec = config_from_dict(values, RecipeSpec)
    except ConfigError as error:
        raise RecipeError(f"recipe {path.name}: {error}") from None
    recipe = Recipe(spec, [_parse_row(path, row) for row in spec.rows], path)
    _check(recipe)
    return recipe


def _parse_row(path: Path, values: dict[str, Any]) -> Row:
    where = f"recipe {path.name} row {values.get('name', '?')!r}"
    if not isinstance(values, dict) or not isinstance(values.get("name"), str) or not values["name"]:
        raise RecipeError(f"recipe {path.name}: every row needs a non-empty name, got {values!r}")
    for key in values:
        if key not in ROW_FIELDS + ROW_SECTIONS:
            known = ROW_FIELDS + ROW_SECTIONS
            raise RecipeError(f"{where}: unknown key '{key}'{suggest(key, known)}; known: {', '.join(known)}")
    per_scale = {scale: values.get(scale) or {} for scale in SCALES}
    for scale, sections in per_scale.items():
        unknown = [key for key in sections if key not in ROW_SECTIONS]
        if unknown:
            raise RecipeError(f"{where}: '{scale}' may only hold TrainConfig sections "
                              f"({', '.join(ROW_SECTIONS)}), not {', '.join(unknown)}")
    sections = {key: value for key, value in values.items() if key in ROW_SECTIONS}
    return Row(values["name"], values.get("note", ""), sections, per_scale)


def _check(recipe: Recipe) -> None:
    spec, where = recipe.spec, f"recipe {recipe.path.name}"
    if spec.name != recipe.path.stem:
        raise RecipeError(f"{where}: name '{spec.name}' must be the file's name '{recipe.path.stem}'")
    if sorted(spec.scales) != sorted(SCALES):
        raise RecipeError(f"{where}: scales must be exactly {', '.join(SCALES)}, got {', '.join(spec.scales)}")
    for scale in SCALES:
        scale_settings(recipe, scale)
    for key in spec.metrics:
        if key not in METRIC_KEYS:
            raise RecipeError(f"{where}: unknown metric '{key}'{suggest(key, METRIC_KEYS)}; "
                              f"known: {', '.join(METRIC_KEYS)}")
    names = [row.name for row in recipe.rows]
    if not names or len(set(names)) != len(names) or set(names) & {GRAY_ROW, TRUTH_ROW}:
        raise RecipeError(f"{where}: rows need distinct names other than '{GRAY_ROW}' and '{TRUTH_ROW}', "
                          f"got {names}")
    for table in spec.published:
        for published in table.rows:
            if published.row and published.row not in names:
                raise RecipeError(f"{where}: published row '{published.label}' names no recipe row "
                                  f"'{published.row}'{suggest(published.row, names)}")
            if len(published.values) != len(table.columns):
                raise RecipeError(f"{where}: published row '{published.label}' has {len(published.values)} "
                                  f"values for {len(table.columns)} columns")


# --- One TrainConfig per row --------------------------------------------------------


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """Dotted ``key=value`` overrides: (TrainConfig keys set in every row, keys of the scale settings)."""
    train, scale = [], []
    for item in overrides:
        (train if item.split(".", 1)[0].split("=", 1)[0] in ROW_SECTIONS + ("scaling",) else scale).append(item)
    return train, scale


def scale_settings(recipe: Recipe, scale: str, overrides: Sequence[str] = ()) -> ScaleSettings:
    """The scale's settings with dotted overrides (``eval.limit=8``, ``max_concurrent=1``) set."""
    if scale not in SCALES:
        raise RecipeError(f"unknown scale '{scale}'{suggest(scale, SCALES)}; known: {', '.join(SCALES)}")
    values = apply_overrides(recipe.spec.scales[scale], overrides)
    try:
        settings = config_from_dict(values, ScaleSettings)
    except ConfigError as error:
        raise RecipeError(f"recipe {recipe.path.name} scale '{scale}': {error}") from None
    if settings.mode not in ("", "max", "min"):
        raise RecipeError(f"recipe {recipe.path.name} scale '{scale}': mode must be max or min, got '{settings.mode}'")
    return settings


def row_config(recipe: Recipe, row: Row, scale: str, settings: ScaleSettings, data_root: str,
               overrides: Sequence[str] = ()) -> TrainConfig:
    """The row's TrainConfig at ``scale``: base, row, row at scale, overrides; data, scaling and metric set."""
    values = merge_values(copy.deepcopy(settings.base), copy.deepcopy(row.sections))
    values = merge_values(values, copy.deepcopy(row.per_scale[scale]))
    values = merge_values(values, {"scaling": config_to_dict(settings.resources),
                                   "data": {"train": f"{data_root}/train", "val": f"{data_root}/val"}})
    try:
        config = config_from_dict(apply_overrides(values, overrides))
    except ConfigError as error:
        raise RecipeError(f"recipe {recipe.path.name} row '{row.name}' ({scale}): {error}") from None
    defaults = TrainConfig().run
    config.run.metric = settings.metric or defaults.metric
    config.run.mode = settings.mode or defaults.mode
    return with_absolute_paths(config)


def study_configs(recipe: Recipe, scale: str, data_root: str, overrides: Sequence[str] = (),
                  rows: Sequence[str] = ()) -> tuple[ScaleSettings, dict[str, TrainConfig]]:
    """The scale's settings and each chosen row's TrainConfig (all rows when ``rows`` is empty), in recipe order."""
    train_overrides, scale_overrides = split_overrides(overrides)
    settings = scale_settings(recipe, scale, scale_overrides)
    names = [row.name for row in recipe.rows]
    for name in rows:
        if name not in names:
            raise RecipeError(f"study '{recipe.name}' has no row '{name}'{suggest(name, names)}; "
                              f"its rows: {', '.join(names)}")
    chosen = [row for row in recipe.rows if not rows or row.name in rows]
    return settings, {row.name: row_config(recipe, row, scale, settings, data_root, train_overrides)
                      for row in chosen}
