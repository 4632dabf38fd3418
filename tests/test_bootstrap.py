"""Bootstrap intervals and paired differences (evaluations/bootstrap.py) on synthetic Gaussian features."""

from __future__ import annotations

import numpy as np
import pytest

from evaluations import bootstrap, metrics
from evaluations.bootstrap import BootstrapSettings, MetricResampler, ReferenceFeatures, SampleFeatures

DIM, CLASSES = 8, 5
WEIGHTS = np.random.default_rng(99).normal(0, 2, (DIM, CLASSES))


def _probs(pool: np.ndarray) -> np.ndarray:
    logits = pool @ WEIGHTS
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _sample(noise: np.ndarray, shift: float = 0.0) -> SampleFeatures:
    """Features of a 'row' made from per-sample noise: rows built from the same noise are paired like table rows.

    `shift` moves the pool features; the spatial ones always sit 0.4 off the reference, so that sFID is well above
    its finite-sample bias (near FID 0, resamples' FIDs lie above the point estimate: docs/statistics.md).
    """
    pool = (noise[:, :DIM] + shift).astype(np.float32)
    return SampleFeatures(pool, (noise[:, DIM:] + 0.4).astype(np.float32), _probs(pool))


def _reference(n: int = 600, seed: int = 1) -> ReferenceFeatures:
    x = np.random.default_rng(seed).normal(size=(n, 2 * DIM)).astype(np.float32)
    mu, sigma = metrics.feature_statistics(x[:, :DIM])
    mu_s, sigma_s = metrics.feature_statistics(x[:, DIM:])
    return ReferenceFeatures(mu, sigma, mu_s, sigma_s, x[:, :DIM])


def _noise(n: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2 * DIM))


def _points(sample: SampleFeatures, reference: ReferenceFeatures) -> dict[str, float]:
    precision, recall = metrics.precision_recall(reference.pool, sample.pool)
    return {
        "fid": metrics.frechet_distance(*metrics.feature_statistics(sample.pool), reference.mu, reference.sigma),
        "sfid": metrics.frechet_distance(*metrics.feature_statistics(sample.spatial), reference.mu_s,
                                         reference.sigma_s),
        "inception_score": metrics.inception_score(sample.probs),
        "precision": precision,
        "recall": recall,
    }


def test_a_resample_of_every_index_once_is_the_point_estimate():
    reference, sample = _reference(), _sample(_noise(300), 0.3)
    values = MetricResampler(sample, reference)(np.arange(300))
    points = _points(sample, reference)
    for key in ("fid", "sfid", "inception_score"):
        assert values[key] == pytest.approx(points[key], rel=1e-5)
    assert (values["precision"], values["recall"]) == (points["precision"], points["recall"])


def test_resampled_metrics_equal_the_estimators_on_the_materialised_resample():
    # FID: the weighted covariance is np.cov of the drawn rows. Precision: each drawn copy counts (reference balls
    # fixed). Recall: ADM's estimator on the distinct samples drawn (duplicates neither add nor shrink a ball).
    reference, sample = _reference(), _sample(_noise(120), 0.5)
    resampler = MetricResampler(sample, reference)
    for indices in bootstrap.resample_indices(120, 5, seed=3):
        values = resampler(indices)
        drawn = _sample(np.concatenate([sample.pool, sample.spatial], 1)[indices])
        distinct = np.unique(indices)
        assert values["fid"] == pytest.approx(_points(drawn, reference)["fid"], rel=1e-6)
        assert values["inception_score"] == pytest.approx(metrics.inception_score(sample.probs[indices]), rel=1e-5)
        assert values["precision"] == metrics.precision_recall(reference.pool, sample.pool[indices])[0]
        assert values["recall"] == metrics.precision_recall(reference.pool, sample.pool[distinct])[1]


