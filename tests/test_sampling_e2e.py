"""End to end on the CPU `smoke` experiment: launchers, batch sizes, kill and resume, extension, PNG, sweeps.

The byte-identity checks compare merged npz files byte for byte. They can fail: the smoke images are far from
saturated (checked below), and `test_batch_composition_changes_bytes` shows that computing the same samples in a
different batch does change bytes on this machine, which is what the fixed micro-batches prevent.
"""

from __future__ import annotations

import io
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from guided_diffusion.factory import build_network
from sampling.config import compose_config
from sampling.dist import RankInfo
from sampling.models import random_init
from sampling.runner import run
from sampling.shards import list_shards, read_shard

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "scripts" / "sample.py"
MERGED = "samples_8x32x32x3.npz"
LAUNCHER_PREFIXES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_", "PMI_", "PMIX_", "MPI_LOCAL", "SLURM_", "HYDI_")


def smoke(out_dir: Path, *overrides: str) -> list[str]:
    return ["+exp=smoke", f"out_dir={out_dir}", "progress=false", *overrides]


def sample_in_process(out_dir: Path, *overrides: str) -> Path:
    return run(compose_config(smoke(out_dir, *overrides)), RankInfo(0, 1, 0, "single"), poll_s=0.05)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}


def launcher(name: str) -> list[str]:
    if name == "mpiexec":
        found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
        if found is None:
            pytest.fail("mpiexec not found: install the test extras (pip install -e '.[test]' brings mpich)")
        return [found, "-n", "2", sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0"]


def cli(args: list[str], prefix: list[str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or [sys.executable]), str(SAMPLE), *args], env=clean_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def hidden_files(out_dir: Path) -> list[Path]:
    return [p for p in out_dir.rglob(".*") if p.is_file()]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> bytes:
    """The smoke run in one process: 8 samples, 2 shards of 4."""
    threads = torch.get_num_threads()
    path = sample_in_process(tmp_path_factory.mktemp("reference"))
    torch.set_num_threads(threads)
    with np.load(path) as npz:
        images, labels = npz["arr_0"], npz["arr_1"]
    assert images.shape == (8, 32, 32, 3) and labels.shape == (8,)
    assert ((images > 0) & (images < 255)).mean() > 0.2, "smoke images saturated: byte comparisons would be weak"
    assert len(set(labels.tolist())) > 2 and len({images[i].tobytes() for i in range(8)}) == 8
    return path.read_bytes()


@pytest.mark.parametrize(("name", "batch_size"), [("mpiexec", 2), ("torchrun", 6)])
def test_two_ranks_match_one_process(reference, tmp_path, name, batch_size):
    out = tmp_path / name
    result = cli(smoke(out, f"batch_size={batch_size}"), prefix=launcher(name))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / MERGED).read_bytes() == reference
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["rank0.log", "rank1.log"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["world_size"] for r in manifest["runs"]] == [2]
    assert manifest["runs"][0]["command"][-1] == f"batch_size={batch_size}"
    assert {s["start"] for s in manifest["merged"][0]["shards"]} == set(range(0, 8, batch_size))
    assert not hidden_files(out)


def test_batch_composition_changes_bytes(reference, tmp_path):
    """Why micro_batch is fixed and hashed: the same samples computed 4 at a time differ from 2 at a time."""
    other = sample_in_process(tmp_path, "micro_batch=4").read_bytes()
    if other == reference:
        pytest.skip("this CPU computes batch-size independent floats; the micro-batch guarantee is not needed here")
    assert other != reference


def test_sigkill_and_restart_finishes_identically(tmp_path):
    slow = ["sampler.timestep_respacing=ddim12", "batch_size=2"]
    expected = sample_in_process(tmp_path / "expected", "sampler.timestep_respacing=ddim12", "batch_size=8")
    out = tmp_path / "killed"
    args = [sys.executable, str(SAMPLE), *smoke(out, *slow)]
    proc = subprocess.Popen(args, env=clean_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while len(list_shards(out / "shards")) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = list_shards(out / "shards")
    assert 1 <= len(done) < 4 and not (out / MERGED).exists()
    # what a kill during a write leaves behind
    (out / "shards" / ".0000006-0000008.npz.tmp").write_bytes(b"partial")

    result = cli(smoke(out, *slow))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / MERGED).read_bytes() == expected.read_bytes()
    assert not hidden_files(out) and not (out / "shards" / "corrupt").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    for ref in list_shards(out / "shards"):
        read_shard(ref, manifest["config_hash"], (32, 32, 3))
    assert len(manifest["runs"]) == 2


def test_corrupt_shards_are_moved_aside_and_recomputed(reference, tmp_path):
    sample_in_process(tmp_path, "batch_size=2")
    shards = list_shards(tmp_path / "shards")
    shards[1].path.write_bytes(shards[1].path.read_bytes()[:500])
    shards[2].path.write_bytes(b"garbage")
    (tmp_path / MERGED).unlink()
    sample_in_process(tmp_path, "batch_size=2")
    assert (tmp_path / MERGED).read_bytes() == reference
    assert len(list((tmp_path / "shards" / "corrupt").iterdir())) == 2
    assert not hidden_files(tmp_path)


