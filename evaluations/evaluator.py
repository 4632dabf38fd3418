"""ADM-compatible evaluation of a sample batch against a reference batch.

    python -m evaluations.evaluator REF.npz SAMPLE.npz [--backend torch|tf] [--json OUT.json]

Prints the five lines of ADM's `evaluations/evaluator.py` (Inception Score, FID, sFID, Precision, Recall) on
stdout, computed the same way; progress and notes go to stderr. The JSON also holds a seeded bootstrap interval per
metric (`--bootstrap N`, docs/statistics.md); `--print-intervals` prints them after the five lines.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import torch
from tqdm import tqdm

from evaluations import bootstrap, metrics
from evaluations.backends import load_backend
from evaluations.bootstrap import BootstrapSettings, MetricResampler, ReferenceFeatures, SampleFeatures
from evaluations.feature_store import Resampled, save_features
from evaluations.inception import FEATURE_BATCH_SIZE, SOFTMAX_BATCH_SIZE, FeatureBackend
from evaluations.npz_io import (
    NpzImages,
    check_images_header,
    check_sample_batch,
    check_sample_matches_reference,
    stored_statistics,
)
from guided_diffusion.fileio import atomic_write
from guided_diffusion.storage import ObjectPath, local_path, location

PAPER_SAMPLE_COUNT = 50_000
_PRINTED = (("inception_score", "Inception Score"), ("fid", "FID"), ("sfid", "sFID"), ("precision", "Precision"),
            ("recall", "Recall"))


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


def extract(
    ref_path: Path, sample_path: Path, backend: FeatureBackend, allow_blank_samples: bool = False,
    reference_cache: dict | None = None,
) -> tuple[SampleFeatures, ReferenceFeatures, tuple, tuple, dict]:
    """Run the feature network once: (sample features, reference side, sample FID stats, sample sFID stats, facts).

    `reference_cache` (a dict the caller keeps for one backend) holds the reference's activations by path, so the
    rows of one table extract their shared reference once."""
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
        cache = {} if reference_cache is None else reference_cache
        if str(ref_path) not in cache:
            cache[str(ref_path)] = compute_activations(ref, backend, "reference")
        ref_pool, ref_spatial = cache[str(ref_path)]
        facts = {"num_ref_images": len(ref), "num_samples": len(sample), "resolution": list(sample.shape[1:3])}

    sample_stats, sample_stats_spatial, facts["sample_statistics"] = batch_statistics(
        sample_path, sample_pool, sample_spatial, "sample"
    )
    ref_stats, ref_stats_spatial, facts["ref_statistics"] = batch_statistics(
        ref_path, ref_pool, ref_spatial, "reference"
    )
    sample_features = SampleFeatures(sample_pool, sample_spatial, class_probabilities(backend, sample_pool))
    reference = ReferenceFeatures(*ref_stats, *ref_stats_spatial, ref_pool)
    return sample_features, reference, sample_stats, sample_stats_spatial, facts


def bootstrap_intervals(
    sample: SampleFeatures, reference: ReferenceFeatures, sample_statistics: str, coverage: metrics.Coverage,
    settings: BootstrapSettings, device: str | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """The evaluator's `bootstrap` record (settings, each metric's interval and what it cost) and each metric's
    resampled values."""
    record = settings.as_dict()
    if not settings.resamples:
        return record, {}
    start = time.perf_counter()
    frechet = sample_statistics == "computed"
    if not frechet:
        record["note"] = "the sample batch stores its own statistics: FID and sFID have no interval"
    _note(f"bootstrap: {settings.resamples} resamples of the sample batch (reference fixed)...")
    resampler = MetricResampler(sample, reference, frechet, device, coverage)
    values = bootstrap.resampled_values(resampler, settings)
    record["intervals"] = bootstrap.intervals_of(values, settings.level)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record, values


def evaluate(
    ref_path: Path, sample_path: Path, backend: FeatureBackend, allow_blank_samples: bool = False,
    settings: BootstrapSettings | None = None, features_path: Path | None = None, reference_cache: dict | None = None,
) -> dict:
    """The five ADM metrics, their bootstrap intervals and provenance (counts, statistics source, backend, versions).

    `settings` default to BootstrapSettings(); `features_path` keeps the extracted features
    (evaluations/feature_store.py) for paired differences; `reference_cache` see extract.
    """
    settings = settings or BootstrapSettings()
    sample, reference, sample_stats, sample_stats_spatial, facts = extract(
        ref_path, sample_path, backend, allow_blank_samples, reference_cache
    )
    _note("computing evaluations...")
    coverage = metrics.manifold_coverage(reference.pool, sample.pool)
    device = getattr(backend, "device", None)  # the resampled FIDs run where the features were computed
    record, resampled = bootstrap_intervals(sample, reference, facts["sample_statistics"], coverage, settings,
                                            str(device) if device else None)
    if features_path is not None:
        save_features(features_path, sample, reference, facts["sample_statistics"], coverage,
                      Resampled(settings.resamples, settings.seed, resampled) if resampled else None)
    versions = {"numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__}
    if backend.name == "tf":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    return {
        "inception_score": metrics.inception_score(sample.probs),
        "fid": metrics.frechet_distance(*sample_stats, reference.mu, reference.sigma),
        "sfid": metrics.frechet_distance(*sample_stats_spatial, reference.mu_s, reference.sigma_s),
        "precision": coverage.precision,
        "recall": coverage.recall,
        "bootstrap": record,
        "ref": str(ref_path),
        "sample": str(sample_path),
        **facts,
        "backend": backend.name,
        "feature_space": backend.feature_space,
        "features_sha256": backend.graph_sha256,
        "versions": versions,
    }


def format_results(results: dict) -> str:
    """The five lines ADM's evaluator prints, in its order and number formatting."""
    return "\n".join(f"{label}: {results[key]}" for key, label in _PRINTED)


