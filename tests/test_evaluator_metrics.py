"""The metric functions against hand-computed values, identities and a literal transcription of ADM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluations.metrics import feature_statistics, frechet_distance, inception_score, precision_recall


def test_fid_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16))
    mu, sigma = feature_statistics(x)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_fid_one_dimensional_by_hand():
    # (0 - 1)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 2
    assert frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([1.0]), np.array([[4.0]])) == 2.0


def test_fid_diagonal_by_hand():
    mu1, mu2 = np.array([1.0, 2.0]), np.array([0.0, 0.0])
    s1, s2 = np.diag([1.0, 9.0]), np.diag([4.0, 1.0])
    # |mu|^2 = 5; traces 10 + 5; sqrt(diag(4, 9)) has trace 5
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5 + 10 + 5 - 2 * 5, abs=1e-12)


def test_fid_retries_with_1e6_on_the_diagonal():
    # sigma1 @ sigma2 is nilpotent, so its square root is not finite; with 1e-6 added it is
    # (1 + eps) [[eps, 1], [0, eps]], whose square root has trace 2 sqrt(eps (1 + eps)).
    s1, s2, mu = np.array([[0.0, 1.0], [0.0, 0.0]]), np.eye(2), np.zeros(2)
    with pytest.warns(RuntimeWarning, match="1e-06"):
        value = frechet_distance(mu, s1, mu, s2)
    assert value == pytest.approx(2 - 4 * math.sqrt(1e-6 * (1 + 1e-6)), abs=1e-9)


def test_fid_refuses_a_large_imaginary_component():
    # sqrtm(diag(-1, 1)) = diag(i, 1): imaginary diagonal 1 > 1e-3
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]))


def test_fid_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="different shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_feature_statistics_match_numpy_and_are_float64():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    # ADM: np.mean over float32 activations, np.cov (float64) for the covariance.
    np.testing.assert_array_equal(mu, np.mean(x, axis=0).astype(np.float64))
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(x) - 1), rtol=1e-12, atol=1e-12)


def test_inception_score_of_uniform_predictions_is_one():
    probs = np.full((12, 10), 0.1, dtype=np.float32)
    assert inception_score(probs) == pytest.approx(1.0, abs=1e-6)


def test_inception_score_by_hand():
    probs = np.array([[0.9, 0.1], [0.1, 0.9]], dtype=np.float64)
    # marginal (0.5, 0.5): each KL = 0.9 ln 1.8 + 0.1 ln 0.2
    expected = math.exp(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    assert inception_score(probs) == pytest.approx(expected, rel=1e-12)


def test_inception_score_splits_are_contiguous_with_a_partial_last_split():
    # split_size 2 over 5 rows: [0, 1], [2, 3], [4]. Rows 0-1 and 2-3 are the pair above; the lone last row
    # has KL 0 (score 1). A shuffled or split-dropping rule would give a different mean.
    pair = [[0.9, 0.1], [0.1, 0.9]]
    probs = np.array(pair + pair + [[0.7, 0.3]])
    pair_score = math.exp(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    assert inception_score(probs, split_size=2) == pytest.approx((2 * pair_score + 1) / 3, rel=1e-12)


def test_inception_score_stays_in_float32_like_adm():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(64, 20)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    kl = probs * (np.log(probs) - np.log(np.mean(probs, 0, keepdims=True)))
    expected = float(np.exp(np.mean(np.sum(kl, 1))))  # float32 throughout, as in ADM
    assert inception_score(probs) == expected
    assert expected != inception_score(probs.astype(np.float64))


def test_precision_recall_identical_sets_are_one():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 32)).astype(np.float32)
    assert precision_recall(x, x) == (1.0, 1.0)


def test_precision_recall_by_hand():
    # 1-D features, k = 1: each radius is the squared distance to the nearest other point.
    ref = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)  # radii 1, 1, 4
    sample = np.array([[0.5], [4.0], [10.0], [10.5]], dtype=np.float32)  # radii 12.25, 12.25, 0.25, 0.25
    # precision: 0.5 (0.25 <= 1 from ref 0) and 4.0 (1 <= 4 from ref 3) are inside; 10 and 10.5 are not.
    # recall: ref 0, 1 and 3 lie within 12.25 of sample 0.5 (0.25, 0.25, 6.25).
    assert precision_recall(ref, sample, k=1) == (0.5, 1.0)


def test_precision_recall_radius_counts_self_as_neighbour_zero():
    # k = 2. Ref 20's sorted squared distances are (0 self, 289, 361, 400): ADM's radius is index 2 = 361, the
    # 2nd nearest other point; a rule that skipped self would give 400.
    ref = np.array([[0.0], [1.0], [3.0], [20.0]], dtype=np.float32)
    inside = np.array([[38.9], [100.0], [101.0]], dtype=np.float32)  # 18.9^2 = 357.2 <= 361
    outside = np.array([[39.5], [100.0], [101.0]], dtype=np.float32)  # 19.5^2 = 380.3: within 400, not 361
    assert precision_recall(ref, inside, k=2)[0] == pytest.approx(1 / 3)
    assert precision_recall(ref, outside, k=2)[0] == 0.0


def _round16(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float64).astype(np.float16).astype(np.float64)


def _adm_distances(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """ADM's block distances, literally: float16 operands, float16 results, float32 if any is not finite."""
    u16, v16 = _round16(u), _round16(v)
    nu = _round16(_round16(u16 * u16).sum(1))
    nv = _round16(_round16(v16 * v16).sum(1))
    with np.errstate(over="ignore", invalid="ignore"):
        d = _round16(_round16(nu[:, None] - 2 * _round16(u16 @ v16.T)) + nv[None, :])
    d = np.maximum(d, 0)
    if np.isfinite(d).all():
        return d
    u32, v32 = u.astype(np.float32), v.astype(np.float32)
    n32u, n32v = (u32 * u32).sum(1), (v32 * v32).sum(1)
    return np.maximum(n32u[:, None] - 2 * (u32 @ v32.T) + n32v[None, :], 0).astype(np.float64)


