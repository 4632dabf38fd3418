"""Bad input as a new user produces it: each error is one sentence saying what is wrong and what to do, and no
finished shard is touched."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sampling import manifest as mf
from sampling import shards
from sampling.config import compose_config
from sampling.dist import RankInfo
from sampling.errors import ConfigError, SamplingError
from sampling.runner import Run, run
from sampling.shards import list_shards

ROOT = Path(__file__).resolve().parents[1]
SINGLE = RankInfo(0, 1, 0, "single")


def smoke(out_dir: Path, *overrides: str) -> dict:
    return compose_config(["+exp=smoke", f"out_dir={out_dir}", "progress=false", *overrides])


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "PMI_", "OMPI_", "SLURM_"))}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sample.py"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240, check=False)


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.parent.name != "logs"}


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def finished(tmp_path) -> Path:
    """A finished smoke run of 4 samples in 2 shards."""
    out = tmp_path / "run"
    run(smoke(out, "num_samples=4", "batch_size=2"), SINGLE, poll_s=0.05)
    return out


# ------------------------------------------------------------------------------------------------ inputs
def test_missing_checkpoints_say_how_to_download(tmp_path):
    models = tmp_path / "models"
    conf = compose_config(["+exp=adm128_cond_sag_cg", f"out_dir={tmp_path / 'out'}", f"paths.checkpoints={models}"])
    with pytest.raises(SamplingError, match=rf"download 128x128_diffusion --dir {models}`"):
        run(conf, SINGLE)
    models.mkdir()
    (models / "128x128_diffusion.pt").write_bytes(b"")
    with pytest.raises(SamplingError, match=r"checkpoints download 128x128_classifier .*or `make checkpoints`"):
        run(conf, SINGLE)
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_on_the_command_line_is_one_line(tmp_path):
    result = cli("+exp=adm256_uncond_pag", f"out_dir={tmp_path / 'out'}", f"paths.checkpoints={tmp_path}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error (rank 0): checkpoint {tmp_path}/256x256_diffusion_uncond.pt not found; download it with "
        f"`python -m guided_diffusion.checkpoints download 256x256_diffusion_uncond --dir {tmp_path}` (or `make "
        f"checkpoints`), or set paths.checkpoints=DIR to the folder that holds 256x256_diffusion_uncond.pt"
    ]


def test_unknown_or_missing_experiment_lists_the_available_ones():
    unknown = cli("+exp=adm256_pag")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: exp=adm256_pag is not an option of configs/exp/; choose one of ")
    assert " adm256_uncond_pag," in unknown.stderr
    missing = cli("num_samples=10")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: choose an experiment with +exp=NAME; available: adm128_cond_baseline,")
    assert "smoke" in missing.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["micro_batch=3"], r"batch_size \(4, samples per shard\) must be a multiple of micro_batch \(3"),
        (["num_samples=0"], "num_samples = 0 is not valid; allowed: an integer >= 1"),
        (["sampler=ddpm250", "sampler.eta=0.5"], "only applies to DDIM"),
        (["labels.protocol=balanced", "num_samples=15"], "num_samples must be a multiple of 10, got 15"),
        (["labels.num_classes=1000"], "model is conditional on 10 classes; set labels.num_classes=10"),
        (["classifier=adm256"], "classifier=adm256 judges 256x256 images but the model makes 32x32"),
        (["guidance.layers=[input_blocks.4.1]"], r"unknown attention layer.*valid names: input_blocks.3.1"),
        (["guidance=sag", "~guidance.layers", "guidance.layer=output_blocks.9.1"], "unknown attention layer"),
        (["guidance=sag"], r"guidance=sag does not use guidance.layers .*remove it with ~guidance.layers"),
    ],
)
def test_conflicting_overrides(tmp_path, overrides, message):
    with pytest.raises(SamplingError, match=message):
        run(smoke(tmp_path, *overrides), SINGLE)
    assert not (tmp_path / mf.MANIFEST).exists() and not list_shards(tmp_path / "shards")


def test_classifier_as_diffusion_model_and_unknown_keys(tmp_path):
    conf = compose_config(["+exp=adm256_uncond_pag", "model=256x256_classifier", f"out_dir={tmp_path}"])
    with pytest.raises(SamplingError, match="is a classifier network; the sampler needs a diffusion U-Net"):
        run(conf, SINGLE)
    with pytest.raises(ConfigError, match=r"unknown config key guidance.scal in 'guidance.scal=2'"):
        smoke(tmp_path, "guidance.scal=2")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_gpu(tmp_path):
    with pytest.raises(SamplingError, match="no CUDA device is visible"):
        run(smoke(tmp_path, "device=cuda"), SINGLE)


# ------------------------------------------------------------------------------------------------ resume
def test_resume_with_changed_guidance_is_refused(finished):
    before = snapshot(finished)
    result = cli("+exp=smoke", f"out_dir={finished}", "num_samples=4", "batch_size=2", "guidance.scale=1.0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error (rank 0): {finished} holds samples of another configuration (guidance.scale: 3 -> 1); resume with "
        "the original settings, or pass a new out_dir=... for the new ones (finished shards are kept)"
    ]
    with pytest.raises(SamplingError, match="guidance.name: pag -> none"):
        run(smoke(finished, "num_samples=6", "guidance=none", "~guidance.layers", "~guidance.scale"), SINGLE)
    assert snapshot(finished) == before


def test_manifest_of_a_launch_that_finished_nothing_is_replaced(tmp_path):
    other = smoke(tmp_path, "seed=5")
    mf.write_manifest(tmp_path, mf.new_manifest(other, mf.config_hash(other)))
    path = run(smoke(tmp_path, "num_samples=2", "batch_size=2"), SINGLE, poll_s=0.05)
    assert path.is_file() and mf.read_manifest(tmp_path)["seed"] == 0


# ------------------------------------------------------------------------------------------------ disks
def test_full_disk_keeps_finished_shards_and_leaves_no_partial_file(finished, monkeypatch):
    before = snapshot(finished / "shards")
    real_savez = np.savez

    def savez_until_full(fh, **arrays):
        fh.write(b"PK\x03\x04 half a shard")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.np, "savez", savez_until_full)
    with pytest.raises(SamplingError, match=r"cannot write shards in .* \(No space left on device\); free disk space "
                                            r"or choose another out_dir=...; finished shards are kept"):
        run(smoke(finished, "num_samples=6", "batch_size=2"), SINGLE)
    assert snapshot(finished / "shards") == before
    assert not [p for p in finished.rglob(".*") if p.is_file()]
    monkeypatch.setattr(shards.np, "savez", real_savez)
    run(smoke(finished, "num_samples=6", "batch_size=2"), SINGLE, poll_s=0.05)
    assert {k: v for k, v in snapshot(finished / "shards").items() if k in before} == before
    assert len(list_shards(finished / "shards")) == 3


def test_read_only_output_directory(finished, monkeypatch):
    before = snapshot(finished)

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(shards.os, "replace", read_only)
    with pytest.raises(SamplingError, match=r"cannot write manifest.json in .* \(Read-only file system\); the file "
                                            r"system is read-only: choose another out_dir"):
        run(smoke(finished, "num_samples=6", "batch_size=2"), SINGLE)
    assert snapshot(finished) == before
    assert not [p for p in finished.rglob(".*") if p.is_file()]


def test_unwritable_output_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SamplingError, match=r"cannot write the run directory in .*file/out \(Not a directory\)"):
        run(smoke(blocker / "out"), SINGLE)


# ------------------------------------------------------------------------------------------------ ranks
def test_rank_zero_stops_waiting_when_another_rank_failed(tmp_path):
    job = Run(smoke(tmp_path, "wait_timeout_s=60"), RankInfo(0, 2, 0, "test"), poll_s=0.01)
    job.prepare()
    job.layout.error_marker(1).write_text("SamplingError: cannot write shards in /x (Disk quota exceeded)\n")
    with pytest.raises(SamplingError, match=r"rank 1: SamplingError: cannot write shards .*run the same command"):
        job.wait_for_shards(None)


def test_rank_zero_times_out_when_shards_stop_coming(tmp_path):
    job = Run(smoke(tmp_path, "wait_timeout_s=0.2"), RankInfo(0, 2, 0, "test"), poll_s=0.01)
    job.prepare()
    with pytest.raises(SamplingError, match=r"no new shard for 0 s .*indices 0.. are missing; rank\(s\) \[0, 1\]"):
        job.wait_for_shards(None)
