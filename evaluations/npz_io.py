"""Streaming access to image batches stored in .npz files, and the checks a sample batch must pass.

A 50K-sample 256x256 batch is 9.8 GB; reading `arr_0` batch by batch (as ADM's evaluator does) keeps memory
at one batch. Paths may be object-store URLs (guided_diffusion.storage): the zip is then read with ranged requests.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from guided_diffusion.fileio import atomic_write, unreadable
from guided_diffusion.storage import ObjectPath, location

IMAGE_KEY = "arr_0"
STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
NPZ_FIX = "check the path, or write the batch again with np.savez (a downloaded batch: delete it and download it again)"
QUANTIZATION_HINT = "ADM stores samples as uint8: clamp((x + 1) * 127.5, 0, 255).to(torch.uint8), NHWC"


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    major, _ = np.lib.format.read_magic(f)
    if major == 1:
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


class NpzImages:
    """The `arr_0` array of an npz file, read in batches without loading the whole array."""

    def __init__(self, path: str | os.PathLike | ObjectPath, key: str = IMAGE_KEY):
        self.path = location(path)
        try:
            self._file = self.path.open("rb")
        except OSError as err:
            raise unreadable(self.path, err, "an .npz archive", NPZ_FIX) from None
        try:
            self._zip = zipfile.ZipFile(self._file)
        except (OSError, zipfile.BadZipFile) as err:
            self._file.close()
            raise unreadable(self.path, err, "an .npz archive", NPZ_FIX) from None
        names = self._zip.namelist()
        if f"{key}.npy" not in names:
            self.close()
            keys = sorted(n.removesuffix(".npy") for n in names)
            raise ValueError(
                f"{self.path}: no '{key}' array (keys: {keys}); ADM batches keep images in '{key}'"
            )
        self._member = f"{key}.npy"
        try:
            with self._zip.open(self._member) as f:
                self.shape, self.fortran_order, self.dtype = _read_npy_header(f)
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
            self.close()
            raise unreadable(self.path, err, f"an .npz archive with a readable '{key}' array", NPZ_FIX) from None
        self.keys = [n.removesuffix(".npy") for n in names]

    def __enter__(self) -> NpzImages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield consecutive batches of at most `batch_size` images."""
        if self.dtype.hasobject:
            raise ValueError(f"{self.path}: '{self._member}' holds Python objects, not images")
        if self.fortran_order:  # rare (a transposed array saved as is): only a full load can reorder it
            with self.path.open("rb") as fh:
                array = np.load(fh)[self._member.removesuffix(".npy")]
            for start in range(0, len(array), batch_size):
                yield np.ascontiguousarray(array[start : start + batch_size])
            return
        per_item = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        with self._zip.open(self._member) as f:
            _read_npy_header(f)
            for start in range(0, len(self), batch_size):
                count = min(batch_size, len(self) - start)
                try:
                    data = f.read(count * per_item)
                except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                    raise unreadable(self.path, err, "an intact .npz archive", NPZ_FIX) from None
                if len(data) != count * per_item:
                    raise ValueError(f"{self.path}: '{self._member}' is truncated at image {start}; {NPZ_FIX}")
                yield np.frombuffer(bytearray(data), dtype=self.dtype).reshape((count, *self.shape[1:]))

    def first_batch(self, batch_size: int = 64) -> np.ndarray:
        """The first few images, for error messages that describe what the file holds."""
        return next(self.batches(batch_size))


def stored_statistics(path: str | os.PathLike | ObjectPath) -> dict[str, np.ndarray] | None:
    """The precomputed `mu/sigma/mu_s/sigma_s` of a reference batch, or None when it has none (ADM's rule:
    statistics are read when a `mu` key exists)."""
    try:
        fh = location(path).open("rb")
    except OSError as err:
        raise unreadable(path, err, "an .npz archive", NPZ_FIX) from None
    with fh:
        try:
            data = np.load(fh)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise unreadable(path, err, "an .npz archive", NPZ_FIX) from None
        return _statistics(path, data)


def _statistics(path: str | os.PathLike | ObjectPath, data: np.lib.npyio.NpzFile) -> dict[str, np.ndarray] | None:
    with data:
        if "mu" not in data.files:
            return None
        missing = [k for k in STAT_KEYS if k not in data.files]
        if missing:
            raise ValueError(
                f"{path}: has 'mu' but lacks {missing}; a reference batch stores all of {STAT_KEYS}"
            )
        return {k: data[k] for k in STAT_KEYS}


def check_images_header(images: NpzImages, role: str) -> None:
    """Refuse arrays that are not uint8 NHWC RGB images, naming the likely cause."""
    shape, dtype = images.shape, images.dtype
    if len(shape) != 4:
        raise ValueError(f"{role} {images.path}: '{IMAGE_KEY}' has shape {shape}; expected (N, H, W, 3)")
    if shape[0] == 0:
        raise ValueError(f"{role} {images.path}: '{IMAGE_KEY}' holds no images")
    if shape[-1] != 3:
        layout = " (channels first? ADM expects NHWC)" if shape[1] == 3 else ""
        raise ValueError(f"{role} {images.path}: images of shape {shape[1:]}{layout}; expected (H, W, 3)")
    if dtype != np.uint8:
        first = images.first_batch()
        if np.issubdtype(dtype, np.number):
            finite = first[np.isfinite(first)]
            described = (
                f"values in [{finite.min():.4g}, {finite.max():.4g}]" if finite.size else "no finite values"
            )
            if finite.size < first.size:
                described += ", with NaNs or infinities"
        else:
            described = "non-numeric values"
        raise ValueError(
            f"{role} {images.path}: dtype {dtype} ({described} in the first batch); "
            f"expected uint8 in [0, 255]. {QUANTIZATION_HINT}"
        )


def check_sample_matches_reference(sample: NpzImages, ref: NpzImages) -> None:
    """Refuse a sample batch whose resolution differs from its reference batch's."""
    if sample.shape[1:3] != ref.shape[1:3]:
        raise ValueError(
            f"sample {sample.path}: resolution {sample.shape[1]}x{sample.shape[2]} does not match reference "
            f"{ref.path} ({ref.shape[1]}x{ref.shape[2]}); use the reference batch of the samples' size"
        )


def check_sample_batch(batch: np.ndarray, start: int, path: Path | ObjectPath) -> None:
    """Refuse blank (single-valued) images: NaNs in a sampler's output become such images in uint8."""
    flat = batch.reshape(len(batch), -1)
    blank = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))
    if len(blank):
        index = start + int(blank[0])
        raise ValueError(
            f"sample {path}: image {index} has every pixel equal to {int(flat[blank[0], 0])} "
            f"({len(blank)} such image(s) among images {start}..{start + len(batch) - 1}). NaNs in a model's "
            "output (e.g. an fp16 overflow) become blank images after the uint8 cast; fix the sampler, or "
            "pass --allow-blank-samples if blank images are genuine"
        )


def save_npz_atomic(path: str | os.PathLike | ObjectPath, **arrays: np.ndarray) -> None:
    """np.savez through a temporary file and a rename (in a store: one upload), so a crash never leaves a
    half-written batch."""
    path = location(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
