"""Each row's paired difference to its baseline row, with a paired-bootstrap interval, from the rows' stored features.

Rows of a table share seeds, so sample i of a row and sample i of its baseline come from the same noise; drawing the
same indices in both rows cancels the part of the noise they share (docs/statistics.md). Results are cached in
<out_root>/<table>/paired.json, keyed by both rows' evaluations and the bootstrap settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from evaluations.bootstrap import METRIC_KEYS, MetricResampler, paired_differences
from evaluations.feature_store import load_features
from guided_diffusion.fileio import atomic_write
from guided_diffusion.storage import location

from .driver import FEATURES, METRICS
from .tables import Row, Table, run_dir

LOG = logging.getLogger("reproduce")
CACHE = "paired.json"


def _key(table: Table, row_dir: Path, base_dir: Path) -> str:
    """Changes whenever either row is re-evaluated or the settings change."""
    digest = hashlib.sha256(json.dumps(table.bootstrap.as_dict(), sort_keys=True).encode())
    for directory in (row_dir, base_dir):
        digest.update((directory / METRICS).read_bytes())
    return digest.hexdigest()


def _unpaired_reason(row: dict, base: dict, row_conf: dict | None, base_conf: dict | None) -> str | None:
    """Why two evaluated rows cannot be paired, or None."""
    if row["ref"] != base["ref"]:
        return "different reference batches"
    if row["num_samples"] != base["num_samples"]:
        return f"different sample counts ({row['num_samples']} vs {base['num_samples']})"
    if (row_conf or {}).get("seed") != (base_conf or {}).get("seed"):
        return "different seeds"
    if row.get("feature_space") != base.get("feature_space"):
        return "different feature spaces"
    return None


def _resampler(directory: Path, device: str | None) -> MetricResampler:
    sample, reference, statistics, coverage = load_features(directory / FEATURES)
    return MetricResampler(sample, reference, statistics == "computed", device, coverage)


def compare(table: Table, row: Row, baseline: Row, out_root: Path, configs: dict[str, dict | None],
            device: str | None = None) -> dict[str, Any]:
    """{"baseline": name, "metrics": {metric: {difference, interval, excludes_zero}}} or {"baseline", "reason"}."""
    row_dir, base_dir = run_dir(out_root, table, row), run_dir(out_root, table, baseline)
    if not all((d / name).is_file() for d in (row_dir, base_dir) for name in (METRICS, FEATURES)):
        return {"baseline": baseline.name, "reason": "not evaluated with features yet"}
    row_metrics, base_metrics = (json.loads((d / METRICS).read_text()) for d in (row_dir, base_dir))
    reason = _unpaired_reason(row_metrics, base_metrics, configs.get(row.name), configs.get(baseline.name))
    if reason:
        return {"baseline": baseline.name, "reason": reason}
    points = {key: (row_metrics[key], base_metrics[key]) for key in METRIC_KEYS}
    LOG.info("paired bootstrap: %s vs %s (%d resamples)", row.name, baseline.name, table.bootstrap.resamples)
    try:
        row_resampler, base_resampler = _resampler(row_dir, device), _resampler(base_dir, device)
    except ValueError as err:  # a features file from older code or damaged: say so in the table, keep the others
        return {"baseline": baseline.name, "reason": str(err)}
    differences = paired_differences(row_resampler, base_resampler, points, table.bootstrap)
    return {"baseline": baseline.name, "metrics": differences}


def paired_table(table: Table, out_root: Path, configs: dict[str, dict | None],
                 device: str | None = None) -> dict[str, dict]:
    """Every non-baseline row's comparison by row name, recomputed only where its cache entry is stale.

    `configs` holds each row's composed config (None when never sampled), for the seed check."""
    if not table.bootstrap.resamples:
        return {}
    cache_path = location(out_root) / table.name / CACHE
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except ValueError:
        cache = {}
    results, fresh = {}, {}
    for row in table.rows:
        baseline = table.baseline_of(row)
        if baseline is None:
            continue
        row_dir, base_dir = run_dir(out_root, table, row), run_dir(out_root, table, baseline)
        ready = all((d / METRICS).is_file() for d in (row_dir, base_dir))
        key = _key(table, row_dir, base_dir) if ready else None
        entry = cache.get(row.name)
        if key is None or entry is None or entry.get("key") != key:
            entry = {**compare(table, row, baseline, out_root, configs, device), "key": key}
        results[row.name] = entry
        if key is not None and "metrics" in entry:
            fresh[row.name] = entry
    if fresh and fresh != {k: v for k, v in cache.items() if k in fresh}:
        text = json.dumps(fresh, indent=2) + "\n"
        atomic_write(cache_path, lambda fh: fh.write(text.encode()))
    return results
