"""Bootstrap intervals for the ADM metrics, re-scored from features already extracted (docs/statistics.md).

A resample draws the sample batch's indices with replacement from a seeded generator; the reference batch (its
statistics, images and k-NN balls) is held fixed. Paired differences draw the same indices in both rows, which is
right because rows of a table share seeds: sample i of every row comes from the same noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.special import xlogy

from evaluations import metrics

# Resamples of the sample batch. At 50K x 2048 one resample costs ~160 s on 2 busy CPU cores (bench/bench_bootstrap.py,
# measured at 10K and extrapolated: FID and sFID are almost all of it), so 100 resamples add hours on a CPU, about
# what the feature extraction of 50K images costs there; small tables (the demo) can afford 1000 (docs/statistics.md).
DEFAULT_RESAMPLES = 100
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95  # confidence level of the two-sided percentile interval
SMALL_WORK = 10**8  # multiply-adds per resample below which resampling runs on one CPU thread
METRIC_KEYS = ("inception_score", "fid", "sfid", "precision", "recall")  # the evaluator's JSON keys


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = DEFAULT_RESAMPLES  # 0 disables intervals
    seed: int = DEFAULT_SEED
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        if self.resamples < 0:
            raise ValueError(f"bootstrap resamples must be >= 0 (0 disables), got {self.resamples}")
        if not 0 < self.level < 1:
            raise ValueError(f"confidence level must lie strictly between 0 and 1, got {self.level}")

    def as_dict(self) -> dict:
        return {**asdict(self), "method": "percentile"}


@dataclass(frozen=True)
class SampleFeatures:
    """What the metrics need of a sample batch: pool features, spatial features, class probabilities."""

    pool: np.ndarray
    spatial: np.ndarray
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.pool)


@dataclass(frozen=True)
class ReferenceFeatures:
    """The fixed side: FID and sFID statistics (stored or computed) and the pool features of its images."""

    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray
    sigma_s: np.ndarray
    pool: np.ndarray


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's index draws: a pure function of (n, seed), so equal-sized rows draw the same indices."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, n, n)


def _symmetric_sqrt(sigma: np.ndarray) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(torch.from_numpy(np.asarray(sigma, dtype=np.float64)))
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


class FrechetResampler:
    """Frechet distance of a resample's mean and covariance to fixed reference statistics.

    The resample is never materialised: its statistics are count-weighted sums over the distinct drawn rows,
    X^T diag(w) X, and tr sqrtm(S R) is the sum of the square roots of the eigenvalues of R^1/2 S R^1/2, with R^1/2
    computed once. With every count 1 this is ADM's FID up to rounding (float64 throughout).
    """

    def __init__(self, features: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray, device: str = "cpu"):
        x = torch.from_numpy(np.asarray(features, dtype=np.float64)).to(device)
        self.mean = x.mean(0)
        self.centred = x - self.mean  # centred once, so the weighted covariance does not cancel digits
        self.ref_mu = torch.from_numpy(np.asarray(mu_ref, dtype=np.float64)).to(device)
        self.ref_trace = float(np.trace(sigma_ref))
        self.ref_root = _symmetric_sqrt(sigma_ref).to(device)

    def __call__(self, counts: np.ndarray) -> float:
        n = int(counts.sum())
        drawn = np.flatnonzero(counts)
        x = self.centred[torch.from_numpy(drawn).to(self.centred.device)]
        w = torch.from_numpy(counts[drawn].astype(np.float64)).to(x.device)
        shift = (w @ x) / n
        sigma = (x.T @ (w[:, None] * x) - n * torch.outer(shift, shift)) / (n - 1)
        diff = self.mean + shift - self.ref_mu
        product = self.ref_root @ sigma @ self.ref_root
        root_trace = torch.linalg.eigvalsh(product).clamp_min(0).sqrt().sum()
        return float(diff @ diff + torch.trace(sigma) + self.ref_trace - 2 * root_trace)


class InceptionScoreResampler:
    """ADM's Inception Score of a resample, its splits being consecutive runs of the drawn indices.

    Per split, IS = exp(H(mean p) - mean H(p)), so each sample's entropy is computed once.
    """

    def __init__(self, probs: np.ndarray, split_size: int = 5000):
        self.probs = np.asarray(probs, dtype=np.float64)
        self.neg_entropy = xlogy(self.probs, self.probs).sum(1)
        self.split_size = split_size

    def __call__(self, indices: np.ndarray) -> float:
        scores = []
        for start in range(0, len(indices), self.split_size):
            part = indices[start : start + self.split_size]
            marginal = self.probs[part].mean(0)
            scores.append(np.exp(self.neg_entropy[part].mean() - xlogy(marginal, marginal).sum()))
        return float(np.mean(scores))


def coverage_precision_recall(coverage: metrics.Coverage, counts: np.ndarray) -> tuple[float, float]:
    """Precision and recall of a resample from the full batch's ball memberships.

    The reference balls are fixed, so precision counts each drawn copy of a covered sample. Recall treats the
    resample as the set of distinct samples drawn: sample j's radius is the distance to its k-th nearest drawn
    sample (j itself is neighbour 0), so a duplicate neither adds a ball nor shrinks one to zero (docs/statistics.md).
    """
    precision = float(counts @ coverage.sample_covered) / int(counts.sum())
    present = counts > 0
    drawn_before = np.zeros((len(counts), coverage.neighbours.shape[1] + 1), dtype=np.int64)
    np.cumsum(present[coverage.neighbours], 1, out=drawn_before[:, 1:])
    j = np.maximum(coverage.candidates, 0)
    nearer = np.minimum(coverage.nearer, drawn_before.shape[1] - 1)
    covers = (coverage.candidates >= 0) & present[j] & (drawn_before[j, nearer] <= coverage.k)
    return precision, float(covers.any(1).mean())


class MetricResampler:
    """All five metrics of one sample batch against a fixed reference, for any resample of its indices."""

    def __init__(self, sample: SampleFeatures, reference: ReferenceFeatures, frechet: bool = True,
                 device: str | None = None, coverage: metrics.Coverage | None = None):
        """`device` runs the FID resamples (default: cuda when available); `coverage` reuses memberships already
        computed for this sample and reference (metrics.manifold_coverage)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.n = len(sample)
        self.work = self.n * (sample.pool.shape[1] ** 2 + sample.spatial.shape[1] ** 2)  # multiply-adds of the FIDs
        # FID needs the sample's own features; a sample batch that stores its statistics has none to resample
        self.fid = FrechetResampler(sample.pool, reference.mu, reference.sigma, device) if frechet else None
        self.sfid = FrechetResampler(sample.spatial, reference.mu_s, reference.sigma_s, device) if frechet else None
        self.inception = InceptionScoreResampler(sample.probs)
        self.coverage = coverage or metrics.manifold_coverage(reference.pool, sample.pool)

    def __call__(self, indices: np.ndarray) -> dict[str, float]:
        counts = np.bincount(indices, minlength=self.n)
        precision, recall = coverage_precision_recall(self.coverage, counts)
        values = {"inception_score": self.inception(indices), "precision": precision, "recall": recall}
        if self.fid is not None:
            values.update(fid=self.fid(counts), sfid=self.sfid(counts))
        return values


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@contextmanager
def _threads_for(resamplers: list[MetricResampler]) -> Iterator[None]:
    """One CPU thread for small features: each resample is a few tiny calls, and handing those to a thread pool
    costs more than it saves (on a busy 2-core machine, ~85 ms per 96 x 128 product against microseconds)."""
    saved = torch.get_num_threads()
    if all(r.work < SMALL_WORK for r in resamplers):
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _resampled(resamplers: list[MetricResampler], settings: BootstrapSettings) -> list[dict[str, np.ndarray]]:
    """Each resampler's metric values over the same index draws, as arrays per metric."""
    n = resamplers[0].n
    with _threads_for(resamplers):
        draws = [[r(indices) for r in resamplers] for indices in resample_indices(n, settings.resamples, settings.seed)]
    return [{key: np.array([d[i][key] for d in draws]) for key in draws[0][i]} for i in range(len(resamplers))]


