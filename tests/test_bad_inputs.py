"""Bad input files through the real entry points: one sentence naming the file, the problem and the fix, a non-zero
exit status, no traceback, and every file left as it was."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _good(path: Path) -> None:
    np.savez(path, arr_0=np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))


def _truncated(path: Path) -> None:
    _good(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _array(**arrays: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.savez(path, **arrays)


def _manifest(path: Path) -> None:
    (path / "shards").mkdir(parents=True)
    (path / "manifest.json").write_text("{not json")


EVALUATOR = [PY, "-m", "evaluations.evaluator", "{ref}", "{bad}", "--backend", "digits"]
CASES = {
    # name: (file name, how to make it, command, exit status, words the one line must hold)
    "sample batch not a zip": ("s.npz", _bytes(b"garbage"), EVALUATOR, 1, ["is not an .npz archive", "np.savez"]),
    "sample batch truncated": ("s.npz", _truncated, EVALUATOR, 1, ["is not an .npz archive or is truncated"]),
    "sample batch missing": ("s.npz", None, EVALUATOR, 1, ["s.npz does not exist; check the path"]),
    "sample batch is a folder": ("s.npz", Path.mkdir, EVALUATOR, 1, ["s.npz is a directory"]),
    "sample batch without arr_0": ("s.npz", _array(x=np.zeros(3)), EVALUATOR, 1, ["no 'arr_0' array (keys: ['x'])"]),
    "sample batch of wrong shape": ("s.npz", _array(arr_0=np.zeros((4, 8, 8), np.uint8)), EVALUATOR, 1,
                                    ["has shape (4, 8, 8); expected (N, H, W, 3)"]),
    "reference batch not a zip": ("r.npz", _bytes(b"PK\x03\x04broken"), [PY, "-m", "evaluations.evaluator", "{bad}",
                                  "{ref}", "--backend", "digits"], 1, ["r.npz is not an .npz archive"]),
    "feature network not a torch file": ("f.pt", _bytes(b"junk"), [*EVALUATOR[:4], "{ref}", "--backend", "digits",
                                         "--feature-net", "{bad}"], 1, ["f.pt is not a torch file", "make train-demo"]),
    "checkpoint truncated": ("256x256_diffusion_uncond.pt", _bytes(b"junk"),
                             [PY, "scripts/sample.py", "+exp=adm256_uncond_pag", "out_dir={tmp}/out",
                              "paths.checkpoints={tmp}"], 1, ["is truncated or corrupt", "checkpoints download"]),
    "run manifest not json": ("run", _manifest, [PY, "scripts/merge.py", "{bad}"], 1,
                              ["manifest.json cannot be read", "restore it, or move it away"]),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_file(tmp_path, name):
    filename, make, command, status, words = CASES[name]
    ref, bad = tmp_path / "ref.npz", tmp_path / filename
    _good(ref)
    if make is not None:
        make(bad)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    argv = [a.format(ref=ref, bad=bad, tmp=tmp_path) for a in command]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert str(bad) in lines[0] and all(word in lines[0] for word in words), lines[0]
    assert {p: p.read_bytes() for p in before} == before  # nothing that existed was changed


def test_golden_fixture_that_is_not_a_torch_file(tmp_path):
    fixture = tmp_path / "f.pt"
    fixture.write_bytes(b"junk")
    fixture.with_suffix(".json").write_text("{}")
    result = subprocess.run([PY, "-m", "golden", str(fixture)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert f"{fixture}: cannot be read (" in output and "again from the golden set" in output


def test_reference_batch_from_a_folder_with_a_broken_image(tmp_path):
    from PIL import Image

    from evaluations.refs import build_reference_batch

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"b.png cannot be read .*; replace the file or remove it from the folder"):
        build_reference_batch(folder, tmp_path / "ref.npz", backend=None, resolution=8)
    assert not (tmp_path / "ref.npz").exists()


@pytest.mark.parametrize("command", [
    [PY, "-m", "guided_diffusion.checkpoints", "download", "64x64_diffusion", "--dir", "s3://bucket/models"],
    [PY, "-m", "evaluations.refs", "download", "imagenet64", "--dir", "gs://bucket/refs"],
    [PY, str(ROOT / "scripts" / "reproduce_dps.py"), "--plan", "--out-root", "az://container/runs"],
])
def test_local_only_options_refuse_urls_before_writing(command, tmp_path):
    """Options that take local paths refuse an object-store URL with a sentence, and create no folder named 's3:'."""
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is an object-store URL, and this option takes a local path" in result.stderr
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []
