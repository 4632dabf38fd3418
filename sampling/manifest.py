"""`manifest.json`: what a run directory holds and how it was made; the config hash that guards resumes.

The hash covers every config key except those in OPERATIONAL_KEYS, i.e. everything that can change a sample's bytes:
model, diffusion, sampler, guidance, classifier, labels, seed, micro_batch and cpu_threads. It leaves out num_samples
(extending a finished run to more samples is a legitimate resume: samples are per-index), batch_size (shard size
only), the output and checkpoint paths, the device choice (recorded per shard instead), PNG export, the waiting
timeout, the progress bar, the descriptive key reference_batch and `speed` (torch.compile and the memory format: how
kernels run, like the device; each shard records `compiled` and `memory_format`). `precision` is hashed. Numbers
are canonicalised (9.0 and 9 hash alike), so `guidance.scale=1` on the command line resumes a run configured with
1.0. A key this list does not name is hashed: an unknown key can refuse a resume, never let a changed one through.
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guided_diffusion.fileio import atomic_write
from guided_diffusion.storage import Location

from .errors import SamplingError

MANIFEST = "manifest.json"
FORMAT = 1
OPERATIONAL_KEYS = frozenset({
    "exp_name", "out_dir", "num_samples", "batch_size", "device", "save_png", "paths", "wait_timeout_s", "progress",
    "reference_batch", "speed",
})
_REPO = Path(__file__).resolve().parents[1]


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def hashed_config(conf: Mapping[str, Any]) -> dict:
    """The part of the config that determines the samples (see the module doc)."""
    return _canonical({k: v for k, v in conf.items() if k not in OPERATIONAL_KEYS})


def config_hash(conf: Mapping[str, Any]) -> str:
    text = json.dumps(hashed_config(conf), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """'key: old -> new' for every leaf that differs (dotted keys, as on the command line)."""
    a, b = _flatten(old), _flatten(new)
    missing = "(absent)"
    return [f"{key}: {a.get(key, missing)} -> {b.get(key, missing)}" for key in sorted(set(a) | set(b))
            if a.get(key, missing) != b.get(key, missing)]


def code_version() -> str:
    """`git describe` of the checkout when it is one, else the installed package version."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=_REPO, capture_output=True,
                                text=True, timeout=10, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return f"git:{result.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"pag-adm {metadata.version('pag-adm')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
    }
    for package in ("hydra-core", "omegaconf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    if "mpi4py" in sys.modules:
        versions["mpi4py"] = sys.modules["mpi4py"].__version__
    return versions


def run_record(world_size: int, launcher: str, device: torch.device, conf: Mapping[str, Any]) -> dict:
    """Provenance of one launch (appended to the manifest's `runs`)."""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(sys.argv),
        "host": socket.gethostname(),
        "launcher": launcher,
        "world_size": world_size,
        "device": device.type,
        "num_samples": conf["num_samples"],
        "batch_size": conf["batch_size"],
        "code_version": code_version(),
        "library_versions": library_versions(),
    }


def read_manifest(out_dir: Location) -> dict | None:
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SamplingError(
            f"{path} cannot be read ({err}); restore it, or move it away to let the shards' own config hashes decide"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "config_hash" not in manifest:
        raise SamplingError(f"{path} is not a manifest written by this sampler (format {FORMAT}); use another out_dir")
    return manifest


def merged_file(manifest: Mapping[str, Any] | None, out_dir: Location, num_samples: int) -> Location | None:
    """The merged file of `num_samples` samples that a launch recorded in `manifest`, if it is still there."""
    for record in (manifest or {}).get("merged", []):
        path = out_dir / record["file"]
        if record["num_samples"] == num_samples and path.is_file():
            return path
    return None


def write_manifest(out_dir: Location, manifest: Mapping[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write(out_dir / MANIFEST, lambda fh: fh.write(text.encode()))


def new_manifest(conf: Mapping[str, Any], digest: str) -> dict:
    return {"format": FORMAT, "config_hash": digest, "hashed_config": hashed_config(conf), "config": dict(conf),
            "seed": conf["seed"], "num_samples": conf["num_samples"], "runs": [], "merged": []}


def check_resume(manifest: Mapping[str, Any], conf: Mapping[str, Any], digest: str, out_dir: Location) -> None:
    """Refuse to add samples of another configuration to a run directory."""
    if manifest["config_hash"] == digest:
        return
    changes = config_diff(manifest.get("hashed_config", {}), hashed_config(conf))
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    raise SamplingError(
        f"{out_dir} holds samples of another configuration ({shown or 'hash ' + manifest['config_hash']}); "
        "resume with the original settings, or pass a new out_dir=... for the new ones (finished shards are kept)"
    )