def test_recall_stays_exact_when_neighbour_lists_are_shorter_than_the_batch(monkeypatch):
    # exact unless at most k - 1 = 2 of a sample's 20 nearest others are drawn: probability ~1e-6 per sample
    monkeypatch.setattr(metrics, "NEIGHBOURS", 20)
    reference, sample = _reference(200), _sample(_noise(150), 0.2)
    coverage = metrics.manifold_coverage(reference.pool, sample.pool)
    assert coverage.neighbours.shape == (150, 21)
    assert (coverage.precision, coverage.recall) == metrics.precision_recall(reference.pool, sample.pool)
    for indices in bootstrap.resample_indices(150, 5, seed=4):
        counts = np.bincount(indices, minlength=150)
        recall = bootstrap.coverage_precision_recall(coverage, counts)[1]
        assert recall == metrics.precision_recall(reference.pool, sample.pool[np.unique(indices)])[1]


def test_intervals_contain_the_point_estimate_and_are_reproducible_for_a_seed():
    reference, sample = _reference(), _sample(_noise(400), 0.4)
    resampler = MetricResampler(sample, reference)
    settings = BootstrapSettings(resamples=100, seed=7)
    first = bootstrap.intervals(resampler, settings)
    assert first == bootstrap.intervals(resampler, settings)
    assert first != bootstrap.intervals(resampler, BootstrapSettings(resamples=100, seed=8))
    for key, point in _points(sample, reference).items():
        low, high = first[key]
        assert low < point < high, key


def test_intervals_shrink_with_more_samples():
    reference = _reference(1000)
    settings = BootstrapSettings(resamples=60, seed=0)
    small = bootstrap.intervals(MetricResampler(_sample(_noise(200), 0.4), reference), settings)
    large = bootstrap.intervals(MetricResampler(_sample(_noise(1600), 0.4), reference), settings)
    for key in bootstrap.METRIC_KEYS:
        width_small, width_large = np.diff(small[key])[0], np.diff(large[key])[0]
        assert width_large < 0.6 * width_small, key  # ~ 1/sqrt(8) = 0.35 expected


def test_paired_difference_of_a_row_with_itself_is_exactly_zero():
    reference, sample = _reference(), _sample(_noise(200), 0.3)
    points = {key: (value, value) for key, value in _points(sample, reference).items()}
    row, baseline = MetricResampler(sample, reference), MetricResampler(sample, reference)
    paired = bootstrap.paired_differences(row, baseline, points, BootstrapSettings(resamples=30))
    assert set(paired) == set(bootstrap.METRIC_KEYS)
    for entry in paired.values():
        assert entry["difference"] == 0.0 and entry["interval"] == [0.0, 0.0] and not entry["excludes_zero"]


def test_paired_bootstrap_detects_a_known_shift_that_separate_intervals_cannot_separate():
    # The row is the baseline's samples moved by 0.1 along every pool feature: FID rises by about
    # 8 x 0.1^2 = 0.08, less than either row's own interval is wide, yet every pair moves the same way.
    reference, noise = _reference(), _noise(400)
    base, shifted = _sample(noise, 0.0), _sample(noise, 0.1)
    base_points, row_points = _points(base, reference), _points(shifted, reference)
    points = {key: (row_points[key], base_points[key]) for key in base_points}
    settings = BootstrapSettings(resamples=100, seed=1)
    row, baseline = MetricResampler(shifted, reference), MetricResampler(base, reference)
    paired = bootstrap.paired_differences(row, baseline, points, settings)
    assert paired["fid"]["excludes_zero"] and paired["fid"]["interval"][0] > 0
    assert paired["fid"]["difference"] == pytest.approx(row_points["fid"] - base_points["fid"])
    assert not paired["sfid"]["excludes_zero"] and paired["sfid"]["interval"] == [0.0, 0.0]  # spatial unchanged
    base_interval, row_interval = (bootstrap.intervals(r, settings)["fid"] for r in (baseline, row))
    assert row_interval[0] < base_interval[1]  # the unpaired intervals overlap


def test_paired_rows_need_equal_sample_counts():
    reference = _reference()
    with pytest.raises(ValueError, match="equal sample counts"):
        bootstrap.paired_differences(MetricResampler(_sample(_noise(100)), reference),
                                     MetricResampler(_sample(_noise(120)), reference), {}, BootstrapSettings())


def test_settings_are_validated():
    with pytest.raises(ValueError, match="resamples"):
        BootstrapSettings(resamples=-1)
    with pytest.raises(ValueError, match="confidence level"):
        BootstrapSettings(level=1.0)
