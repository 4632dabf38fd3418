"""Unit tests of the sampling package: rank discovery, per-sample RNG, shards, merge, PNG, config hash."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from guided_diffusion.fileio import file_sha256
from sampling import manifest as mf
from sampling.dist import RankInfo, discover, select_device
from sampling.errors import SamplingError
from sampling.merge import check_merged, merge_shards, merged_name
from sampling.png import encode_png, export_pngs, png_name
from sampling.rng import MicroBatchStreams, sample_generator
from sampling.shards import (
    CorruptShard,
    ShardRef,
    coverage,
    gaps,
    list_shards,
    quarantine,
    read_shard,
    remove_temp_files,
    shard_name,
    write_shard,
)

SHAPE = (4, 4, 3)
HASH = "h" * 64


# ------------------------------------------------------------------------------------------------ ranks
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, RankInfo(0, 1, 0, "single")),
        ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, RankInfo(3, 8, 1, "torchrun")),
        ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "6", "OMPI_COMM_WORLD_LOCAL_RANK": "2"},
         RankInfo(5, 6, 2, "openmpi")),
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"}, RankInfo(1, 2, 1, "mpich")),
        ({"SLURM_PROCID": "7", "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "3",
          "SLURM_STEP_ID": "0"}, RankInfo(7, 8, 3, "slurm")),
        # torchrun inside an srun step: torchrun's own variables win
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "SLURM_PROCID": "4", "SLURM_NTASKS": "8",
          "SLURM_STEP_ID": "1"}, RankInfo(0, 2, 0, "torchrun")),
        # a plain process in an sbatch script (no job step) is a single process, whatever the allocation
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0"}, RankInfo(0, 1, 0, "single")),
    ],
)
def test_rank_discovery_from_launcher_environment(env, expected):
    assert discover(env) == expected


def test_inconsistent_launcher_variables_are_reported():
    with pytest.raises(SamplingError, match="rank 4 of world size 2"):
        discover({"RANK": "4", "WORLD_SIZE": "2"})
    with pytest.raises(SamplingError, match="PMI_RANK='x' is not an integer"):
        discover({"PMI_RANK": "x", "PMI_SIZE": "2"})


def test_device_selection_without_cuda():
    assert select_device("auto", 3) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SamplingError, match="no CUDA device"):
            select_device("cuda", 0)
    with pytest.raises(SamplingError, match="auto, cpu or cuda"):
        select_device("gpu", 0)


# ------------------------------------------------------------------------------------------------ RNG
def test_sample_streams_depend_only_on_seed_and_index():
    a = MicroBatchStreams(7, range(4, 8), (3, 2, 2), num_classes=10)
    b = MicroBatchStreams(7, range(6, 8), (3, 2, 2), num_classes=10)
    assert torch.equal(a.x_T[2:], b.x_T) and torch.equal(a.labels[2:], b.labels)
    a.noise()
    assert torch.equal(a.noise()[2:], (b.noise(), b.noise())[1])
    other_seed = MicroBatchStreams(8, range(6, 8), (3, 2, 2), num_classes=10)
    assert not torch.equal(other_seed.x_T, b.x_T)
    assert not torch.equal(a.x_T[0], a.x_T[1])


def test_balanced_labels_keep_the_image_stream():
    uniform = MicroBatchStreams(0, range(0, 20), (3, 2, 2), num_classes=10)
    balanced = MicroBatchStreams(0, range(0, 20), (3, 2, 2), num_classes=10, protocol="balanced")
    assert balanced.labels.tolist() == [i % 10 for i in range(20)]
    assert torch.equal(uniform.x_T, balanced.x_T)
    assert len(set(uniform.labels.tolist())) > 1


def test_perturbation_stream_is_separate():
    streams = MicroBatchStreams(0, range(2), (3, 2, 2), num_classes=10, perturbation=True)
    draw = torch.rand(3, generator=streams.perturbation_generators[0])
    assert not torch.equal(draw, torch.rand(3, generator=sample_generator(0, 0)))
    assert torch.equal(draw, torch.rand(3, generator=sample_generator(0, 0, stream=1)))


# ------------------------------------------------------------------------------------------------ shards
def _images(start: int, end: int) -> np.ndarray:
    return (np.arange(start, end)[:, None, None, None] * 7 + np.arange(48).reshape(SHAPE)).astype(np.uint8)


def _write(shard_dir: Path, start: int, end: int, config_hash: str = HASH) -> ShardRef:
    shard_dir.mkdir(parents=True, exist_ok=True)
    path = write_shard(shard_dir, start, _images(start, end), np.arange(start, end) % 5, {"config_hash": config_hash})
    return ShardRef(start, end, path)


def test_shard_roundtrip_and_naming(tmp_path):
    ref = _write(tmp_path, 4, 8)
    assert ref.path.name == shard_name(4, 8) == "0000004-0000008.npz"
    shard = read_shard(ref, HASH, SHAPE)
    assert np.array_equal(shard.images, _images(4, 8)) and shard.labels.tolist() == [4, 0, 1, 2]
    assert list_shards(tmp_path) == [ref]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "rename", "garbage"])
def test_damaged_shards_are_detected(tmp_path, damage):
    ref = _write(tmp_path, 0, 4)
    data = ref.path.read_bytes()
    if damage == "truncate":
        ref.path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        at = data.index(bytes(_images(0, 4)[1].tobytes()[:8]))  # inside the image payload
        ref.path.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1:])
    elif damage == "rename":
        ref = ShardRef(0, 3, ref.path.rename(tmp_path / shard_name(0, 3)))
    else:
        ref.path.write_bytes(b"not a zip file")
    with pytest.raises(CorruptShard):
        read_shard(ref, HASH, SHAPE)
    moved = quarantine(ref.path)
    assert moved is not None and moved.parent.name == "corrupt" and moved.exists() and not ref.path.exists()
    assert quarantine(ref.path) is None


def test_shard_of_another_config_is_refused(tmp_path):
    ref = _write(tmp_path, 0, 4, config_hash="other")
    with pytest.raises(SamplingError, match="another|different configurations"):
        read_shard(ref, HASH, SHAPE)


def test_temp_files_removed_only_in_range(tmp_path):
    (tmp_path / ".0000000-0000004.npz.tmp").write_bytes(b"x")
    (tmp_path / ".0000004-0000008.npz.tmp").write_bytes(b"x")
    removed = remove_temp_files(tmp_path, 0, 4)
    assert [p.name for p in removed] == [".0000000-0000004.npz.tmp"]
    assert (tmp_path / ".0000004-0000008.npz.tmp").exists()


def test_gaps_and_coverage(tmp_path):
    assert gaps(0, 10, [(2, 4), (6, 12)]) == [(0, 2), (4, 6)]
    assert gaps(4, 8, [(0, 5)]) == [(5, 8)]
    assert gaps(0, 4, []) == [(0, 4)]
    refs = [ShardRef(0, 4, tmp_path / "a"), ShardRef(4, 6, tmp_path / "b"), ShardRef(8, 12, tmp_path / "c")]
    chosen, missing = coverage(refs, 10)
    assert missing == [(6, 8)] and len(chosen) == 3
    assert coverage(refs[:2], 5)[1] == []
    with pytest.raises(SamplingError, match="overlap"):
        coverage([*refs, ShardRef(5, 8, tmp_path / "d")], 12)


# ------------------------------------------------------------------------------------------------ merge
def test_merge_streams_shards_in_index_order(tmp_path):
    shard_dir = tmp_path / "shards"
    refs = [_write(shard_dir, 4, 10), _write(shard_dir, 0, 4)]
    record = merge_shards(tmp_path, shard_dir, refs, 9, HASH, SHAPE)
    path = tmp_path / merged_name(9, SHAPE)
    assert record["file"] == path.name == "samples_9x4x4x3.npz"
    with np.load(path) as npz:
        assert npz.files == ["arr_0", "arr_1"]
        assert np.array_equal(npz["arr_0"], _images(0, 9)) and npz["arr_0"].dtype == np.uint8
        assert npz["arr_1"].tolist() == [i % 5 for i in range(9)] and npz["arr_1"].dtype == np.int64
    check_merged(path, 9, SHAPE)
    assert [s["start"] for s in record["shards"]] == [0, 4] and record["sha256"] == file_sha256(path)
    first = path.read_bytes()
    merge_shards(tmp_path, shard_dir, list(reversed(refs)), 9, HASH, SHAPE)
    assert path.read_bytes() == first  # fixed zip timestamps: equal samples, equal bytes


def test_merge_refuses_missing_indices_and_quarantines_corrupt_shards(tmp_path):
    shard_dir = tmp_path / "shards"
    refs = [_write(shard_dir, 0, 4), _write(shard_dir, 6, 8)]
    with pytest.raises(SamplingError, match="indices 4..5 have no shard"):
        merge_shards(tmp_path, shard_dir, refs, 8, HASH, SHAPE)
    refs.append(_write(shard_dir, 4, 6))
    refs[0].path.write_bytes(refs[0].path.read_bytes()[:100])
    with pytest.raises(SamplingError, match="moved to .*corrupt"):
        merge_shards(tmp_path, shard_dir, refs, 8, HASH, SHAPE)
    assert not list(tmp_path.glob("samples_*")) and not list(tmp_path.glob(".*"))


def test_check_merged_rejects_wrong_shapes(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64))
    check_merged(path, 2, SHAPE)
    with pytest.raises(SamplingError, match="expected uint8"):
        check_merged(path, 3, SHAPE)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("arr_2.npy", b"")
    with pytest.raises(SamplingError, match="entries"):
        check_merged(path, 2, SHAPE)


# ------------------------------------------------------------------------------------------------ PNG
def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(tag + body)
        chunks[tag] = body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 2) and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * 3)
    assert not rows[:, 0].any()  # filter type 0
    return rows[:, 1:].reshape(height, width, 3)


def test_png_export_roundtrip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    assert export_pngs(tmp_path, 10, images, np.array([3, 999])) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [png_name(10, 3), png_name(11, 999)]
    assert png_name(10, 3) == "0000010_class003.png"
    assert np.array_equal(_decode_png((tmp_path / png_name(11, 999)).read_bytes()), images[1])
    assert export_pngs(tmp_path, 10, images, np.array([3, 999])) == 0
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        encode_png(images[0].astype(np.float32))


# ------------------------------------------------------------------------------------------------ manifest
BASE = {"model": {"name": "m"}, "guidance": {"name": "pag", "scale": 1.0}, "seed": 0, "micro_batch": 4,
        "num_samples": 10, "batch_size": 8, "out_dir": "a", "device": "auto",
        "reference_batch": "imagenet/256/VIRTUAL_imagenet256_labeled.npz"}


def test_config_hash_covers_what_changes_samples():
    digest = mf.config_hash(BASE)
    for key, value in (("num_samples", 50), ("batch_size", 2), ("out_dir", "b"), ("device", "cpu"),
                       ("reference_batch", None)):
        assert mf.config_hash({**BASE, key: value}) == digest, key
    assert mf.config_hash({**BASE, "guidance": {"name": "pag", "scale": 1}}) == digest  # 1 and 1.0 alike
    for key, value in (("seed", 1), ("micro_batch", 2), ("guidance", {"name": "pag", "scale": 2.0}),
                       ("new_key", 1)):
        assert mf.config_hash({**BASE, key: value}) != digest, key


def test_resume_with_another_config_names_the_changes(tmp_path):
    manifest = mf.new_manifest(BASE, mf.config_hash(BASE))
    changed = {**BASE, "guidance": {"name": "pag", "scale": 3.0}, "seed": 2}
    mf.check_resume(manifest, BASE, mf.config_hash(BASE), tmp_path)
    with pytest.raises(SamplingError, match=r"guidance.scale: 1 -> 3; seed: 0 -> 2"):
        mf.check_resume(manifest, changed, mf.config_hash(changed), tmp_path)


def test_manifest_roundtrip_and_bad_manifest(tmp_path):
    assert mf.read_manifest(tmp_path) is None
    manifest = mf.new_manifest(BASE, mf.config_hash(BASE))
    mf.write_manifest(tmp_path, manifest)
    assert mf.read_manifest(tmp_path) == manifest
    (tmp_path / mf.MANIFEST).write_text("{truncated")
    with pytest.raises(SamplingError, match="cannot be read"):
        mf.read_manifest(tmp_path)
    (tmp_path / mf.MANIFEST).write_text("[]")
    with pytest.raises(SamplingError, match="not a manifest"):
        mf.read_manifest(tmp_path)
    assert mf.library_versions()["torch"] == torch.__version__ and mf.code_version() != ""
