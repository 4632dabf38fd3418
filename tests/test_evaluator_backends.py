"""The torch and tf backends on the stand-in Inception graph: final metrics, end to end and on a small batch.

The end-to-end test is slow on CPU (features of 2,240 images per backend and four 2048x2048 matrix square
roots), so it is marked `slow`; the small-batch test is its fast companion. The sample batch holds 2,112
images so that its 2048-d covariance has full rank (FID then takes SciPy's real square-root path, as with
50K real samples); the reference batch stores whole-dataset statistics and a few images for precision/recall,
like ADM's VIRTUAL_*.npz files.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json

import numpy as np
import pytest

from evaluations import evaluator
from evaluations.backends import load_backend
from evaluations.metrics import feature_statistics, frechet_distance, inception_score, precision_recall
from evaluations.npz_io import NpzImages
from evaluations.standin import standin_inception_graph

N_SAMPLES = 2112
METRICS = ("inception_score", "fid", "sfid", "precision", "recall")
LABELS = ("Inception Score", "FID", "sFID", "Precision", "Recall")


def _images(rng: np.random.Generator, n: int, brightness: float) -> np.ndarray:
    coarse = rng.normal(brightness, 45, (n, 4, 4, 3)).repeat(8, 1).repeat(8, 2)
    return np.clip(coarse + rng.normal(0, 25, (n, 32, 32, 3)), 0, 255).astype(np.uint8)


def _stored_statistics(rng: np.random.Generator, dim: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    factor = rng.normal(0, scale / np.sqrt(dim), (dim, dim))
    return rng.uniform(0.5, 1.5, dim), factor @ factor.T + 0.01 * np.eye(dim)


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    directory = tmp_path_factory.mktemp("evaluator_e2e")
    rng = np.random.default_rng(0)
    graph = directory / "classify_image_graph_def.pb"
    graph.write_bytes(standin_inception_graph(seed=2))
    mu, sigma = _stored_statistics(rng, 2048, 0.8)
    mu_s, sigma_s = _stored_statistics(rng, 17 * 17 * 7, 1.0)
    np.savez(
        directory / "ref.npz", arr_0=_images(rng, 128, 128), mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s
    )
    np.savez(directory / "sample.npz", arr_0=_images(rng, N_SAMPLES, 140))
    return directory


def _run(directory, backend: str) -> tuple[str, str, dict]:
    out, err = io.StringIO(), io.StringIO()
    argv = [str(directory / "ref.npz"), str(directory / "sample.npz"), "--backend", backend]
    argv += ["--graph", str(directory / "classify_image_graph_def.pb"), "--cache-dir", str(directory)]
    # no bootstrap: this test compares the backends' five metrics; 100 resamples of 2048-d features cost minutes
    argv += ["--device", "cpu", "--json", str(directory / f"{backend}.json"), "--bootstrap", "0"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        evaluator.main(argv)
    return out.getvalue(), err.getvalue(), json.loads((directory / f"{backend}.json").read_text())


def _report(capsys, title: str, torch_values: dict, tf_values: dict) -> dict:
    diffs = {key: abs(torch_values[key] - tf_values[key]) for key in torch_values}
    with capsys.disabled():
        print(f"\n[{title}] metric |torch - tf|:")
        for key in torch_values:
            values = f"torch {torch_values[key]!r:24} tf {tf_values[key]!r:24}"
            print(f"  {key:16s} {values} diff {diffs[key]:.3e}")
    return diffs


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs the eval extra")
def test_backends_agree_on_metrics_of_a_small_batch(batches, capsys):
    """IS and precision/recall on full features; FID/sFID restricted to 128 feature dimensions (full-rank
    covariances from 192 samples keep the square roots cheap)."""
    graph = batches / "classify_image_graph_def.pb"
    with NpzImages(batches / "sample.npz") as sample, NpzImages(batches / "ref.npz") as ref:
        sample_images, ref_images = next(sample.batches(192)), next(ref.batches(128))
    metrics = {}
    for kind in ("torch", "tf"):
        backend = load_backend(kind, graph, batches, device="cpu" if kind == "torch" else None)
        feats = [
            backend.features(images[i : i + 64])
            for images in (sample_images, ref_images)
            for i in range(0, len(images), 64)
        ]
        sample_pool, sample_spatial = (np.concatenate([f[j] for f in feats[:3]]) for j in (0, 1))
        ref_pool, ref_spatial = (np.concatenate([f[j] for f in feats[3:]]) for j in (0, 1))
        precision, recall = precision_recall(ref_pool, sample_pool)
        metrics[kind] = {
            "inception_score": inception_score(backend.softmax(sample_pool)),
            "fid[:128]": frechet_distance(
                *feature_statistics(sample_pool[:, :128]), *feature_statistics(ref_pool[:, :128])
            ),
            "sfid[:128]": frechet_distance(
                *feature_statistics(sample_spatial[:, :128]), *feature_statistics(ref_spatial[:, :128])
            ),
            "precision": precision,
            "recall": recall,
        }
    diffs = _report(capsys, "stand-in graph, 192 samples, 128 references", metrics["torch"], metrics["tf"])
    assert diffs["inception_score"] <= 1e-5 * metrics["tf"]["inception_score"]
    assert diffs["fid[:128]"] <= 1e-4 and diffs["sfid[:128]"] <= 1e-4
    assert diffs["precision"] <= 2 / 192 and diffs["recall"] <= 2 / 128


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs the eval extra")
def test_tf_and_torch_backends_agree_on_final_metrics(batches, capsys):
    torch_stdout, torch_stderr, torch_results = _run(batches, "torch")
    tf_stdout, _, tf_results = _run(batches, "tf")
    for stdout, results in ((torch_stdout, torch_results), (tf_stdout, tf_results)):
        lines = stdout.strip().splitlines()
        assert [line.split(": ")[0] for line in lines] == list(LABELS)
        assert [float(line.split(": ")[1]) for line in lines] == [results[key] for key in METRICS]
    assert torch_results["ref_statistics"] == "stored" and torch_results["sample_statistics"] == "computed"
    assert "using the statistics stored in" in torch_stderr
    diffs = _report(
        capsys,
        "stand-in graph, evaluator CLI, 2112 samples",
        {key: torch_results[key] for key in METRICS},
        {key: tf_results[key] for key in METRICS},
    )
    assert diffs["inception_score"] <= 1e-5 * tf_results["inception_score"]
    assert diffs["fid"] <= 1e-3 and diffs["sfid"] <= 1e-3
    # A feature difference of ~1e-7 relative can move a point across a float16-rounded ball radius.
    assert diffs["precision"] <= 3 / N_SAMPLES and diffs["recall"] <= 3 / 128