def format_intervals(results: dict) -> str:
    """One line per metric with an interval; none starts like ADM's lines, so parsers of those are unaffected."""
    record = results.get("bootstrap") or {}
    level = round(100 * record.get("level", 0), 1)
    return "\n".join(
        f"{label} {level:g}% interval: [{low}, {high}] ({record['resamples']} resamples, seed {record['seed']})"
        for key, label in _PRINTED
        if key in record.get("intervals", {})
        for low, high in [record["intervals"][key]]
    )


def write_json(path: str | Path | ObjectPath, results: dict) -> None:
    """Write results through a temporary file and a rename (in a store: one upload), so a crash never leaves a
    truncated file."""
    path = location(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m evaluations.evaluator", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "ref_batch", help="reference batch .npz (e.g. VIRTUAL_imagenet256_labeled.npz); a path or an s3://, gs://, "
        "az:// URL, as are the sample batch, --json and --save-features"
    )
    parser.add_argument("sample_batch", help="sample batch .npz: arr_0 = uint8 NHWC images")
    parser.add_argument(
        "--backend",
        choices=["torch", "tf", "digits"],
        default="torch",
        help="default: torch (Inception, no TensorFlow); digits: the demo's own feature space, not Inception",
    )
    parser.add_argument("--feature-net", type=local_path,
                        help="digits backend: feature network file (default: the demo's)")
    parser.add_argument("--json", help="also write the results and their provenance to this file")
    parser.add_argument("--graph", type=local_path, help="Inception graph to use instead of the official download")
    parser.add_argument(
        "--cache-dir", type=local_path, help="graph cache (default: $PAG_ADM_CACHE or ~/.cache/pag-adm)"
    )
    parser.add_argument("--device", help="torch backend device (default: cuda when available)")
    parser.add_argument(
        "--allow-blank-samples", action="store_true", help="accept sample images whose pixels are all equal"
    )
    parser.add_argument("--bootstrap", type=int, default=bootstrap.DEFAULT_RESAMPLES, metavar="N",
                        help=f"bootstrap resamples for the intervals (default {bootstrap.DEFAULT_RESAMPLES}; 0: none)")
    parser.add_argument("--bootstrap-seed", type=int, default=bootstrap.DEFAULT_SEED, help="seed of the resamples")
    parser.add_argument("--confidence", type=float, default=bootstrap.DEFAULT_LEVEL,
                        help=f"interval confidence level (default {bootstrap.DEFAULT_LEVEL})")
    parser.add_argument("--print-intervals", action="store_true",
                        help="print each metric's interval after ADM's five lines")
    parser.add_argument("--save-features", help="keep the extracted features in this .npz")
    args = parser.parse_args(argv)
    try:
        args.ref_batch, args.sample_batch = location(args.ref_batch), location(args.sample_batch)
        args.json = location(args.json) if args.json else None
        args.save_features = location(args.save_features) if args.save_features else None
        if isinstance(args.json, ObjectPath):  # a missing bucket or credentials fail now, not after the metrics
            args.json.mkdir()
        settings = BootstrapSettings(args.bootstrap, args.bootstrap_seed, args.confidence)
        # Fail on a malformed file before spending minutes on the network.
        with NpzImages(args.ref_batch) as ref, NpzImages(args.sample_batch) as sample:
            check_batches(ref, sample)
        backend = load_backend(args.backend, args.graph, args.cache_dir, args.device, args.feature_net)
        if args.backend == "digits":
            _note(f"feature space: {backend.feature_space}")
        results = evaluate(args.ref_batch, args.sample_batch, backend, args.allow_blank_samples, settings,
                           args.save_features)
    except (ValueError, OSError, NotImplementedError, ImportError) as e:
        sys.exit(f"error: {e}")
    print(format_results(results))
    if args.print_intervals and args.bootstrap:
        print(format_intervals(results))
    if args.json is not None:
        try:
            write_json(args.json, results)
        except OSError as e:
            sys.exit(f"error: cannot write {args.json}: {e}")


if __name__ == "__main__":
    main()
