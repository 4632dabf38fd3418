"""A table's results beside the papers': results/<table>.md and .csv, from each row's manifest.json and metrics.json.

Every row names the exp and overrides that made it, its sample count, sampler, guidance and code version, so a
reader can rerun exactly that row; rows not sampled or not evaluated yet are listed as missing, never dropped.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guidance.build import describe_guidance
from guided_diffusion.fileio import atomic_write
from sampling.manifest import read_manifest

from .driver import METRICS
from .paper import METRICS as METRIC_NAMES
from .paper import paper_row
from .plots import plot_ablation_bars, plot_sweep
from .tables import Row, Table, run_dir

# evaluator JSON key of each metric (the evaluator says inception_score, the papers IS)
_EVALUATOR_KEY = {"fid": "fid", "sfid": "sfid", "is": "inception_score", "precision": "precision", "recall": "recall"}
_HEADER = {"fid": "FID", "sfid": "sFID", "is": "IS", "precision": "Precision", "recall": "Recall"}


@dataclass(frozen=True)
class RowResult:
    row: Row
    config: dict[str, Any] | None  # the run's composed config (manifest.json), None when never launched
    metrics: dict[str, Any] | None  # the evaluator's JSON, None when not evaluated
    paper: dict[str, Any] | None  # the published entry, None when the papers report none
    code_version: str = ""  # of the run's last sampler launch

    def ours(self, metric: str) -> float | None:
        return None if self.metrics is None else self.metrics.get(_EVALUATOR_KEY[metric])

    def theirs(self, metric: str) -> float | None:
        return ((self.paper or {}).get("metrics") or {}).get(metric)


def collect(table: Table, out_root: Path) -> list[RowResult]:
    """What exists of each row under `out_root`."""
    results = []
    for row in table.rows:
        directory = run_dir(out_root, table, row)
        manifest = read_manifest(directory) if directory.is_dir() else None
        metrics_path = directory / METRICS
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
        runs = (manifest or {}).get("runs") or [{}]
        results.append(RowResult(row, (manifest or {}).get("config"), metrics, paper_row(table.name, row.name),
                                 runs[-1].get("code_version", "")))
    return results


def _number(value: float | None, metric: str) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if metric in ("precision", "recall") else f"{value:.2f}"


def _cell(result: RowResult, metric: str) -> str:
    ours, theirs = result.ours(metric), result.theirs(metric)
    if ours is None:
        return f"— (paper {_number(theirs, metric)})" if theirs is not None else "—"
    if theirs is None:
        return _number(ours, metric)
    return f"{_number(ours, metric)} / {_number(theirs, metric)} ({ours - theirs:+.2f})"


def _status(result: RowResult) -> str:
    if result.config is None:
        return "not sampled"
    return "not evaluated" if result.metrics is None else ""


def markdown(table: Table, results: list[RowResult], out_root: Path, command: str) -> str:
    """The table as markdown: each metric cell is `ours / paper (ours - paper)`."""
    has_paper = any(r.paper for r in results)
    lines = [f"# {table.title}", "", f"Source: {table.source}. Made by `{command}` from the runs under "
             f"`{Path(out_root) / table.name}`."]
    if has_paper:
        lines.append("Cells: ours / paper (ours − paper); paper numbers from `results/paper_numbers.yaml`.")
    spaces = {r.metrics.get("feature_space") for r in results if r.metrics}
    lines.append(f"Feature space: {', '.join(sorted(s for s in spaces if s)) or 'no row evaluated yet'}.")
    lines += ["", "| row | " + " | ".join(_HEADER[m] for m in METRIC_NAMES)
              + " | samples | sampler | guidance | code | config |",
              "|---" * (len(METRIC_NAMES) + 6) + "|"]
    for result in results:
        config, row = result.config, result.row
        cells = [_cell(result, m) for m in METRIC_NAMES]
        if config is None:
            info = [_status(result), "", "", ""]
        else:
            samples = str(result.metrics["num_samples"]) if result.metrics else _status(result)
            info = [samples, config["sampler"]["name"], describe_guidance(config), result.code_version]
        lines.append(f"| {row.label} | " + " | ".join(cells + info) + f" | `{row.command(table.overrides)}` |")
    return "\n".join(lines) + "\n"


def csv_text(table: Table, results: list[RowResult]) -> str:
    """One line per row: ours, paper and difference per metric, and how the row was made."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["table", "row", "label"]
    for metric in METRIC_NAMES:
        header += [metric, f"{metric}_paper", f"{metric}_diff"]
    writer.writerow(header + ["num_samples", "sampler", "guidance", "status", "command"])
    for result in results:
        line = [table.name, result.row.name, result.row.label]
        for metric in METRIC_NAMES:
            ours, theirs = result.ours(metric), result.theirs(metric)
            diff = ours - theirs if ours is not None and theirs is not None else None
            line += ["" if v is None else f"{v:.6g}" for v in (ours, theirs, diff)]
        config = result.config
        line += [(result.metrics or {}).get("num_samples", ""), config["sampler"]["name"] if config else "",
                 describe_guidance(config) if config else "", _status(result) or "done",
                 result.row.command(table.overrides)]
        writer.writerow(line)
    return buffer.getvalue()


def write_figure(table: Table, results: list[RowResult], dest: Path) -> Path | None:
    """Ablations as the papers draw them: metrics vs a swept scale, else one bar per configuration (FID); None for
    fixed tables and before any row is evaluated."""
    results = [r for r in results if r.metrics is not None]
    if table.sweep_key is None or not results:
        return None
    path = dest.with_suffix(".png")
    ours = [(r, {m: r.ours(m) for m in METRIC_NAMES}) for r in results]
    if table.sweep_key.endswith("scale"):
        return plot_sweep([(float(r.row.value), metrics) for r, metrics in ours], path, title=table.title)
    reference = {r.row.label: r.theirs("fid") for r in results if r.theirs("fid") is not None}
    return plot_ablation_bars([(r.row.label, metrics) for r, metrics in ours], path, title=table.title,
                              reference=reference)


def write_report(table: Table, out_root: Path, dest: Path, command: str) -> tuple[Path, Path]:
    """Write <dest>.md and <dest>.csv atomically (and <dest>.png for ablations); returns the table's paths."""
    results = collect(table, out_root)
    md_path, csv_path = dest.with_suffix(".md"), dest.with_suffix(".csv")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((md_path, markdown(table, results, out_root, command)), (csv_path, csv_text(table, results))):
        atomic_write(path, lambda fh, text=text: fh.write(text.encode()))
    write_figure(table, results, dest)
    return md_path, csv_path
