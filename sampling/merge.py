"""Merge verified shards into the evaluator's file, `<out_dir>/samples_{N}x{H}x{W}x3.npz`.

The file is what ADM's scripts write with np.savez: `arr_0` uint8 N x H x W x 3 and `arr_1` int64 labels, in index
order. It is streamed shard by shard into the zip (host memory: one shard plus N labels, never N images) with fixed
zip timestamps, so equal samples give byte-identical files; in an object store it is assembled in a local temporary
file (TMPDIR needs room for it) and uploaded once complete. Every shard is verified while it is read; the count and
the index coverage (no gap, no overlap, nothing missing) are checked before anything is written.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from typing import IO

import numpy as np

from guided_diffusion.fileio import atomic_write, file_sha256
from guided_diffusion.storage import Location

from .errors import SamplingError
from .shards import CorruptShard, ShardRef, coverage, quarantine, read_shard

ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def merged_name(num_samples: int, image_shape: tuple[int, int, int]) -> str:
    height, width, channels = image_shape
    return f"samples_{num_samples}x{height}x{width}x{channels}.npz"


def _entry(zf: zipfile.ZipFile, name: str) -> IO[bytes]:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    return zf.open(info, "w", force_zip64=True)


def _header(fh: IO[bytes], dtype: np.dtype, shape: tuple[int, ...]) -> None:
    np.lib.format.write_array_header_1_0(
        fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})


def merge_shards(out_dir: Location, shard_dir: Location, refs: list[ShardRef], num_samples: int, config_hash: str,
                 image_shape: tuple[int, int, int], on_shard: Callable[[int], None] | None = None) -> dict:
    """Write the merged npz from `refs`; return its record (file, sha256, shards with their checksums)."""
    chosen, missing = coverage(refs, num_samples)
    if missing:
        ranges = ", ".join(f"{a}..{b - 1}" for a, b in missing[:5])
        raise SamplingError(
            f"cannot merge {num_samples} samples: indices {ranges} have no shard in {shard_dir}; "
            "run the sampler again with the same config to compute them"
        )
    labels = np.empty(num_samples, dtype=np.int64)
    records: list[dict] = []
    path = out_dir / merged_name(num_samples, image_shape)

    def write(fh: IO[bytes]) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with _entry(zf, "arr_0.npy") as entry:
                _header(entry, np.uint8, (num_samples, *image_shape))
                for ref in chosen:
                    try:
                        shard = read_shard(ref, config_hash, image_shape)
                    except CorruptShard as err:
                        moved = quarantine(ref.path)
                        raise SamplingError(
                            f"shard {ref.path.name} {err}; it was moved to {moved}; run the sampler again with the "
                            "same config to recompute it, then merge"
                        ) from None
                    take = min(shard.end, num_samples) - shard.start
                    entry.write(np.ascontiguousarray(shard.images[:take]).tobytes())
                    labels[shard.start:shard.start + take] = shard.labels[:take]
                    records.append({"file": ref.path.name, "start": shard.start, "end": shard.end,
                                    "sha256": file_sha256(ref.path), "digest": shard.digest,
                                    "device": shard.meta.get("device")})
                    if on_shard is not None:
                        on_shard(take)
            with _entry(zf, "arr_1.npy") as entry:
                _header(entry, np.int64, (num_samples,))
                entry.write(labels.tobytes())

    atomic_write(path, write)
    return {"file": path.name, "num_samples": num_samples, "sha256": file_sha256(path), "shards": records}


def check_merged(path: Location, num_samples: int, image_shape: tuple[int, int, int]) -> None:
    """Read the headers back: exactly arr_0 uint8 (N, H, W, 3) and arr_1 int64 (N,)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with path.open("rb") as fh, zipfile.ZipFile(fh) as zf:
        if zf.namelist() != ["arr_0.npy", "arr_1.npy"]:
            raise SamplingError(f"{path} has entries {zf.namelist()}, expected arr_0.npy and arr_1.npy")
        for name, dtype, shape in (("arr_0.npy", np.uint8, (num_samples, *image_shape)),
                                   ("arr_1.npy", np.int64, (num_samples,))):
            with zf.open(name) as fh:
                got_shape, _, got_dtype = readers[np.lib.format.read_magic(fh)](fh)
            if got_shape != shape or got_dtype != np.dtype(dtype):
                raise SamplingError(f"{path}: {name} is {got_dtype} {got_shape}, expected {np.dtype(dtype)} {shape}")
