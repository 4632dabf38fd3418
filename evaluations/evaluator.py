"""ADM-compatible evaluation of a sample batch against a reference batch.

    python -m evaluations.evaluator REF.npz SAMPLE.npz [--backend torch|tf] [--json OUT.json]

Prints the five lines of ADM's `evaluations/evaluator.py` (Inception Score, FID, sFID, Precision, Recall) on
stdout, computed the same way; progress and notes go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import scipy
import torch
from tqdm import tqdm

from evaluations import metrics
from evaluations.backends import load_backend
from evaluations.inception import FEATURE_BATCH_SIZE, SOFTMAX_BATCH_SIZE, FeatureBackend
from evaluations.npz_io import (
    NpzImages,
    check_images_header,
    check_sample_batch,
    check_sample_matches_reference,
    stored_statistics,
)
from guided_diffusion.fileio import atomic_write

PAPER_SAMPLE_COUNT = 50_000


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def compute_activations(
    images: NpzImages, backend: FeatureBackend, role: str, check_blank: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """pool_3 and spatial features of every image, fed in ADM's batches of 64."""
    pools, spatials = [], []
    start = 0
    batches = images.batches(FEATURE_BATCH_SIZE)
    total = math.ceil(len(images) / FEATURE_BATCH_SIZE)
    for batch in tqdm(batches, total=total, desc=f"{role} activations", file=sys.stderr, leave=False):
        if check_blank:
            check_sample_batch(batch, start, images.path)
        pool, spatial = backend.features(batch)
        pools.append(pool)
        spatials.append(spatial)
        start += len(batch)
    return np.concatenate(pools), np.concatenate(spatials)


def batch_statistics(
    path: Path, pool: np.ndarray, spatial: np.ndarray, role: str
) -> tuple[tuple, tuple, str]:
    """(mu, sigma) for FID and sFID: stored in the npz when it has `mu` (ADM's rule), else computed."""
    stored = stored_statistics(path)
    if stored is not None:
        _note(
            f"{role}: using the statistics stored in {path} (mu/sigma, mu_s/sigma_s), "
            f"not statistics of its {len(pool)} images"
        )
        return (stored["mu"], stored["sigma"]), (stored["mu_s"], stored["sigma_s"]), "stored"
    return metrics.feature_statistics(pool), metrics.feature_statistics(spatial), "computed"


def class_probabilities(backend: FeatureBackend, pool: np.ndarray) -> np.ndarray:
    """Softmax outputs of the pool features, in ADM's batches of 512."""
    return np.concatenate(
        [backend.softmax(pool[i : i + SOFTMAX_BATCH_SIZE]) for i in range(0, len(pool), SOFTMAX_BATCH_SIZE)]
    )


def check_batches(ref: NpzImages, sample: NpzImages) -> None:
    """Refuse malformed or mismatched batches before any network runs."""
    check_images_header(ref, "reference")
    check_images_header(sample, "sample")
    check_sample_matches_reference(sample, ref)


def evaluate(
    ref_path: Path, sample_path: Path, backend: FeatureBackend, allow_blank_samples: bool = False
) -> dict:
    """The five ADM metrics and their provenance (counts, statistics source, backend, versions)."""
    with NpzImages(ref_path) as ref, NpzImages(sample_path) as sample:
        check_batches(ref, sample)
        if len(sample) < PAPER_SAMPLE_COUNT:
            _note(
                f"note: {len(sample)} samples; FID from fewer than {PAPER_SAMPLE_COUNT:,} samples is biased "
                "upward "
                "and not comparable with the papers' 50K-sample numbers"
            )
        sample_pool, sample_spatial = compute_activations(
            sample, backend, "sample", check_blank=not allow_blank_samples
        )
        ref_pool, ref_spatial = compute_activations(ref, backend, "reference")
        n_ref, n_sample, resolution = len(ref), len(sample), list(sample.shape[1:3])

    sample_stats, sample_stats_spatial, sample_source = batch_statistics(
        sample_path, sample_pool, sample_spatial, "sample"
    )
    ref_stats, ref_stats_spatial, ref_source = batch_statistics(ref_path, ref_pool, ref_spatial, "reference")
    _note("computing evaluations...")
    precision, recall = metrics.precision_recall(ref_pool, sample_pool)
    versions = {"numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__}
    if backend.name == "tf":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    return {
        "inception_score": metrics.inception_score(class_probabilities(backend, sample_pool)),
        "fid": metrics.frechet_distance(*sample_stats, *ref_stats),
        "sfid": metrics.frechet_distance(*sample_stats_spatial, *ref_stats_spatial),
        "precision": precision,
        "recall": recall,
        "ref": str(ref_path),
        "sample": str(sample_path),
        "num_ref_images": n_ref,
        "num_samples": n_sample,
        "resolution": resolution,
        "ref_statistics": ref_source,
        "sample_statistics": sample_source,
        "backend": backend.name,
        "feature_space": backend.feature_space,
        "features_sha256": backend.graph_sha256,
        "versions": versions,
    }


def format_results(results: dict) -> str:
    """The five lines ADM's evaluator prints, in its order and number formatting."""
    return "\n".join(
        [
            f"Inception Score: {results['inception_score']}",
            f"FID: {results['fid']}",
            f"sFID: {results['sfid']}",
            f"Precision: {results['precision']}",
            f"Recall: {results['recall']}",
        ]
    )


def write_json(path: Path, results: dict) -> None:
    """Write results through a temporary file and a rename, so a crash never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m evaluations.evaluator", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "ref_batch", type=Path, help="reference batch .npz (e.g. VIRTUAL_imagenet256_labeled.npz)"
    )
    parser.add_argument("sample_batch", type=Path, help="sample batch .npz: arr_0 = uint8 NHWC images")
    parser.add_argument(
        "--backend",
        choices=["torch", "tf", "digits"],
        default="torch",
        help="default: torch (Inception, no TensorFlow); digits: the demo's own feature space, not Inception",
    )
    parser.add_argument("--feature-net", type=Path, help="digits backend: feature network file (default: the demo's)")
    parser.add_argument("--json", type=Path, help="also write the results and their provenance to this file")
    parser.add_argument("--graph", type=Path, help="Inception graph to use instead of the official download")
    parser.add_argument(
        "--cache-dir", type=Path, help="graph cache (default: $PAG_ADM_CACHE or ~/.cache/pag-adm)"
    )
    parser.add_argument("--device", help="torch backend device (default: cuda when available)")
    parser.add_argument(
        "--allow-blank-samples", action="store_true", help="accept sample images whose pixels are all equal"
    )
    args = parser.parse_args(argv)
    try:
        # Fail on a malformed file before spending minutes on the network.
        with NpzImages(args.ref_batch) as ref, NpzImages(args.sample_batch) as sample:
            check_batches(ref, sample)
        backend = load_backend(args.backend, args.graph, args.cache_dir, args.device, args.feature_net)
        if args.backend == "digits":
            _note(f"feature space: {backend.feature_space}")
        results = evaluate(args.ref_batch, args.sample_batch, backend, args.allow_blank_samples)
    except (ValueError, OSError, NotImplementedError, ImportError) as e:
        sys.exit(f"error: {e}")
    print(format_results(results))
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