def _naive_precision_recall(ref: np.ndarray, sample: np.ndarray, k: int, block: int) -> tuple[float, float]:
    """ADM's ManifoldEstimator transcribed with whole matrices (block-wise float16/float32 decisions kept)."""

    def distances(a, b):
        out = np.empty((len(a), len(b)))
        for i in range(0, len(a), block):
            for j in range(0, len(b), block):
                out[i : i + block, j : j + block] = _adm_distances(a[i : i + block], b[j : j + block])
        return out

    ref_radii = np.partition(distances(ref, ref), k, axis=1)[:, k]
    sample_radii = np.partition(distances(sample, sample), k, axis=1)[:, k]
    cross = distances(ref, sample)
    precision = (cross <= ref_radii[:, None]).any(0).mean()
    recall = (cross <= sample_radii[None, :]).any(1).mean()
    return float(precision), float(recall)


@pytest.mark.parametrize("block,tile_rows", [(10000, 2048), (64, 16), (50, 7)])
def test_precision_recall_matches_a_literal_transcription(block, tile_rows):
    rng = np.random.default_rng(4)
    ref = np.abs(rng.normal(0.4, 0.5, size=(230, 64))).astype(np.float32)
    sample = np.abs(rng.normal(0.45, 0.5, size=(170, 64))).astype(np.float32)
    expected = _naive_precision_recall(ref, sample, 3, block)
    got = precision_recall(ref, sample, row_batch_size=block, col_batch_size=block, tile_rows=tile_rows)
    assert got == expected
    assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0


def test_precision_recall_uses_float16_distances():
    # Features at the scale of Inception's pool_3 (squared norms in the hundreds), where float16 rounding of
    # distances (spacing 0.25-0.5) flips some ball memberships: the result must follow the float16 rule.
    rng = np.random.default_rng(5)
    ref = np.abs(rng.normal(0.3, 0.45, size=(400, 2048))).astype(np.float32)
    sample = np.abs(rng.normal(0.3, 0.45, size=(400, 2048))).astype(np.float32)
    expected16 = _naive_precision_recall(ref, sample, 3, 10000)
    assert precision_recall(ref, sample) == expected16

    def exact(a, b):
        a, b = a.astype(np.float64), b.astype(np.float64)
        return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0)

    ref_r = np.partition(exact(ref, ref), 3, axis=1)[:, 3]
    sample_r = np.partition(exact(sample, sample), 3, axis=1)[:, 3]
    cross = exact(ref, sample)
    exact_pr = (
        float((cross <= ref_r[:, None]).any(0).mean()),
        float((cross <= sample_r[None, :]).any(1).mean()),
    )
    print(f"precision/recall float16 {expected16} vs exact {exact_pr}")
    assert exact_pr != expected16


def test_precision_recall_falls_back_to_float32_per_block():
    # Norms above 65504 overflow float16, so those blocks (only those) are computed in float32.
    rng = np.random.default_rng(6)
    ref = rng.normal(0, 1, size=(60, 16)).astype(np.float32)
    ref[:20] *= 100.0  # squared norms ~1.6e5: not finite in float16
    sample = rng.normal(0, 1, size=(50, 16)).astype(np.float32)
    sample[:10] *= 100.0
    for block in (10000, 20):
        expected = _naive_precision_recall(ref, sample, 3, block)
        assert expected != (1.0, 1.0)  # what infinite float16 radii would give
        assert precision_recall(ref, sample, row_batch_size=block, col_batch_size=block) == expected


def test_precision_recall_needs_more_than_k_points():
    x = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(x, x)
