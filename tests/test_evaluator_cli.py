"""The evaluator CLI, npz streaming and validation, downloads and reference batches, with a cheap fake backend
(the Inception stand-in is exercised in test_evaluator_graph.py and test_evaluator_backends.py)."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from evaluations import evaluator, inception, refs
from evaluations.bootstrap import BootstrapSettings
from evaluations.feature_store import is_current, load_features
from evaluations.metrics import feature_statistics, frechet_distance, inception_score, precision_recall
from evaluations.npz_io import NpzImages, save_npz_atomic
from evaluations.standin import standin_inception_graph
from guided_diffusion.fileio import download


class FakeBackend:
    """Hand-made 12-d "pool" and 48-d "spatial" features: enough for every metric, instant to compute."""

    name = "fake"
    graph_sha256 = "0" * 64
    feature_space = "hand-made test features"

    def __init__(self):
        self.weights = np.random.default_rng(0).normal(0, 3, (12, 5)).astype(np.float32)

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = images.astype(np.float32) / 255
        pool = np.concatenate([x.mean((1, 2)), x.std((1, 2)), x[:, 0, :2].reshape(len(x), -1)], 1)
        return pool, x[:, :4, :4].reshape(len(x), -1)

    def softmax(self, pool: np.ndarray) -> np.ndarray:
        logits = pool @ self.weights
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def _images(seed: int, n: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def fake_backend(monkeypatch):
    backend = FakeBackend()
    monkeypatch.setattr(evaluator, "load_backend", lambda *args, **kwargs: backend)
    return backend


@pytest.fixture
def batches(tmp_path):
    ref_images, sample_images = _images(0, 30), _images(1, 70)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(12, 12)), rng.normal(size=(48, 48))
    stats = {"mu": rng.normal(size=12), "sigma": a @ a.T, "mu_s": rng.normal(size=48), "sigma_s": b @ b.T}
    np.savez(tmp_path / "ref.npz", arr_0=ref_images, **stats)
    np.savez(tmp_path / "sample.npz", arr_0=sample_images, arr_1=np.arange(70))
    return tmp_path, ref_images, sample_images, stats


def _main(capsys, *argv: str) -> tuple[str, str]:
    evaluator.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_main_prints_adm_lines_from_stored_reference_statistics(batches, fake_backend, capsys):
    directory, ref_images, sample_images, stats = batches
    out, err = _main(capsys, directory / "ref.npz", directory / "sample.npz", "--json", directory / "r.json")
    sample_pool, sample_spatial = fake_backend.features(sample_images)
    ref_pool, _ = fake_backend.features(ref_images)
    precision, recall = precision_recall(ref_pool, sample_pool)
    expected = [
        ("Inception Score", inception_score(fake_backend.softmax(sample_pool))),
        ("FID", frechet_distance(*feature_statistics(sample_pool), stats["mu"], stats["sigma"])),
        ("sFID", frechet_distance(*feature_statistics(sample_spatial), stats["mu_s"], stats["sigma_s"])),
        ("Precision", precision),
        ("Recall", recall),
    ]
    assert out == "".join(f"{label}: {value}\n" for label, value in expected)
    results = json.loads((directory / "r.json").read_text())
    assert [results[k] for k in ("inception_score", "fid", "sfid", "precision", "recall")] == [
        v for _, v in expected
    ]
    assert results["ref_statistics"] == "stored" and results["sample_statistics"] == "computed"
    assert results["num_samples"] == 70 and results["resolution"] == [8, 8]
    assert "using the statistics stored in" in err and "biased upward" in err


def test_sample_statistics_are_read_when_stored_and_computed_for_a_plain_reference(tmp_path, fake_backend):
    ref_images = _images(3, 25)
    np.savez(tmp_path / "ref.npz", arr_0=ref_images)
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(12, 12)), rng.normal(size=(48, 48))
    stats = {"mu": rng.normal(size=12), "sigma": a @ a.T, "mu_s": rng.normal(size=48), "sigma_s": b @ b.T}
    np.savez(tmp_path / "sample.npz", arr_0=_images(5, 20), **stats)
    results = evaluator.evaluate(tmp_path / "ref.npz", tmp_path / "sample.npz", fake_backend)
    assert results["ref_statistics"] == "computed" and results["sample_statistics"] == "stored"
    ref_pool, _ = fake_backend.features(ref_images)
    assert results["fid"] == frechet_distance(stats["mu"], stats["sigma"], *feature_statistics(ref_pool))


def test_intervals_are_recorded_and_printed_after_the_five_lines_only_when_asked(batches, fake_backend, capsys):
    directory = batches[0]
    ref, sample = directory / "ref.npz", directory / "sample.npz"
    plain, _ = _main(capsys, ref, sample, "--bootstrap", "40", "--json", directory / "a.json")
    out, _ = _main(capsys, ref, sample, "--bootstrap", "40", "--bootstrap-seed", "3", "--confidence", "0.9",
                   "--print-intervals", "--save-features", directory / "f.npz", "--json", directory / "b.json")
    assert out.splitlines()[:5] == plain.splitlines() and len(plain.splitlines()) == 5
    assert [line.split(" 90% interval")[0] for line in out.splitlines()[5:]] == [
        "Inception Score", "FID", "sFID", "Precision", "Recall"]
    first, second = (json.loads((directory / name).read_text())["bootstrap"] for name in ("a.json", "b.json"))
    assert (first["resamples"], first["seed"], first["level"], first["method"]) == (40, 0, 0.95, "percentile")
    assert second["seed"] == 3 and first["intervals"] != second["intervals"]
    results = json.loads((directory / "b.json").read_text())
    for key, (low, high) in second["intervals"].items():
        assert low <= high and f"[{low}, {high}]" in out, key
    sample_features, reference, source, coverage = load_features(directory / "f.npz")
    assert is_current(directory / "f.npz")
    assert source == "computed" and len(sample_features) == results["num_samples"] == 70
    assert (coverage.precision, coverage.recall) == (results["precision"], results["recall"])
    _main(capsys, ref, sample, "--bootstrap", "0", "--json", directory / "c.json")
    assert json.loads((directory / "c.json").read_text())["bootstrap"] == {
        "resamples": 0, "seed": 0, "level": 0.95, "method": "percentile"}


def test_a_sample_batch_with_stored_statistics_gets_no_fid_interval(tmp_path, fake_backend):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(12, 12)), rng.normal(size=(48, 48))
    stats = {"mu": rng.normal(size=12), "sigma": a @ a.T, "mu_s": rng.normal(size=48), "sigma_s": b @ b.T}
    np.savez(tmp_path / "ref.npz", arr_0=_images(3, 25))
    np.savez(tmp_path / "sample.npz", arr_0=_images(5, 20), **stats)
    record = evaluator.evaluate(tmp_path / "ref.npz", tmp_path / "sample.npz", fake_backend,
                                settings=BootstrapSettings(resamples=10))["bootstrap"]
    assert set(record["intervals"]) == {"inception_score", "precision", "recall"}
    assert "stores its own statistics" in record["note"]


@pytest.mark.parametrize(
    "sample, message",
    [
        (_images(1, 10).astype(np.float32) / 127.5 - 1, r"dtype float32 \(values in \[-1, 1\]"),
        (np.full((10, 8, 8, 3), np.nan, np.float32), "no finite values, with NaNs"),
        (_images(1, 10).transpose(0, 3, 1, 2).copy(), "channels first"),
        (_images(1, 10, size=16), "resolution 16x16 does not match reference"),
        (_images(1, 10)[..., 0], r"expected \(N, H, W, 3\)"),
        (_images(1, 10).astype(np.int64), "dtype int64"),
    ],
)
def test_malformed_samples_are_refused_before_any_network_runs(tmp_path, monkeypatch, sample, message):
    monkeypatch.setattr(evaluator, "load_backend", pytest.fail)
    np.savez(tmp_path / "ref.npz", arr_0=_images(0, 10))
    np.savez(tmp_path / "sample.npz", arr_0=sample)
    with pytest.raises(SystemExit) as exit_info:
        evaluator.main([str(tmp_path / "ref.npz"), str(tmp_path / "sample.npz")])
    assert exit_info.value.code.startswith("error: sample")
    assert re.search(message, exit_info.value.code), exit_info.value.code


def test_a_batch_without_arr_0_is_refused(tmp_path):
    np.savez(tmp_path / "x.npz", images=_images(0, 3))
    with pytest.raises(ValueError, match=r"no 'arr_0' array \(keys: \['images'\]\)"):
        NpzImages(tmp_path / "x.npz")


def test_blank_samples_are_refused_unless_allowed(tmp_path, fake_backend, capsys):
    sample = _images(1, 100)
    sample[77] = 0  # what NaN becomes after the uint8 cast
    np.savez(tmp_path / "ref.npz", arr_0=_images(0, 10))
    np.savez(tmp_path / "sample.npz", arr_0=sample)
    argv = [tmp_path / "ref.npz", tmp_path / "sample.npz"]
    with pytest.raises(SystemExit, match="image 77 has every pixel equal to 0"):
        _main(capsys, *argv)
    out, _ = _main(capsys, *argv, "--allow-blank-samples")
    assert out.startswith("Inception Score: ")


@pytest.mark.parametrize("saver", [np.savez, np.savez_compressed])
def test_npz_images_stream_in_batches(tmp_path, saver):
    images = _images(0, 150, size=5)
    saver(tmp_path / "x.npz", arr_0=images)
    fortran = np.asfortranarray(images)
    saver(tmp_path / "f.npz", arr_0=fortran)
    for name in ("x.npz", "f.npz"):
        with NpzImages(tmp_path / name) as reader:
            assert (len(reader), reader.shape, reader.dtype) == (150, (150, 5, 5, 3), np.uint8)
            chunks = list(reader.batches(64))
        assert [len(c) for c in chunks] == [64, 64, 22]
        np.testing.assert_array_equal(np.concatenate(chunks), images)
        assert all(c.flags.writeable for c in chunks)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    save_npz_atomic(tmp_path / "sub" / "a.npz", arr_0=np.zeros(3))
    evaluator.write_json(tmp_path / "r.json", {"fid": 1.0})
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.npz", "r.json"]


def test_download_checks_sha256_and_size(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"reference batch bytes")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    url = source.as_uri()
    assert download(url, tmp_path / "out" / "ok.bin", digest, 21) == digest
    assert (tmp_path / "out" / "ok.bin").read_bytes() == source.read_bytes()
    with pytest.raises(ValueError, match="sha256"):
        download(url, tmp_path / "out" / "bad.bin", "0" * 64)
    with pytest.raises(ValueError, match="expected 5"):
        download(url, tmp_path / "out" / "short.bin", size=5)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bad.bin.mismatch", "ok.bin", "short.bin.mismatch"]


def test_refs_download_pins_unknown_checksums_on_first_download(tmp_path, monkeypatch):
    server = tmp_path / "server" / "lsun" / "cat"
    server.mkdir(parents=True)
    (server / "VIRTUAL_lsun_cat256.npz").write_bytes(b"first")
    monkeypatch.setattr(refs, "URL_PREFIX", (tmp_path / "server").as_uri() + "/")
    local = tmp_path / "ref_batches"
    path = refs.fetch("lsun_cat", local)
    digest = hashlib.sha256(b"first").hexdigest()
    assert (local / "SHA256SUMS").read_text() == f"{digest}  VIRTUAL_lsun_cat256.npz\n"
    assert refs.verify_batch("lsun_cat", local) == "sha256 matches SHA256SUMS (first download)"
    path.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="differs from"):
        refs.fetch("lsun_cat", local)


def test_refs_registry_covers_adm_reference_batches():
    assert set(refs.REFERENCE_BATCHES) == {
        "imagenet64",
        "imagenet128",
        "imagenet256",
        "imagenet512",
        "lsun_bedroom",
        "lsun_cat",
        "lsun_horse",
    }
    for batch in refs.ALL_BATCHES.values():
        assert batch.url.startswith(
            "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/"
        )
        assert str(batch.resolution) in batch.path or "lsun" in batch.path


def test_build_reference_batch_from_npz(tmp_path):
    images = _images(6, 130)
    np.savez(tmp_path / "data.npz", arr_0=images)
    backend = FakeBackend()
    summary = refs.build_reference_batch(tmp_path / "data.npz", tmp_path / "ref.npz", backend, max_images=50)
    assert summary["images"] == 130 and summary["stored_images"] == 50
    pool, spatial = (f.astype(np.float64) for f in backend.features(images))  # statistics in float64
    with np.load(tmp_path / "ref.npz") as ref:
        for key, (mu, sigma) in {"": feature_statistics(pool), "_s": feature_statistics(spatial)}.items():
            np.testing.assert_allclose(ref["mu" + key], mu, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(ref["sigma" + key], sigma, rtol=1e-10, atol=1e-12)
        kept = ref["arr_0"]
    assert kept.shape == (50, 8, 8, 3) and kept.dtype == np.uint8
    rows = [int(np.flatnonzero((images == k).all(axis=(1, 2, 3)))[0]) for k in kept]
    assert rows == sorted(rows) and len(set(rows)) == 50  # a subset, in dataset order


def test_build_reference_batch_from_a_folder_uses_adm_center_crop(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    folder = tmp_path / "images" / "nested"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(5):
        pixels = rng.integers(0, 256, (30 + i, 50, 3), dtype=np.uint8)
        image_module.fromarray(pixels).save(folder / f"{i}.png")
    out = tmp_path / "ref.npz"
    summary = refs.build_reference_batch(tmp_path / "images", out, FakeBackend(), resolution=8)
    assert summary["images"] == 5
    with np.load(tmp_path / "ref.npz") as ref:
        assert ref["arr_0"].shape == (5, 8, 8, 3)
        first = refs.center_crop_arr(image_module.open(folder / "0.png").convert("RGB"), 8)
        np.testing.assert_array_equal(ref["arr_0"][0], first)


def test_center_crop_halves_with_box_filter_then_crops_the_center():
    image_module = pytest.importorskip("PIL.Image")
    # 64 wide, 32 high, target 8: two BOX halvings (-> 16 x 8), no rescale, then the middle 8 columns.
    columns = np.repeat(np.arange(64, dtype=np.uint8)[None, :, None] * 4, 32, 0).repeat(3, 2)
    out = refs.center_crop_arr(image_module.fromarray(columns), 8)
    assert out.shape == (8, 8, 3)
    # each output column is the BOX average of 4 source columns, from source columns 16..47
    expected = columns[0, 16:48, 0].reshape(8, 4).mean(1)
    np.testing.assert_allclose(out[0, :, 0], expected, atol=1)


def test_official_graph_is_checksummed(tmp_path):
    (tmp_path / inception.GRAPH_FILENAME).write_bytes(b"not the graph")
    with pytest.raises(ValueError, match="expected 95673916"):
        inception.official_graph(tmp_path)


def test_inception_convert_command(tmp_path, capsys):
    graph = tmp_path / "g.pb"
    graph.write_bytes(standin_inception_graph(seed=3))
    inception.main(["convert", "--graph", str(graph), "--cache-dir", str(tmp_path)])
    assert "converted:" in capsys.readouterr().out
    assert len(list(tmp_path.glob("inception-torch-*.pt"))) == 1


def test_a_features_file_that_is_not_one_is_refused_in_one_sentence(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    (tmp_path / "text.npz").write_text("not an archive")
    for name in ("other.npz", "text.npz", "missing.npz"):
        with pytest.raises(ValueError, match=r"re-evaluate the row \(delete its metrics.json"):
            load_features(tmp_path / name)
        assert not is_current(tmp_path / name)  # so the reproduction driver evaluates such a row again
