"""A row's extracted features on disk, so bootstrap and paired differences re-score without the feature network.

One `.npz` per evaluated sample batch: the sample's pool and spatial features and class probabilities, and the
reference side it was scored against (its FID/sFID statistics and pool features) and the k-NN ball memberships of
precision and recall. Written atomically.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from evaluations.bootstrap import ReferenceFeatures, SampleFeatures
from evaluations.metrics import Coverage
from evaluations.npz_io import save_npz_atomic
from guided_diffusion.fileio import unreadable
from guided_diffusion.storage import ObjectPath, location

FORMAT = "pag-adm/eval-features-v2"
_SAMPLE = ("pool", "spatial", "probs")
_REFERENCE = ("mu", "sigma", "mu_s", "sigma_s", "pool")
_COVERAGE = ("k", "sample_covered", "neighbours", "candidates", "nearer")


def save_features(path: Path | ObjectPath, sample: SampleFeatures, reference: ReferenceFeatures, sample_statistics: str,
                  coverage: Coverage) -> None:
    """`sample_statistics` is "computed" or "stored" (a sample batch with its own mu/sigma: FID not resampled);
    `coverage` the k-NN ball memberships of the sample against the reference, so they are computed once."""
    arrays = {f"sample_{key}": getattr(sample, key) for key in _SAMPLE}
    arrays.update({f"ref_{key}": getattr(reference, key) for key in _REFERENCE})
    arrays.update({f"coverage_{key}": np.asarray(getattr(coverage, key)) for key in _COVERAGE})
    save_npz_atomic(path, format=np.array(FORMAT), sample_statistics=np.array(sample_statistics), **arrays)


def is_current(path: Path | ObjectPath) -> bool:
    """Whether `path` is a features file of this format (reads only its format entry)."""
    try:
        with location(path).open("rb") as fh, np.load(fh) as data:
            return "format" in data.files and str(data["format"]) == FORMAT
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False


def load_features(path: Path | ObjectPath) -> tuple[SampleFeatures, ReferenceFeatures, str, Coverage]:
    """(sample features, reference side, "computed" or "stored", ball memberships), with an error that says how to
    remake them."""
    remake = "re-evaluate the row (delete its metrics.json and rerun scripts/reproduce.py)"
    try:
        with location(path).open("rb") as fh, np.load(fh) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise unreadable(path, err, "an evaluator features file", remake) from None
    names = [f"sample_{key}" for key in _SAMPLE] + [f"ref_{key}" for key in _REFERENCE]
    names += [f"coverage_{key}" for key in _COVERAGE] + ["sample_statistics"]
    if str(arrays.get("format", "")) != FORMAT or any(name not in arrays for name in names):
        raise ValueError(f"{path} is not an evaluator features file ({FORMAT}); {remake}")
    sample = SampleFeatures(**{key: arrays[f"sample_{key}"] for key in _SAMPLE})
    reference = ReferenceFeatures(**{key: arrays[f"ref_{key}"] for key in _REFERENCE})
    coverage = {key: arrays[f"coverage_{key}"] for key in _COVERAGE}
    coverage["k"] = int(coverage["k"])
    return sample, reference, str(arrays["sample_statistics"]), Coverage(**coverage)
