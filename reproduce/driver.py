"""Sample and evaluate every row of a table, skipping what is already done, so a rerun resumes where it stopped.

Sampling resumes through the sampler's own shards and manifest; a row whose merged file exists is not sampled
again. A row's evaluation (`metrics.json` in its run directory) is redone only when the merged file is newer than it
or holds another sample count. Rows run one after another; each row's sampler uses every rank of the launcher.
The `local` launcher with N > 1 ranks runs rank 0 in this process and starts ranks 1..N-1 itself (torchrun's
variables, no collectives): on a CPU, N single-threaded ranks outrun one N-threaded process (docs/demo.md).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluations.backends import load_backend
from evaluations.bootstrap import BootstrapSettings
from evaluations.evaluator import evaluate, write_json
from evaluations.feature_store import is_current
from evaluations.inception import FeatureBackend
from guided_diffusion.storage import Location, ObjectPath, location
from sampling.config import compose_config
from sampling.dist import RankInfo
from sampling.errors import SamplingError
from sampling.manifest import merged_file, read_manifest
from sampling.runner import run, validate

from .tables import Row, Table, run_dir

LOG = logging.getLogger("reproduce")
SAMPLE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sample.py"
METRICS = "metrics.json"
FEATURES = "features.npz"  # the row's extracted features, for paired differences (evaluations/feature_store.py)
LAUNCHERS = ("local", "mpiexec", "torchrun")


@dataclass(frozen=True)
class Launch:
    """How each row's sampler is started: `ngpu` ranks on this machine (`local`: rank 0 in this process, the others
    started here), or under mpiexec / torchrun."""

    launcher: str = "local"
    ngpu: int = 1

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {self.launcher!r}")
        if self.ngpu < 1:
            raise ValueError(f"ngpu must be >= 1, got {self.ngpu}")

    def command(self, overrides: list[str]) -> list[str]:
        if self.launcher == "mpiexec":
            return ["mpiexec", "-n", str(self.ngpu), sys.executable, str(SAMPLE_SCRIPT), *overrides]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.ngpu}",
                str(SAMPLE_SCRIPT), *overrides]


def row_overrides(table: Table, row: Row, out_root: Path | ObjectPath, num_samples: int | None) -> list[str]:
    """The sampler's Hydra overrides for one row; `num_samples` (if given) replaces the exp's count."""
    # quoted: sweep rows' directory names hold '=' (e.g. scale=2), which Hydra's override grammar reads as syntax
    overrides = [f"+exp={row.exp}", *table.overrides, *row.overrides, f"out_dir='{run_dir(out_root, table, row)}'"]
    return overrides + ([f"num_samples={num_samples}"] if num_samples is not None else [])


def run_local(conf: dict[str, Any], overrides: list[str], ranks: int) -> Location:
    """Rank 0 here, ranks 1..`ranks`-1 as child processes; a child that fails is reported by rank 0's wait."""
    children = [subprocess.Popen([sys.executable, str(SAMPLE_SCRIPT), *overrides, "progress=false"],
                                 env={**os.environ, "RANK": str(r), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(r)})
                for r in range(1, ranks)]
    try:
        return run(conf, RankInfo(0, ranks, 0, "local"))
    except BaseException:
        for child in children:  # their finished shards stay; a rerun resumes
            child.terminate()
        raise
    finally:
        for child in children:
            child.wait()


def sample_row(conf: dict[str, Any], overrides: list[str], launch: Launch) -> Location:
    """The row's merged sample file: found, resumed or computed."""
    out_dir = location(conf["out_dir"])
    done = merged_file(read_manifest(out_dir) if out_dir.is_dir() else None, out_dir, conf["num_samples"])
    if done is not None:
        LOG.info("%s: already sampled (%s)", out_dir, done.name)
        return done
    if launch.launcher == "local":
        return run(conf) if launch.ngpu == 1 else run_local(conf, overrides, launch.ngpu)
    subprocess.run(launch.command(overrides), check=True)
    done = merged_file(read_manifest(out_dir), out_dir, conf["num_samples"])
    if done is None:
        raise SamplingError(f"{out_dir}: the sampler exited without a merged file of {conf['num_samples']} samples")
    return done


