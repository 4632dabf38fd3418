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
from guided_diffusion.storage import location
from sampling.manifest import read_manifest

from .driver import METRICS
from .paired import paired_table
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
    paired: dict[str, Any] | None = None  # reproduce.paired's comparison with the baseline row, None for a baseline

    def ours(self, metric: str) -> float | None:
        return None if self.metrics is None else self.metrics.get(_EVALUATOR_KEY[metric])

    def interval(self, metric: str) -> list[float] | None:
        return (((self.metrics or {}).get("bootstrap") or {}).get("intervals") or {}).get(_EVALUATOR_KEY[metric])

    def difference(self, metric: str) -> dict[str, Any] | None:
        """{difference, interval, excludes_zero} of this row minus its baseline, None when there is none."""
        return ((self.paired or {}).get("metrics") or {}).get(_EVALUATOR_KEY[metric])

    def theirs(self, metric: str) -> float | None:
        return ((self.paper or {}).get("metrics") or {}).get(metric)


def collect(table: Table, out_root: Path) -> list[RowResult]:
    """What exists of each row under `out_root`, with each row's paired difference to its baseline."""
    found = []
    for row in table.rows:
        directory = run_dir(out_root, table, row)
        manifest = read_manifest(directory) if directory.is_dir() else None
        metrics_path = directory / METRICS
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
        runs = (manifest or {}).get("runs") or [{}]
        found.append((row, (manifest or {}).get("config"), metrics, runs[-1].get("code_version", "")))
    paired = paired_table(table, out_root, {row.name: config for row, config, _, _ in found})
    return [RowResult(row, config, metrics, paper_row(table.name, row.name), version, paired.get(row.name))
            for row, config, metrics, version in found]


def _number(value: float | None, metric: str) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if metric in ("precision", "recall") else f"{value:.2f}"


def _signed(value: float, metric: str, sign: bool) -> str:
    return ("+" if sign and value > 0 else "") + _number(value, metric)


def _with_interval(value: float, interval: list[float] | None, metric: str, sign: bool = False) -> str:
    text = _signed(value, metric, sign)
    return text + (f" [{_signed(interval[0], metric, sign)}, {_signed(interval[1], metric, sign)}]" if interval else "")


def _cell(result: RowResult, metric: str) -> str:
    ours, theirs = result.ours(metric), result.theirs(metric)
    if ours is None:
        return f"— (paper {_number(theirs, metric)})" if theirs is not None else "—"
    interval = result.interval(metric)
    mine = _with_interval(ours, interval, metric)
    if interval and not interval[0] <= ours <= interval[1]:
        mine += " †"
    if theirs is None:
        return mine
    return f"{mine} / {_number(theirs, metric)} ({ours - theirs:+.2f})"


def _difference_cell(result: RowResult, metric: str) -> str:
    entry = result.difference(metric)
    if entry is None:
        return "—"
    text = _with_interval(entry["difference"], entry["interval"], metric, sign=True)
    return f"**{text}**" if entry["excludes_zero"] else text


HOW_TO_READ = (
    "How to read: brackets are {level:g}% percentile bootstrap intervals ({resamples} resamples of the sample batch, "
    "seed {seed}, reference fixed; docs/statistics.md). The second table gives each row minus its baseline row. "
    "Rows share seeds (sample i of every row starts from the same noise), so the difference's interval comes from "
    "the same resampled indices in both rows, and is usually much narrower than the two rows' own intervals "
    "suggest: overlapping intervals above do not mean no difference. A **bold** difference has an interval that "
    "excludes 0: at this sample count, the row differs from its baseline in that metric beyond resampling noise "
    "(one of {count} comparisons in the table; expect about {expected} of them to exclude 0 by chance alone). "
    "The intervals cover the sampling noise of this batch only, not the choice of seed list, reference or model. "
    "† in the first table marks an interval that misses its own point estimate: resamples hold ~63% distinct "
    "samples, and FID/sFID from few samples are biased upward by more than their spread; such a row's interval "
    "says how noisy it is, not where the metric lies, and its paired differences (where the bias largely cancels) "
    "are the comparison to read."
)


def _paired_section(table: Table, results: list[RowResult]) -> list[str]:
    compared = [r for r in results if r.paired is not None]
    if not compared or not table.bootstrap.resamples:
        return []
    settings = table.bootstrap
    count = sum("metrics" in r.paired for r in compared) * len(METRIC_NAMES)
    lines = ["", "## Paired differences to the baseline row", "",
             HOW_TO_READ.format(level=100 * settings.level, resamples=settings.resamples, seed=settings.seed,
                                count=count, expected=f"{count * (1 - settings.level):.1f}"), "",
             "| row | baseline | " + " | ".join(f"Δ {_HEADER[m]}" for m in METRIC_NAMES) + " |",
             "|---" * (len(METRIC_NAMES) + 2) + "|"]
    labels = {r.row.name: r.row.label for r in results}
    for result in compared:
        baseline = labels[result.paired["baseline"]]
        if "metrics" in result.paired:
            cells = [_difference_cell(result, m) for m in METRIC_NAMES]
        else:
            cells = [f"not paired: {result.paired['reason']}"] + [""] * (len(METRIC_NAMES) - 1)
        lines.append(f"| {result.row.label} | {baseline} | " + " | ".join(cells) + " |")
    return lines


def _status(result: RowResult) -> str:
    if result.config is None:
        return "not sampled"
    return "not evaluated" if result.metrics is None else ""


def markdown(table: Table, results: list[RowResult], out_root: Path, command: str) -> str:
    """The table as markdown: each metric cell is `ours / paper (ours - paper)`."""
    has_paper = any(r.paper for r in results)
    lines = [f"# {table.title}", "", f"Source: {table.source}. Made by `{command}` from the runs under "
             f"`{location(out_root) / table.name}`."]
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
    return "\n".join(lines + _paired_section(table, results)) + "\n"


def csv_text(table: Table, results: list[RowResult]) -> str:
    """One line per row: ours, paper and difference per metric, and how the row was made."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["table", "row", "label"]
    for metric in METRIC_NAMES:
        header += [metric, f"{metric}_paper", f"{metric}_diff"]
    header += ["num_samples", "sampler", "guidance", "status", "command", "baseline"]
    for metric in METRIC_NAMES:
        header += [f"{metric}_low", f"{metric}_high", f"{metric}_vs_baseline", f"{metric}_vs_baseline_low",
                   f"{metric}_vs_baseline_high", f"{metric}_vs_baseline_excludes_zero"]
    writer.writerow(header)
    for result in results:
        line = [table.name, result.row.name, result.row.label]
        for metric in METRIC_NAMES:
            ours, theirs = result.ours(metric), result.theirs(metric)
            diff = ours - theirs if ours is not None and theirs is not None else None
            line += ["" if v is None else f"{v:.6g}" for v in (ours, theirs, diff)]
        config = result.config
        line += [(result.metrics or {}).get("num_samples", ""), config["sampler"]["name"] if config else "",
                 describe_guidance(config) if config else "", _status(result) or "done",
                 result.row.command(table.overrides), (result.paired or {}).get("baseline", "")]
        for metric in METRIC_NAMES:
            interval, entry = result.interval(metric) or [None, None], result.difference(metric) or {}
            values = [*interval, entry.get("difference"), *(entry.get("interval") or [None, None])]
            line += ["" if v is None else f"{v:.6g}" for v in values] + [entry.get("excludes_zero", "")]
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