def resampled_values(resampler: MetricResampler, settings: BootstrapSettings) -> dict[str, np.ndarray]:
    """Each metric's value on every index draw of `settings` (kept with the features: paired differences reuse
    them, since equal-sized rows draw the same indices)."""
    (values,) = _resampled([resampler], settings)
    return values


def intervals_of(values: dict[str, np.ndarray], level: float) -> dict[str, list[float]]:
    """Percentile interval of each metric from its resampled values, keyed like the evaluator's JSON."""
    return {key: list(percentile_interval(v, level)) for key, v in values.items()}


def intervals(resampler: MetricResampler, settings: BootstrapSettings) -> dict[str, list[float]]:
    """Percentile interval of each metric, keyed like the evaluator's JSON."""
    return intervals_of(resampled_values(resampler, settings), settings.level)


def paired_differences(row: MetricResampler, baseline: MetricResampler, points: dict[str, tuple[float, float]],
                       settings: BootstrapSettings) -> dict[str, dict]:
    """Row minus baseline per metric, with a paired percentile interval (the same indices drawn in both rows).

    `points` holds each metric's (row, baseline) point estimates; the difference reported is theirs, the interval
    the resampled differences'. `excludes_zero` marks intervals that lie entirely on one side of 0.
    """
    if row.n != baseline.n:
        raise ValueError(f"paired rows need equal sample counts, got {row.n} and {baseline.n}")
    values, base_values = _resampled([row, baseline], settings)
    return differences_of(values, base_values, points, settings.level)


def differences_of(values: dict[str, np.ndarray], base_values: dict[str, np.ndarray],
                   points: dict[str, tuple[float, float]], level: float) -> dict[str, dict]:
    """paired_differences from both rows' values on the same index draws."""
    out = {}
    for key in values.keys() & base_values.keys():
        low, high = percentile_interval(values[key] - base_values[key], level)
        out[key] = {"difference": points[key][0] - points[key][1], "interval": [low, high],
                    "excludes_zero": bool(low > 0 or high < 0)}
    return out
