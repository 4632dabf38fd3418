"""The papers' published numbers (results/paper_numbers.yaml), looked up by table and row."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

PAPER_NUMBERS = Path(__file__).resolve().parents[1] / "results" / "paper_numbers.yaml"
METRICS = ("fid", "sfid", "is", "precision", "recall")


@functools.cache
def paper_numbers(path: Path = PAPER_NUMBERS) -> dict[str, dict[str, dict[str, Any]]]:
    """table -> row -> {source, row, metrics}; an unknown metric name is an error, not a silent blank."""
    data = yaml.safe_load(path.read_text()) or {}
    for table, rows in data.items():
        for row, entry in rows.items():
            unknown = set(entry.get("metrics") or {}) - set(METRICS)
            if unknown or "source" not in entry:
                raise ValueError(f"{path}: {table}/{row}: needs a source and metrics among {METRICS}, got {entry}")
    return data


def paper_row(table: str, row: str) -> dict[str, Any] | None:
    """The published entry of one row, or None when the papers report none."""
    return paper_numbers().get(table, {}).get(row)
