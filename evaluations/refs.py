"""ADM's reference batches: registry, checksummed download, and building new ones for other datasets.

    python -m evaluations.refs list
    python -m evaluations.refs download all --dir ref_batches
    python -m evaluations.refs verify --dir ref_batches
    python -m evaluations.refs build IMAGES --out REF.npz --resolution 256

A reference batch holds statistics over the whole dataset (`mu, sigma` of pool_3, `mu_s, sigma_s` of the
spatial features), used for FID and sFID, and up to 10,000 of its images in `arr_0`, used for
precision/recall.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluations.backends import load_backend
from evaluations.inception import FEATURE_BATCH_SIZE, FeatureBackend
from evaluations.npz_io import NpzImages, check_images_header, save_npz_atomic
from guided_diffusion.fileio import atomic_write, download, unreadable, verify
from guided_diffusion.storage import local_path

URL_PREFIX = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/"
CHECKSUM_FILE = "SHA256SUMS"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Batch:
    """One downloadable batch. sha256/size are None where no verified value is known yet: the first download
    then records its checksum in SHA256SUMS next to it, and later verifications hold it to that."""

    path: str
    resolution: int
    sha256: str | None = None
    size: int | None = None
    note: str = ""

    @property
    def url(self) -> str:
        return URL_PREFIX + self.path

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


REFERENCE_BATCHES = {
    "imagenet64": Batch("imagenet/64/VIRTUAL_imagenet64_labeled.npz", 64),
    "imagenet128": Batch("imagenet/128/VIRTUAL_imagenet128_labeled.npz", 128),
    "imagenet256": Batch(
        "imagenet/256/VIRTUAL_imagenet256_labeled.npz",
        256,
        sha256="b32732719497e42660a9affb4a966068cba0855ac449b82015e34ec376d20758",
        size=2_037_122_530,
    ),
    "imagenet512": Batch(
        "imagenet/512/VIRTUAL_imagenet512.npz",
        512,
        note="holds 1,000 images, so its precision/recall is noisier",
    ),
    "lsun_bedroom": Batch("lsun/bedroom/VIRTUAL_lsun_bedroom256.npz", 256),
    "lsun_cat": Batch("lsun/cat/VIRTUAL_lsun_cat256.npz", 256),
    "lsun_horse": Batch("lsun/horse/VIRTUAL_lsun_horse256.npz", 256),
}

# ADM's own 50K-sample batches with the values its README prints: end-to-end checks of an evaluator backend.
SAMPLE_BATCHES = {
    "admnet_guided_upsampled_imagenet256": Batch(
        "imagenet/256/admnet_guided_upsampled_imagenet256.npz",
        256,
        note="ADM README vs imagenet256: IS 215.8370361328125, FID 3.9425574129223264, "
        "sFID 6.140433703346162, Precision 0.8265, Recall 0.5309",
    ),
    "admnet_guided_imagenet128": Batch(
        "imagenet/128/admnet_guided_imagenet128.npz",
        128,
        note="vs imagenet128, ADM's TensorFlow evaluator (as reported by a third-party port): IS 141.477, "
        "FID 2.97329, sFID 5.09456, Precision 0.78138, Recall 0.5929",
    ),
}
ALL_BATCHES = {**REFERENCE_BATCHES, **SAMPLE_BATCHES}


def _recorded_checksums(directory: Path) -> dict[str, str]:
    path = directory / CHECKSUM_FILE
    if not path.exists():
        return {}
    entries = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {name.strip(): digest for digest, name in entries}


def _record_checksum(directory: Path, filename: str, digest: str) -> None:
    recorded = _recorded_checksums(directory)
    recorded[filename] = digest
    text = "".join(f"{d}  {n}\n" for n, d in sorted(recorded.items()))
    atomic_write(directory / CHECKSUM_FILE, lambda fh: fh.write(text.encode()))


def expected_sha256(batch: Batch, directory: Path) -> tuple[str | None, str]:
    """The checksum a file must have, and its source (the registry, or this directory's first download)."""
    if batch.sha256 is not None:
        return batch.sha256, "registry"
    recorded = _recorded_checksums(directory).get(batch.filename)
    return recorded, f"{CHECKSUM_FILE} (first download)" if recorded else "none"


def fetch(name: str, directory: Path) -> Path:
    """Download one registry batch into `directory` unless a verified copy is there; return its path."""
    batch = ALL_BATCHES[name]
    dest = directory / batch.filename
    if dest.exists():
        verify_batch(name, directory)
        return dest
    expected, _ = expected_sha256(batch, directory)
    digest = download(batch.url, dest, expected, batch.size)
    if expected is None:
        _record_checksum(directory, batch.filename, digest)
        print(
            f"{batch.filename}: no pinned checksum; recorded sha256 {digest} in {CHECKSUM_FILE}",
            file=sys.stderr,
        )
    return dest


def verify_batch(name: str, directory: Path) -> str:
    """Check a downloaded batch against its expected size and sha256; return how it was verified."""
    batch = ALL_BATCHES[name]
    expected, source = expected_sha256(batch, directory)
    actual = verify(directory / batch.filename, expected, batch.size, source)
    if expected is None:
        _record_checksum(directory, batch.filename, actual)
        return f"sha256 {actual} recorded (nothing pinned yet)"
    return f"sha256 matches {source}"


def center_crop_arr(image, resolution: int) -> np.ndarray:
    """ADM's training-data preprocessing: halve with BOX filtering while the short side is at least twice the
    target, resize the short side to `resolution` with BICUBIC, then crop the center."""
    from PIL import Image

    while min(*image.size) >= 2 * resolution:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = resolution / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.array(image)
    top = (arr.shape[0] - resolution) // 2
    left = (arr.shape[1] - resolution) // 2
    return arr[top : top + resolution, left : left + resolution]


def _folder_batches(files: list[Path], resolution: int, batch_size: int) -> Iterator[np.ndarray]:
    from PIL import Image

    for start in range(0, len(files), batch_size):
        batch = []
        for path in files[start : start + batch_size]:
            try:
                with Image.open(path) as image:
                    batch.append(center_crop_arr(image.convert("RGB"), resolution))
            except OSError as err:  # PIL's unknown formats and truncated files are OSErrors too
                raise unreadable(path, err, "an image", "replace the file or remove it from the folder") from None
        yield np.stack(batch)


class _RunningMoments:
    """Mean and covariance accumulated batch by batch in float64, centred on the first batch's mean so that
    whole datasets (ImageNet: 1.28M images) need no activation matrix in memory."""

    def __init__(self):
        self.n = 0
        self.shift: np.ndarray | None = None
        self.sum: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.sum = np.zeros_like(self.shift)
            self.outer = np.zeros((x.shape[1], x.shape[1]))
        centred = x - self.shift
        self.n += len(x)
        self.sum += centred.sum(axis=0)
        self.outer += centred.T @ centred

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        mean_offset = self.sum / self.n
        sigma = (self.outer - self.n * np.outer(mean_offset, mean_offset)) / (self.n - 1)
        return self.shift + mean_offset, sigma


def build_reference_batch(
    source: Path,
    out: Path,
    backend: FeatureBackend,
    resolution: int | None = None,
    max_images: int = 10_000,
    seed: int = 0,
) -> dict:
    """Write a reference batch for `source` (a folder of images, or an npz whose arr_0 is uint8 NHWC).

    Statistics use every image; `arr_0` keeps a seeded random subset of `max_images` (in dataset order), as in
    ADM's reference batches. Folder images get ADM's center crop to `resolution`.
    """
    with ExitStack() as stack:
        count, batches = _open_source(source, resolution, stack)
        if count < 2:
            raise ValueError(f"{source}: need at least 2 images for a covariance")
        keep = np.sort(np.random.default_rng(seed).choice(count, size=min(count, max_images), replace=False))
        kept, pool_moments, spatial_moments = [], _RunningMoments(), _RunningMoments()
        start = 0
        total = -(-count // FEATURE_BATCH_SIZE)
        for batch in tqdm(batches, total=total, desc="reference activations", file=sys.stderr):
            pool, spatial = backend.features(batch)
            pool_moments.add(pool)
            spatial_moments.add(spatial)
            chosen = keep[(keep >= start) & (keep < start + len(batch))] - start
            kept.append(np.array(batch[chosen], dtype=np.uint8))
            start += len(batch)
    mu, sigma = pool_moments.finish()
    mu_s, sigma_s = spatial_moments.finish()
    save_npz_atomic(out, arr_0=np.concatenate(kept), mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    return {"images": count, "stored_images": len(keep), "out": str(out), "backend": backend.name}


def _open_source(source: Path, resolution: int | None, stack: ExitStack) -> tuple[int, Iterator[np.ndarray]]:
    """Image count and batch iterator of a folder of images or of an npz's arr_0."""
    if source.is_dir():
        if resolution is None:
            raise ValueError("building from a folder needs --resolution")
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return len(files), _folder_batches(files, resolution, FEATURE_BATCH_SIZE)
    npz = stack.enter_context(NpzImages(source))
    check_images_header(npz, "source")
    if resolution is not None and npz.shape[1:3] != (resolution, resolution):
        raise ValueError(f"{source}: images are {npz.shape[1]}x{npz.shape[2]}, not {resolution}x{resolution}")
    return len(npz), npz.batches(FEATURE_BATCH_SIZE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evaluations.refs", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the registry")
    dl = sub.add_parser("download", help="download batches (names from 'list', or 'all' reference batches)")
    dl.add_argument("names", nargs="+")
    dl.add_argument("--dir", type=local_path, default=Path("ref_batches"))
    vf = sub.add_parser("verify", help="check every downloaded batch in --dir against its checksum")
    vf.add_argument("--dir", type=local_path, default=Path("ref_batches"))
    bd = sub.add_parser("build", help="build a reference batch from a folder of images or an npz")
    bd.add_argument("source", type=local_path)
    bd.add_argument("--out", type=local_path, required=True)
    bd.add_argument("--resolution", type=int, help="target size (folders: ADM center crop; npz: checked)")
    bd.add_argument(
        "--max-images", type=int, default=10_000, help="images kept in arr_0 for precision/recall"
    )
    bd.add_argument("--seed", type=int, default=0)
    bd.add_argument("--backend", choices=["torch", "tf"], default="torch")
    bd.add_argument("--graph", type=local_path, help="Inception graph to use instead of the official download")
    bd.add_argument("--cache-dir", type=local_path)
    bd.add_argument("--device")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name, batch in ALL_BATCHES.items():
                pinned = batch.sha256[:12] + "..." if batch.sha256 else "not pinned"
                print(f"{name:38s} {batch.resolution:4d}px  sha256 {pinned:15s} {batch.url}  {batch.note}")
        elif args.command == "download":
            names = list(REFERENCE_BATCHES) if args.names == ["all"] else args.names
            unknown = [n for n in names if n not in ALL_BATCHES]
            if unknown:
                raise ValueError(f"unknown batch(es) {unknown}; see 'python -m evaluations.refs list'")
            for name in names:
                print(f"{name}: {fetch(name, args.dir)}")
        elif args.command == "verify":
            present = [n for n, b in ALL_BATCHES.items() if (args.dir / b.filename).exists()]
            if not present:
                raise ValueError(f"{args.dir}: no registry batches found")
            for name in present:
                print(f"{name}: {verify_batch(name, args.dir)}")
        else:
            backend = load_backend(args.backend, args.graph, args.cache_dir, args.device)
            summary = build_reference_batch(
                args.source, args.out, backend, args.resolution, args.max_images, args.seed
            )
            print(
                f"wrote {summary['out']}: statistics of {summary['images']} images, "
                f"{summary['stored_images']} kept"
            )
    except (ValueError, OSError, NotImplementedError, ImportError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