def test_extending_a_run_reuses_its_shards(reference, tmp_path):
    small = sample_in_process(tmp_path, "num_samples=3", "batch_size=2")
    first = {ref.path.name: ref.path.stat().st_mtime_ns for ref in list_shards(tmp_path / "shards")}
    assert sorted(first) == ["0000000-0000002.npz", "0000002-0000003.npz"]
    big = sample_in_process(tmp_path, "num_samples=8", "batch_size=4")
    assert big.read_bytes() == reference
    now = {ref.path.name: ref.path.stat().st_mtime_ns for ref in list_shards(tmp_path / "shards")}
    assert {k: now[k] for k in first} == first  # finished shards were reused, not rewritten
    assert sorted(now) == ["0000000-0000002.npz", "0000002-0000003.npz", "0000003-0000004.npz",
                           "0000004-0000008.npz"]
    with np.load(small) as few, np.load(big) as many:
        assert np.array_equal(few["arr_0"], many["arr_0"][:3])


def test_merge_script_merges_again(reference, tmp_path, monkeypatch, capsys):
    merged = sample_in_process(tmp_path, "batch_size=2")
    merged.unlink()

    def merge(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["merge.py", *args])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(ROOT / "scripts" / "merge.py"), run_name="__main__")
        return exit_info.value.code

    assert merge(str(tmp_path)) == 0 and capsys.readouterr().out.strip() == str(merged)
    assert merged.read_bytes() == reference
    assert merge(str(tmp_path), "--num-samples", "5") == 0
    with np.load(tmp_path / "samples_5x32x32x3.npz") as npz, np.load(io.BytesIO(reference)) as full:
        assert np.array_equal(npz["arr_0"], full["arr_0"][:5])
    assert merge(str(tmp_path), "--num-samples", "9") == 1
    assert "covers 8 of 9 samples (first missing index 8)" in capsys.readouterr().err
    assert merge(str(tmp_path / "nowhere")) == 1
    assert "has no manifest.json" in capsys.readouterr().err


def test_png_export_and_balanced_labels(tmp_path):
    path = sample_in_process(tmp_path, "num_samples=10", "batch_size=2", "labels.protocol=balanced", "save_png=true")
    with np.load(path) as npz:
        labels = npz["arr_1"]
    assert labels.tolist() == list(range(10))
    names = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert names == [f"{i:07d}_class{i:03d}.png" for i in range(10)]


def test_hydra_multirun_gives_one_run_directory_per_job(tmp_path):
    result = cli(["-m", *smoke(tmp_path, "num_samples=2", "batch_size=2"), "guidance.scale=0,3"])
    assert result.returncode == 0, result.stderr[-3000:]
    merged = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("samples_*.npz"))
    assert merged == ["guidance.scale=0/samples_2x32x32x3.npz", "guidance.scale=3/samples_2x32x32x3.npz"]
    with np.load(tmp_path / merged[0]) as plain, np.load(tmp_path / merged[1]) as guided:
        assert not np.array_equal(plain["arr_0"], guided["arr_0"])
        assert np.array_equal(plain["arr_1"], guided["arr_1"])


def test_classifier_guidance_keeps_samples_per_index(reference, tmp_path):
    """cond_fn gets each sample's own label; the result still does not depend on the batch size."""
    spec = {"kind": "classifier", "image_size": 32, "in_channels": 3, "model_channels": 32, "out_channels": 1000,
            "num_res_blocks": 1, "attention_resolutions": [4], "dropout": 0.0, "channel_mult": [1, 2],
            "conv_resample": True, "dims": 2, "use_fp16": False, "num_heads": 1, "num_head_channels": 16,
            "num_heads_upsample": -1, "use_scale_shift_norm": True, "resblock_updown": True,
            "use_new_attention_order": False, "pool": "attention", "activation": "silu"}
    (tmp_path / "models").mkdir()
    torch.save(random_init(build_network(spec), 1).state_dict(), tmp_path / "models" / "tiny_classifier.pt")
    classifier = {"name": "tiny", "scale": 10.0, "use_fp16": False,
                  "model": {"name": "tiny_classifier", "checkpoint": "tiny_classifier", "network": spec}}

    def sample(out: str, batch_size: int) -> Path:
        conf = compose_config(smoke(tmp_path / out, "num_samples=4", f"batch_size={batch_size}",
                                    f"paths.checkpoints={tmp_path / 'models'}"))
        conf["classifier"] = classifier
        return run(conf, RankInfo(0, 1, 0, "single"), poll_s=0.05)

    guided = sample("a", 4)
    assert sample("b", 2).read_bytes() == guided.read_bytes()
    with np.load(guided) as npz, np.load(io.BytesIO(reference)) as plain:
        assert np.array_equal(npz["arr_1"], plain["arr_1"][:4])
        assert not np.array_equal(npz["arr_0"], plain["arr_0"][:4])
