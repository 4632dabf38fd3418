"""Where a file lives: a local path or an object-store URL (s3://, gs://, az://, ...), behind one Path-like API.

Run directories, checkpoints, reference batches and evaluator outputs are handled as a `pathlib.Path` or an
`ObjectPath`; both answer the same methods (`/`, name, parent, with_name, exists, is_file, is_dir, mkdir, unlink,
read_bytes, read_text, write_bytes, write_text, open("rb"), stat), so the code that uses only those never asks where
a file lives. What differs between the two is kept here: listing a directory's files (`files`), moving (`move`), atomic
writes (`ObjectPath.write_atomic`: one upload of a finished local file, since an object appears whole or not at all)
and a local copy of a remote input that must be a real file (`local_copy`, for checkpoints).

fsspec is imported only when a URL is used, so local runs need nothing beyond the core dependencies; each scheme's
back-end is an extra (`pip install 'pag-adm[s3]'`, `[gcs]`, `[azure]`) and its absence is one sentence naming it.
The back-ends' failures (missing bucket, missing credentials, access denied, unreachable endpoint) become
StorageError, an OSError whose message is one sentence ending in what to do; a missing object stays a plain
FileNotFoundError, as it is locally.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://(.*)$")
# scheme -> (the pag-adm extra that installs its back-end, the back-end's package)
BACKENDS = {
    "s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"),
    "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"),
    "az": ("azure", "adlfs"), "abfs": ("azure", "adlfs"), "abfss": ("azure", "adlfs"),
}
CREDENTIALS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or use an instance role)",
    "gcs": "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
    "azure": "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY",
}


class UnsupportedLocation(ValueError):
    """A URL-like path that cannot be used: an unknown scheme, or its back-end is not installed."""


class StorageError(OSError):
    """An object store refused or failed an operation; the message is one sentence that says what to do."""

    def __init__(self, code: int, sentence: str):
        super().__init__(code, sentence)

    def __str__(self) -> str:
        return self.strerror


def is_url(path: object) -> bool:
    """Whether `path` names an object in a store (an ObjectPath, or text of the form scheme://...)."""
    return isinstance(path, ObjectPath) or (isinstance(path, str) and _URL.match(path) is not None)


def local_path(text: str) -> Path:
    """An argparse type for options that take local paths only: a URL gets a sentence instead of becoming a local
    folder named 's3:'."""
    if is_url(text):
        raise argparse.ArgumentTypeError(
            f"{text} is an object-store URL, and this option takes a local path; docs/object-storage.md lists the "
            "paths that take URLs (or copy the object to a local file first)")
    return Path(text)


_FILESYSTEMS: dict[str, Any] = {}


def filesystem(protocol: str) -> Any:
    """The fsspec file system of a scheme, one per process; its listings are never cached (rank 0 polls them)."""
    if protocol not in _FILESYSTEMS:
        extra, package = BACKENDS.get(protocol, (None, None))
        install = f"pip install 'pag-adm[{extra}]'" if extra else "install fsspec and the scheme's back-end"
        try:
            import fsspec
        except ImportError:
            raise UnsupportedLocation(f"{protocol}:// paths need fsspec and {package or 'a back-end'}: "
                                      f"{install}") from None
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise UnsupportedLocation(f"{protocol}:// is not a storage scheme fsspec knows; use a local path, or an "
                                      "s3://, gs:// or az:// URL") from None
        except ImportError:
            raise UnsupportedLocation(f"{protocol}:// paths need the {package or protocol} package: {install}"
                                      ) from None
        _FILESYSTEMS[protocol] = cls(use_listings_cache=False)
    return _FILESYSTEMS[protocol]


def location(path: str | os.PathLike | ObjectPath) -> Path | ObjectPath:
    """A local Path, or an ObjectPath for scheme://bucket/key text (UnsupportedLocation when it cannot be used)."""
    if isinstance(path, ObjectPath):
        return path
    text = os.fspath(path)
    found = _URL.match(text) if isinstance(text, str) else None
    if found is None:
        return Path(text)
    protocol = found.group(1).lower()
    filesystem(protocol)  # an unusable scheme is refused here, before any work
    key = found.group(2).strip("/")
    if not key:
        raise UnsupportedLocation(f"{text} names no bucket; write {protocol}://BUCKET/PATH")
    return ObjectPath(protocol, key)


@dataclass(frozen=True)
class Stat:
    st_size: int
    st_mtime: float


@dataclass(frozen=True)
class ObjectPath:
    """`protocol://key` in an object store (key = bucket/prefix/name), with the Path methods the project uses."""

    protocol: str
    key: str

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.key}"

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, other: str | os.PathLike) -> ObjectPath:
        return ObjectPath(self.protocol, f"{self.key}/{os.fspath(other).strip('/')}")

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.protocol, self.key.rsplit("/", 1)[0]) if "/" in self.key else self

    @property
    def bucket(self) -> ObjectPath:
        return ObjectPath(self.protocol, self.key.split("/", 1)[0])

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    @property
    def fs(self) -> Any:
        return filesystem(self.protocol)

    # ------------------------------------------------------------------------------------------------ queries
    def exists(self) -> bool:
        with translated(self):
            return bool(self.fs.exists(self.url))

    def is_file(self) -> bool:
        with translated(self):
            try:
                return self.fs.info(self.url)["type"] == "file"
            except FileNotFoundError:
                return False

    def is_dir(self) -> bool:
        with translated(self):
            return bool(self.fs.isdir(self.url))

    def stat(self) -> Stat:
        with translated(self):
            info = self.fs.info(self.url)
            if info.get("type") != "file":
                raise FileNotFoundError(errno.ENOENT, "no such object", self.url)
            return Stat(int(info.get("size") or 0), self.fs.modified(self.url).timestamp())

    # ------------------------------------------------------------------------------------------------ reading
    def open(self, mode: str = "rb") -> IO[bytes]:
        """A seekable binary reader (ranged requests); writing goes through write_atomic, never a half object."""
        if mode != "rb":
            raise ValueError(f"{self.url}: objects are opened for reading only (mode 'rb'), got {mode!r}")
        with translated(self):
            return self.fs.open(self.url, "rb")

    def read_bytes(self) -> bytes:
        with translated(self):
            return bytes(self.fs.cat_file(self.url))

    def read_text(self) -> str:
        return self.read_bytes().decode()

    # ------------------------------------------------------------------------------------------------ writing
    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Object stores have no directories; check instead that the bucket exists and these credentials see it."""
        with translated(self):
            try:
                self.fs.info(self.bucket.url)
            except FileNotFoundError:
                raise StorageError(errno.ENOENT, f"bucket {self.bucket} does not exist (or these credentials "
                                   "cannot see it); create it or choose another path") from None

    def write_bytes(self, data: bytes) -> None:
        """One upload: the object appears whole or not at all."""
        with translated(self):
            self.fs.pipe_file(self.url, data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_atomic(self, write_fn: Callable[[IO[bytes]], object]) -> None:
        """write_fn(binary file) into a local temporary file, then one upload of it; nothing is uploaded on failure.

        The temporary lives in the system's temp directory (TMPDIR), so it needs local disk for the file's size.
        """
        fd, tmp = tempfile.mkstemp(prefix="pag-adm-", suffix=f".{self.name}")
        try:
            with os.fdopen(fd, "wb") as fh:
                write_fn(fh)
            with translated(self):
                self.fs.put_file(tmp, self.url)
        finally:
            os.unlink(tmp)

    def unlink(self, missing_ok: bool = False) -> None:
        with translated(self):
            try:
                self.fs.rm_file(self.url)
            except FileNotFoundError:
                if not missing_ok:
                    raise


Location = Path | ObjectPath  # what `location` returns: a local path or an object in a store


def _credential_problem(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return "credential" in text or "unauthenticated" in text or "authentication" in text


@contextmanager
def translated(path: ObjectPath) -> Iterator[None]:
    """Turn a back-end's exception into StorageError with one sentence; missing objects stay FileNotFoundError."""
    scheme = BACKENDS.get(path.protocol, (path.protocol, None))[0]
    hint = CREDENTIALS.get(scheme, f"configure credentials for {path.protocol}://")
    try:
        yield
    except (FileNotFoundError, StorageError, UnsupportedLocation):
        raise
    except PermissionError as err:
        raise StorageError(errno.EACCES, f"access to {path} was denied ({err}); {hint} for an identity allowed to "
                           "use it, or choose another path") from None
    except Exception as err:
        if _credential_problem(err):
            raise StorageError(errno.EACCES, f"no usable credentials for {path} ({type(err).__name__}: {err}); "
                               f"{hint}") from None
        if "connect" in type(err).__name__.lower() or isinstance(err, ConnectionError):
            raise StorageError(errno.EHOSTUNREACH, f"cannot reach the {path.protocol}:// endpoint for {path} "
                               f"({type(err).__name__}: {err}); check the network, or the endpoint setting "
                               "(AWS_ENDPOINT_URL for S3-compatible stores)") from None
        raise StorageError(errno.EIO, f"{path} failed in the {path.protocol}:// back-end "
                           f"({type(err).__name__}: {err}); check the path and run the command again") from None


