"""A study's table: its own metrics for the grayscale baseline, each row's selected model and the ground truth.

Written as ``study.md`` (the measured table, then each published table beside
the same numbers measured here), ``study.csv`` (the measured table) and
``study.json`` (everything, as numbers). Cells are ``mean ± 95% half-width``
over the scored images, formatted like ``colorray.evaluate``'s tables.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from colorray.evaluate.harness import (
    COLUMNS,
    GRAY_ROW,
    TRUTH_ROW,
    Column,
    format_cell,
    json_number,
)
from colorray.study.recipes import METRIC_KEYS, PublishedTable, Recipe

ALWAYS = ("colorfulness", "colorfulness_gap")  # every study's table ends with these


@dataclass
class MeasuredRow:
    name: str
    kind: str  # baseline | model | reference
    values: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (mean, ci95)
    status: str = ""  # models: completed | stopped early | error
    epoch: int | None = None  # the selected checkpoint's epoch
    epochs: int = 0  # epochs the row trains
    trained: int = 0  # epochs it reported (fewer than ``epochs`` when it failed or was stopped)
    checkpoint: str = ""
    config: dict[str, Any] = field(default_factory=dict)


def study_columns(recipe: Recipe) -> list[Column]:
    keys = list(dict.fromkeys([*recipe.spec.metrics, *ALWAYS]))
    return [next(column for column in COLUMNS if column.key == key) for key in keys]


def _cell(row: MeasuredRow, column: Column) -> str:
    if column.key in row.values:
        return format_cell(*row.values[column.key], column.decimals)
    if row.kind == "model" and not row.values:
        return "not scored"
    return "unavailable"


def _epoch_cell(row: MeasuredRow) -> str:
    if row.kind != "model":
        return ""
    if row.epoch is None:
        return row.status or "not run"
    if row.status != "completed":
        return f"{row.epoch}/{row.epochs} ({row.status} after {row.trained})"
    return f"{row.epoch}/{row.epochs}"


def measured_table(recipe: Recipe, rows: list[MeasuredRow]) -> list[list[str]]:
    """Header and cells: row, selected epoch, the study's metrics, colorfulness and its gap."""
    columns = study_columns(recipe)
    header = ["row", "selected epoch", *(column.title for column in columns)]
    return [header, *([row.name, _epoch_cell(row), *(_cell(row, c) for c in columns)] for row in rows)]


def markdown(table: list[list[str]]) -> str:
    header, *body = table
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def _measured_mean(rows: list[MeasuredRow], name: str, key: str, decimals: int) -> str:
    row = next((r for r in rows if r.name == name), None)
    if row is None or key not in row.values:
        return "—"
    return format_cell(row.values[key][0], math.nan, decimals)


def comparison_table(table: PublishedTable, rows: list[MeasuredRow]) -> list[list[str]]:
    """A published table with, beside each of its metric columns, the same metric measured here."""
    decimals = {column.key: column.decimals for column in COLUMNS}
    header = ["published row", "reproduced here by"]
    for key in table.columns:
        header += [f"{key} published", f"{key} here"] if key in METRIC_KEYS else [key]
    body = []
    for published in table.rows:
        cells = [published.label, published.row or "—"]
        for key, value in zip(table.columns, published.values):
            cells.append(str(value))
            if key in METRIC_KEYS:
                cells.append(_measured_mean(rows, published.row, key, decimals[key]) if published.row else "—")
        body.append(cells)
    return [header, *body]


def study_markdown(recipe: Recipe, scale: str, rows: list[MeasuredRow], context: dict[str, Any]) -> str:
    spec = recipe.spec
    lines = [f"# {spec.title}", "",
             f"- study: `{spec.name}` (seed text `{spec.source}`); its data: {spec.data}",
             f"- here: scale `{scale}`, {context['data']}",
             f"- command: `{context['command']}`",
             f"- each row's checkpoint selected by `{context['metric']}` ({context['mode']}) on the validation split; "
             f"scored at {context['size']}x{context['size']} center crops (protocol: results.json, "
             "docs/evaluate.md)",
             "", "## Measured here", "", markdown(measured_table(recipe, rows)), "",
             "mean ± 95% confidence half-width over the scored images. The grayscale baseline (ab = 0) is the floor; "
             "the ground-truth row gives the real photos' colorfulness; colorfulness gap = mean |CF(model) - CF(truth)|."]
    for table in spec.published:
        lines += ["", f"## Published: {table.where}", "", markdown(comparison_table(table, rows))]
        if table.note:
            lines += ["", table.note]
    if spec.published_note:
        lines += ["", "## Published", "", spec.published_note]
    notes = [f"- **{row.name}**: {recipe.row(row.name).note}" for row in rows
             if row.kind == "model" and recipe.row(row.name).note]
    if notes:
        lines += ["", "## Row notes", "", *notes]
    return "\n".join(lines) + "\n"


def study_csv(recipe: Recipe, rows: list[MeasuredRow]) -> str:
    """The measured table as numbers: per metric its mean and 95% half-width."""
    columns = study_columns(recipe)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "kind", "status", "selected_epoch", "epochs",
                     *(f"{c.key}{part}" for c in columns for part in ("", "_ci95"))])
    for row in rows:
        values = []
        for column in columns:
            mean, ci = row.values.get(column.key, (math.nan, math.nan))
            values += [json_number(mean), json_number(ci)]
        writer.writerow([row.name, row.kind, row.status, "" if row.epoch is None else row.epoch, row.epochs or "",
                         *values])
    return buffer.getvalue()


def study_json(recipe: Recipe, scale: str, rows: list[MeasuredRow], context: dict[str, Any]) -> dict[str, Any]:
    spec = recipe.spec
    return {
        "study": spec.name, "title": spec.title, "source": spec.source, "published_data": spec.data,
        "scale": scale, **context,
        "metrics": [column.key for column in study_columns(recipe)],
        "rows": [{"name": row.name, "kind": row.kind, "status": row.status, "selected_epoch": row.epoch,
                  "epochs": row.epochs, "trained_epochs": row.trained, "checkpoint": row.checkpoint, "note": recipe.row(row.name).note
                  if row.kind == "model" else "", "config": row.config,
                  "values": {key: {"mean": json_number(mean), "ci95": json_number(ci)}
                             for key, (mean, ci) in row.values.items()}}
                 for row in rows],
        "published": [{"where": table.where, "columns": table.columns, "note": table.note,
                       "rows": [{"label": r.label, "row": r.row, "values": r.values} for r in table.rows]}
                      for table in spec.published],
        "published_note": spec.published_note,
    }


def baseline_rows(summary: dict[str, dict[str, tuple[float, float]]]) -> tuple[MeasuredRow, MeasuredRow]:
    return (MeasuredRow(GRAY_ROW, "baseline", summary.get(GRAY_ROW, {})),
            MeasuredRow(TRUTH_ROW, "reference", summary.get(TRUTH_ROW, {})))
