"""PNG export of samples (`save_png=true`): `png/{index:07d}_class{label:03d}.png`, written atomically.

A minimal encoder (8-bit RGB, no filtering, zlib) so the sampler needs no imaging library.
"""

from __future__ import annotations

import re
import struct
import zlib

import numpy as np

from guided_diffusion.fileio import atomic_write
from guided_diffusion.storage import Location, ObjectPath, files

_TEMP = re.compile(r"^\.(\d{7})_class\d+\.png\.tmp$")


def encode_png(image: np.ndarray) -> bytes:
    """An H x W x 3 uint8 array as PNG bytes."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    height, width, _ = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def png_name(index: int, label: int) -> str:
    return f"{index:07d}_class{label:03d}.png"


def export_pngs(png_dir: Location, start: int, images: np.ndarray, labels: np.ndarray) -> int:
    """Write the PNGs of samples start, start+1, ... that are not there yet; return how many were written."""
    png_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for offset, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = png_dir / png_name(start + offset, int(label))
        if not path.exists():
            data = encode_png(image)
            atomic_write(path, lambda fh, data=data: fh.write(data))
            written += 1
    return written


def remove_png_temp_files(png_dir: Location, lo: int, hi: int) -> None:
    """Delete temporaries of interrupted PNG writes for indices in [lo, hi) (a store has none: no listing)."""
    if isinstance(png_dir, ObjectPath):
        return
    for path in files(png_dir):
        match = _TEMP.match(path.name)
        if match and lo <= int(match.group(1)) < hi:
            path.unlink(missing_ok=True)
