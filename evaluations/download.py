"""Checksummed, atomic downloads for the Inception graph and the reference batches."""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB reference batches do not need to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, sha256: str | None, size: int | None) -> str:
    """Check a file against a pinned size and sha256 (either may be None = not pinned); return its sha256."""
    if size is not None and path.stat().st_size != size:
        raise ValueError(
            f"{path}: size {path.stat().st_size} bytes, expected {size}; delete it and download again"
        )
    actual = sha256_file(path)
    if sha256 is not None and actual != sha256:
        raise ValueError(f"{path}: sha256 {actual}, expected {sha256}; delete it and download again")
    return actual


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None) -> str:
    """Fetch `url` to `dest` via a temporary file renamed only once the checksum matched; return its sha256.

    An interrupted or corrupted transfer therefore never leaves a file under the final name.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".part{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if size is not None and tmp.stat().st_size != size:
            raise ValueError(f"{url}: got {tmp.stat().st_size} bytes, expected {size}")
        if sha256 is not None and actual != sha256:
            raise ValueError(f"{url}: sha256 {actual}, expected {sha256}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return actual