def files(directory: Path | ObjectPath) -> list[Path | ObjectPath]:
    """The plain files directly in `directory` (one listing request for a store); [] when it does not exist."""
    if isinstance(directory, ObjectPath):
        with translated(directory):
            try:
                entries = directory.fs.ls(directory.url, detail=True)
            except FileNotFoundError:
                return []
        return [ObjectPath(directory.protocol, entry["name"].split("://", 1)[-1].strip("/"))
                for entry in entries if entry.get("type") == "file"]
    if not directory.is_dir():
        return []
    return [Path(entry.path) for entry in os.scandir(directory) if entry.is_file()]


def move(source: Path | ObjectPath, target: Path | ObjectPath) -> None:
    """Rename locally; in a store copy then delete (readers see the old name, or both, never a partial object).
    FileNotFoundError when `source` is gone (e.g. another rank moved it first)."""
    if isinstance(source, ObjectPath):
        with translated(source):
            source.fs.mv(source.url, str(target))
    else:
        os.replace(source, target)


def cache_dir() -> Path:
    """Where local copies of remote inputs live: $PAG_ADM_CACHE/objects, else ~/.cache/pag-adm/objects."""
    return Path(os.environ.get("PAG_ADM_CACHE", Path.home() / ".cache" / "pag-adm")) / "objects"


def local_copy(path: Path | ObjectPath, cache_dir: Path) -> Path:
    """A local file with the content of `path` (itself when local): a remote object is downloaded once into
    `cache_dir` and downloaded again only when the object changes (its size, time or ETag)."""
    if not isinstance(path, ObjectPath):
        return path
    with translated(path):
        info = path.fs.info(path.url)
    if info.get("type") != "file":
        raise FileNotFoundError(errno.ENOENT, "no such object", path.url)
    stamp = hashlib.sha256(repr(sorted((k, str(v)) for k, v in info.items())).encode()).hexdigest()
    target = cache_dir / path.protocol / path.key
    sidecar = target.with_name(target.name + ".source")
    if target.is_file() and sidecar.is_file() and sidecar.read_text() == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")  # per process: ranks of one node may race
    try:
        with translated(path):
            path.fs.get_file(path.url, str(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    sidecar.write_text(stamp)
    return target