def reference_path(conf: dict[str, Any]) -> Location:
    """The row's reference batch, <paths.ref_batches>/<reference_batch>, with an error that says how to get it."""
    name = conf.get("reference_batch")
    if not name:
        raise SamplingError(f"exp {conf['exp_name']!r} names no reference_batch; set reference_batch=FILE")
    path = location(conf["paths"]["ref_batches"]) / name
    if not path.is_file():
        raise SamplingError(f"reference batch {path} not found: `make refs` downloads ADM's reference batches "
                            "(or set paths.ref_batches=DIR)")
    return path


def current_metrics(metrics_path: Location, sample_path: Location, num_samples: int,
                    settings: BootstrapSettings) -> dict | None:
    """The stored evaluation of this exact merged file with these intervals and its features kept, or None when it
    must be (re)computed."""
    if not metrics_path.is_file() or metrics_path.stat().st_mtime < sample_path.stat().st_mtime:
        return None
    if not is_current(metrics_path.parent / FEATURES):
        return None
    try:
        metrics = json.loads(metrics_path.read_text())
    except ValueError:
        return None
    if metrics.get("sample") != str(sample_path) or metrics.get("num_samples") != num_samples:
        return None
    recorded = {key: (metrics.get("bootstrap") or {}).get(key) for key in ("resamples", "seed", "level")}
    if recorded != {"resamples": settings.resamples, "seed": settings.seed, "level": settings.level}:
        return None
    return metrics


def evaluate_row(conf: dict[str, Any], sample_path: Location, backend: Callable[[], FeatureBackend],
                 settings: BootstrapSettings) -> dict:
    """The row's metrics and intervals, computed once per merged file and stored beside it with its features."""
    metrics_path = location(conf["out_dir"]) / METRICS
    metrics = current_metrics(metrics_path, sample_path, conf["num_samples"], settings)
    if metrics is not None:
        LOG.info("%s: already evaluated", conf["out_dir"])
        return metrics
    metrics = evaluate(reference_path(conf), sample_path, backend(), settings=settings,
                       features_path=location(conf["out_dir"]) / FEATURES)
    write_json(metrics_path, metrics)
    return metrics


class LazyBackend:
    """The evaluator's feature network, loaded on first use (a table whose rows are all evaluated needs none)."""

    def __init__(self, kind: str, device: str | None = None):
        self.kind, self.device, self._backend = kind, device, None

    def __call__(self) -> FeatureBackend:
        if self._backend is None:
            self._backend = load_backend(self.kind, device=self.device)
        return self._backend


def reproduce(table: Table, out_root: Path | ObjectPath, num_samples: int | None = None, launch: Launch = Launch(),
              evaluate_rows: bool = True, backend: str | None = None) -> dict[str, Location]:
    """Sample (and evaluate, with `table.bootstrap` intervals) every row; returns each row's merged file by name."""
    evaluator = LazyBackend(backend or table.backend)
    samples = {}
    rows = [(row, row_overrides(table, row, out_root, num_samples)) for row in table.rows]
    confs = [compose_config(overrides) for _, overrides in rows]
    for conf in confs:  # every row's config is checked before the first row starts
        validate(conf)
    for index, ((row, overrides), conf) in enumerate(zip(rows, confs, strict=True), 1):
        LOG.info("[%d/%d] %s: %s", index, len(table.rows), row.name, " ".join(overrides))
        sample_path = sample_row(conf, overrides, launch)
        if evaluate_rows:
            evaluate_row(conf, sample_path, evaluator, table.bootstrap)
        samples[row.name] = sample_path
    return samples
