"""Shard files: `shards/{start:07d}-{end:07d}.npz` hold samples start .. end-1 (end exclusive).

Each shard is an uncompressed npz with `images` (uint8 N x H x W x 3, quantized as upstream), `labels` (int64),
`indices` (int64, start .. end-1), `meta` (JSON text: config hash, device, versions) and `digest`, the sha256 of the
other four. It is written to a hidden temporary file, fsynced and renamed, so a crash leaves either the complete file
or a `.NAME.tmp` that the next run removes; in an object store it is one upload of the finished file, so there is no
temporary at all (guided_diffusion.storage). Reading verifies names, keys, shapes, dtypes, the config hash and the
digest; a shard that fails is moved to `shards/corrupt/`, never deleted. A store that cannot be reached (StorageError)
says so and quarantines nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from guided_diffusion.fileio import atomic_write
from guided_diffusion.storage import Location, ObjectPath, StorageError, files, move

from .errors import SamplingError

SHARD_KEYS = {"images", "labels", "indices", "meta", "digest"}
_NAME = re.compile(r"^(\d{7})-(\d{7})\.npz$")
_TEMP = re.compile(r"^\.(\d{7})-(\d{7})\.npz\.tmp$")
CORRUPT_DIR = "corrupt"


class CorruptShard(Exception):
    """A shard file that cannot be trusted (truncated, damaged, or not what its name says)."""


@dataclass(frozen=True)
class ShardRef:
    start: int
    end: int
    path: Location


@dataclass(frozen=True)
class Shard:
    start: int
    end: int
    images: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any]
    digest: str


def shard_name(start: int, end: int) -> str:
    return f"{start:07d}-{end:07d}.npz"


def list_shards(shard_dir: Location) -> list[ShardRef]:
    """Shard files in the directory (by name only, unverified; one listing request in a store), sorted by start."""
    refs = []
    for path in files(shard_dir):
        match = _NAME.match(path.name)
        if match:
            start, end = int(match.group(1)), int(match.group(2))
            if start < end:
                refs.append(ShardRef(start, end, path))
    return sorted(refs, key=lambda ref: (ref.start, ref.end))


def _digest(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, meta_text: str) -> str:
    digest = hashlib.sha256()
    for array in (images, labels, indices):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(meta_text.encode())
    return digest.hexdigest()


def write_shard(shard_dir: Location, start: int, images: np.ndarray, labels: np.ndarray, meta: Mapping[str, Any]
                ) -> Location:
    """Write samples start .. start+len(images)-1 atomically; return the shard's path."""
    end = start + len(images)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    indices = np.arange(start, end, dtype=np.int64)
    meta_text = json.dumps(dict(meta), sort_keys=True)
    digest = _digest(images, labels, indices, meta_text)
    path = shard_dir / shard_name(start, end)
    atomic_write(path, lambda fh: np.savez(fh, images=images, labels=labels, indices=indices,
                                           meta=np.array(meta_text), digest=np.array(digest)))
    return path


def read_shard(ref: ShardRef, config_hash: str, image_shape: tuple[int, int, int]) -> Shard:
    """Load and verify a shard; CorruptShard if it is damaged, SamplingError if it belongs to another config."""
    try:
        with ref.path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
            if set(npz.files) != SHARD_KEYS:
                raise CorruptShard(f"has keys {sorted(npz.files)}, expected {sorted(SHARD_KEYS)}")
            arrays = {key: npz[key] for key in SHARD_KEYS}
    except StorageError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise CorruptShard(f"cannot be read ({type(err).__name__}: {err})") from None
    count = ref.end - ref.start
    images, labels, indices = arrays["images"], arrays["labels"], arrays["indices"]
    if images.dtype != np.uint8 or images.shape != (count, *image_shape):
        raise CorruptShard(f"holds images {images.dtype} {images.shape}, expected uint8 {(count, *image_shape)}")
    if labels.dtype != np.int64 or labels.shape != (count,):
        raise CorruptShard(f"holds labels {labels.dtype} {labels.shape}, expected int64 ({count},)")
    if not np.array_equal(indices, np.arange(ref.start, ref.end)):
        raise CorruptShard(f"holds indices that are not {ref.start} .. {ref.end - 1}")
    meta_text, digest = str(arrays["meta"]), str(arrays["digest"])
    if _digest(images, labels, indices, meta_text) != digest:
        raise CorruptShard("fails its sha256 check")
    meta = json.loads(meta_text)
    if meta.get("config_hash") != config_hash:
        raise SamplingError(
            f"{ref.path} was sampled with config hash {meta.get('config_hash')}, but this run's is {config_hash}: "
            "the directory mixes runs of different configurations; use a fresh out_dir"
        )
    return Shard(ref.start, ref.end, images, labels, meta, digest)


def quarantine(path: Location) -> Location | None:
    """Move a bad shard to shards/corrupt/ (never delete it); None if another rank moved it first."""
    target_dir = path.parent / CORRUPT_DIR
    target_dir.mkdir(exist_ok=True)
    target = target_dir / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}"
    try:
        move(path, target)
    except FileNotFoundError:
        return None
    return target


def remove_temp_files(shard_dir: Location, lo: int, hi: int) -> list[Location]:
    """Delete leftover temporaries of interrupted writes whose start lies in [lo, hi); return them. A store has
    none (writes are single uploads), so it is not listed."""
    removed: list[Location] = []
    if isinstance(shard_dir, ObjectPath):
        return removed
    for path in files(shard_dir):
        match = _TEMP.match(path.name)
        if match and lo <= int(match.group(1)) < hi:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def gaps(lo: int, hi: int, covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [lo, hi) that no (start, end) range covers."""
    result, pos = [], lo
    for start, end in sorted(covered):
        if end <= pos or start >= hi:
            continue
        if start > pos:
            result.append((pos, min(start, hi)))
        pos = max(pos, end)
        if pos >= hi:
            break
    if pos < hi:
        result.append((pos, hi))
    return result


def coverage(refs: Iterable[ShardRef], num_samples: int) -> tuple[list[ShardRef], list[tuple[int, int]]]:
    """Shards that tile [0, num_samples) in order, and the missing ranges; overlapping shards are an error."""
    chosen: list[ShardRef] = []
    pos = 0
    for ref in sorted(refs, key=lambda r: (r.start, r.end)):
        if ref.start >= num_samples:
            break
        if ref.start < pos:
            raise SamplingError(
                f"shards {chosen[-1].path.name} and {ref.path.name} overlap (indices {ref.start}..{pos - 1} twice); "
                "move the one that does not belong to this run out of the shards directory"
            )
        chosen.append(ref)
        pos = ref.end
    missing = gaps(0, num_samples, [(ref.start, ref.end) for ref in chosen])
    return chosen, missing
