"""File helpers shared by checkpoints, evaluation, sampling and training: chunked sha256, atomic writes, and a
resumable checksummed download.

One copy of each, so every multi-GB file (checkpoints, reference batches, merged samples) gets the same guarantees:
no file under its final name unless complete, no data loaded whole into memory. Standard library and tqdm only,
so importing it never pulls in torch. Paths may be object-store URLs or ObjectPaths (guided_diffusion.storage):
atomic writes to a store are one upload of a finished local file, reads go through the store's reader.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tqdm import tqdm

from .storage import ObjectPath, StorageError, is_url, location

CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(ValueError):
    """The server cannot be reached or refused the request; the message says so in terms of the URL only."""


class DownloadInterrupted(DownloadError):
    """The transfer stopped early; the `.part` file is kept so the next attempt resumes it."""


class DownloadMismatch(DownloadError):
    """The complete download is not the expected file; it was moved aside to `rejected`, never accepted."""

    def __init__(self, message: str, problem: str, field: str, rejected: Path):
        super().__init__(message)
        self.problem, self.field, self.rejected = problem, field, rejected


class UnreadableFile(ValueError):
    """A file the project reads is missing, unreadable, truncated or not what it should be; the message names the
    file, the problem and the fix in one sentence."""


def unreadable(path: str | os.PathLike | ObjectPath, err: BaseException, what: str, fix: str) -> UnreadableFile:
    """One sentence for a file that could not be read as `what` (e.g. "an .npz image batch"), ending in `fix`."""
    if isinstance(err, StorageError):
        return UnreadableFile(f"{path} cannot be read: {err}")
    if isinstance(err, FileNotFoundError):
        problem = "does not exist"
    elif isinstance(err, IsADirectoryError):
        problem = "is a directory"
    elif isinstance(err, PermissionError):
        problem, fix = "cannot be read (permission denied)", f"make it readable, or {fix}"
    elif isinstance(err, OSError):
        problem = f"cannot be read ({err.strerror or err})"
    else:
        problem = f"is not {what} or is truncated ({type(err).__name__}: {err})"
    return UnreadableFile(f"{path} {problem}; {fix}")


def file_sha256(path: str | os.PathLike | ObjectPath) -> str:
    """Hex sha256 of a file or object, read in chunks so multi-GB files need not fit in memory."""
    digest = hashlib.sha256()
    with location(path).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, sha256: str | None, size: int | None, source: str = "pinned") -> str:
    """Check a finished file against a size and sha256 (None = not pinned) from `source`; return its sha256."""
    if size is not None and path.stat().st_size != size:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, expected {size}; delete it and download again")
    actual = file_sha256(path)
    if sha256 is not None and actual != sha256:
        raise ValueError(f"{path}: sha256 {actual} differs from {sha256} ({source}); delete it and download again")
    return actual


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort: some filesystems do not support fsync on directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | ObjectPath | str, write_fn: Callable[[IO[bytes]], object]) -> None:
    """Call write_fn(binary file) on a hidden `.NAME.tmp` beside `path`, fsync, then rename over `path`.

    A crash leaves either the old file or the complete new one (plus at most the temporary, removed on failure).
    In an object store there is no temporary beside it: the object is uploaded once it is complete.
    """
    if is_url(path):
        location(path).write_atomic(write_fn)
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write_fn(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _range_total(content_range: str | None) -> int | None:
    found = re.match(r"bytes [\d*-]+/(\d+)", content_range or "")
    return int(found.group(1)) if found else None


def _fetch(url: str, part: Path, label: str, progress: bool) -> str:
    """Download `url` into `part`, resuming what is there with an HTTP Range request; return the full sha256."""
    offset = part.stat().st_size if part.exists() else 0
    digest = hashlib.sha256()
    if offset:
        with open(part, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    headers = {"User-Agent": "pag-adm"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Nothing left to send: the .part is complete if the server's total says so, else start over.
            if _range_total(err.headers.get("Content-Range")) == offset:
                return digest.hexdigest()
            part.unlink()
            return _fetch(url, part, label, progress)
        raise DownloadError(f"the server answered HTTP {err.code} ({err.reason}) for {url}; check the URL") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        host = urllib.parse.urlsplit(url).netloc or url
        raise DownloadError(
            f"cannot reach {host} ({reason}); check the network connection and run the command again"
        ) from None
    with response:
        if offset and response.status != 206:
            offset, digest = 0, hashlib.sha256()  # the server ignored the Range header: restart from scratch
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        with open(part, "ab" if offset else "wb") as fh, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress
        ) as bar:
            try:
                while chunk := response.read(CHUNK):
                    fh.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                failure: str | None = f"{type(err).__name__}: {err}"
            else:
                failure = None if total is None or received == total else f"got {received:,} of {total:,} bytes"
    if failure is not None:
        raise DownloadInterrupted(
            f"the download of {label} was interrupted ({failure}); run the same command again to resume from {part}"
        )
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None, progress: bool = True,
             label: str | None = None) -> str:
    """Fetch `url` to `dest` and return its sha256; `sha256`/`size` (None = not pinned) must match.

    The data goes to `DEST.part` (resumed when present, since reference batches and checkpoints are GBs) and is
    renamed to `dest` only once complete and matching. A complete download that differs is moved aside to
    `DEST.mismatch` (DownloadMismatch), never accepted. `label` names the file in the progress bar and errors.
    """
    dest = Path(dest)
    label = label or dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = _fetch(url, part, label, progress)
    received = part.stat().st_size
    if size is not None and received != size:
        field, problem = "size", f"it has {received:,} bytes, expected {size:,}"
    elif sha256 is not None and digest != sha256:
        field, problem = "sha256", f"its sha256 is {digest}, expected {sha256}"
    else:
        os.replace(part, dest)
        _fsync_dir(dest.parent)
        return digest
    rejected = dest.with_name(dest.name + ".mismatch")
    os.replace(part, rejected)
    raise DownloadMismatch(f"{url} is not the expected file: {problem}; it was moved to {rejected}", problem, field,
                           rejected)
