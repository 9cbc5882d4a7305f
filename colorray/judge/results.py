"""Study results from a votes database: rows and columns for other tables, a text table and a CSV file."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

from colorray.judge.stats import ResultRow, result_rows
from colorray.judge.store import open_store
from colorray.judge.tasks import TRUTH

HEADER = ("task", "system", "measure", "value", "95% interval", "votes", "raters")


def study_rows(db_url: str) -> list[ResultRow]:
    """Every measure of every system in the votes at ``db_url`` (``StoreError`` if it cannot be read).

    The entry point for other tables, such as ``colorray.evaluate``'s.
    """
    return result_rows(open_store(db_url, create=False).votes())


def text_table(rows: list[ResultRow]) -> str:
    cells = [HEADER] + [(row.task, row.system, row.measure, f"{row.value:.3f}", interval_text(row),
                         str(row.votes), str(row.raters)) for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


def interval_text(row: ResultRow) -> str:
    if row.low is None or row.high is None:
        return "-"
    if not (math.isfinite(row.low) and math.isfinite(row.high)):
        return "n/a (one vote)"
    return f"{row.low:.3f}-{row.high:.3f}"


def write_csv(rows: list[ResultRow], path: Path) -> None:
    fields = [field.name for field in dataclasses.fields(ResultRow)]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(dataclasses.asdict(row) for row in rows)


def columns_for_rows(rows: list[ResultRow], labels: list[str], truth_label: str) -> tuple[list[str], dict]:
    """The votes as extra columns of another table whose rows are ``labels``: the column titles, and each
    label's cells ("-" where that system has no votes). A system matches the row of the same name; the
    judge's ground truth (``truth``) matches ``truth_label``."""
    measures = list(dict.fromkeys((row.task, row.measure) for row in rows))
    found = {(row_name(row.system, truth_label), row.task, row.measure): row for row in rows}
    titles = [f"human {measure.replace('_', ' ')} ({task.replace('_', ' ')})" for task, measure in measures]
    cells = {label: [cell_text(found.get((label, task, measure))) for task, measure in measures] for label in labels}
    return titles, cells


def row_name(system: str, truth_label: str) -> str:
    return truth_label if system == TRUTH else system


def cell_text(row: ResultRow | None) -> str:
    if row is None:
        return "-"
    interval = interval_text(row)
    return f"{row.value:.3f}" + ("" if interval == "-" else f" [{interval}]") + f" (n={row.votes})"


def unmatched_systems(rows: list[ResultRow], labels: list[str], truth_label: str) -> list[str]:
    """Systems in the votes with no row among ``labels``."""
    return sorted({row_name(row.system, truth_label) for row in rows} - set(labels))
