"""The sampler: every rank computes its shards, rank 0 then waits for all shards and merges them.

Work split. Shard k covers indices [k * batch_size, (k + 1) * batch_size) clipped to num_samples and belongs to rank
k mod world_size; no rank ever writes inside another rank's shard ranges, so no communication is needed and the split
depends only on the config and the world size. On a restart, a rank reuses the verified shard files that lie in its
ranges (from any earlier batch size or sample count), moves corrupt ones to shards/corrupt/, deletes leftover
temporaries and computes only the gaps. Rank 0 polls the shard directory (one tqdm bar over all ranks) until every
index below num_samples is covered, then merges; it gives up when no shard has appeared for wait_timeout_s or another
rank reported a failure in logs/rank{r}.error.

Object stores. out_dir may be an s3://, gs:// or az:// URL (guided_diffusion.storage): shards, the manifest, the
merged file and the failure files are single uploads, so they appear whole or not at all. Rank 0 lists shards/ and
logs/ every POLL_S seconds while shards arrive and backs off, doubling up to REMOTE_MAX_POLL_S, while none does.
Each rank logs to a local file (in TMPDIR) that is uploaded to logs/rank{r}.log when it ends.

Computation. The network and the diffusion always run on the micro-batch [m * micro_batch, (m + 1) * micro_batch)
holding the samples, whatever the shard boundaries (see sampling.rng for why); samples outside the shard's range are
computed for shape's sake and dropped.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from guidance.build import CONFIG_RULES as GUIDANCE_RULES
from guidance.build import is_stochastic, set_generators, set_samples
from guided_diffusion.checkpoints import CheckpointError
from guided_diffusion.diffusion import GaussianDiffusion, quantize_uint8
from guided_diffusion.layout import memory_format_name
from guided_diffusion.storage import Location, ObjectPath, StorageError, files, location

from . import manifest as mf
from .allocator import keep_freed_memory
from .config import group_keys, sample_schema
from .dist import DEVICES, RankInfo, discover, select_device
from .errors import ConfigError, SamplingError
from .inverse import CONFIG_RULES as INVERSE_RULES
from .inverse import InverseProblem, inverse_problem
from .merge import check_merged, merge_shards
from .models import (
    CONFIG_RULES as MODEL_RULES,
)
from .models import (
    checkpoint_path,
    classifier_fn,
    compile_model,
    load_model,
    make_diffusion,
    model_precision,
    sampling_network,
)
from .png import export_pngs, remove_png_temp_files
from .rng import LABEL_PROTOCOLS, MicroBatchStreams
from .schema import check_config
from .shards import (
    CorruptShard,
    ShardRef,
    coverage,
    gaps,
    list_shards,
    quarantine,
    read_shard,
    remove_temp_files,
    write_shard,
)

LOG = logging.getLogger("sampling")
MAX_SAMPLES = 9_999_999  # shard names hold 7 digits
POLL_S = 2.0
REMOTE_MAX_POLL_S = 30.0  # an object store's listing is polled at most this seldom while no shard arrives


# ------------------------------------------------------------------------------------------------------ validation
# Ranges and choices of the top-level keys (their types come from the YAML files; sampling.schema).
CONFIG_RULES = {
    "num_samples": {"min": 1, "max": MAX_SAMPLES},
    "batch_size": {"min": 1},
    "micro_batch": {"min": 1},
    "seed": {"min": 0},
    "cpu_threads": {"min": 1},
    "wait_timeout_s": {"above": 0, "type": "float"},  # seconds; the YAML default is a whole number
    "device": {"choices": DEVICES},
    "labels.protocol": {"choices": LABEL_PROTOCOLS},
    "labels.num_classes": {"min": 1},
}


def validate(conf: Mapping[str, Any]) -> None:
    """Reject unknown keys and values of the wrong type or range, then settings that cannot work together, each
    with one sentence naming the keys involved (ConfigError: the scripts exit with status 2)."""
    check_config(conf, sample_schema(), {**CONFIG_RULES, **MODEL_RULES, **GUIDANCE_RULES, **INVERSE_RULES})
    model = conf.get("model")
    if not isinstance(model, Mapping) or "network" not in model:
        raise ConfigError("no model is configured: choose an experiment with +exp=NAME (files in configs/exp/)")
    network = model["network"]
    if network.get("kind") != "unet":
        raise ConfigError(
            f"model {model.get('name')!r} is a {network.get('kind')} network; the sampler needs a diffusion U-Net "
            "(kind unet): choose one of the *_diffusion models"
        )
    if model.get("checkpoint") is None and not isinstance(model.get("init_seed"), int):
        raise ConfigError(f"model {model.get('name')!r} has no checkpoint, so it needs an integer init_seed")
    num_samples, batch_size, micro_batch = conf["num_samples"], conf["batch_size"], conf["micro_batch"]
    if batch_size % micro_batch:
        raise ConfigError(
            f"batch_size ({batch_size}, samples per shard) must be a multiple of micro_batch ({micro_batch}, samples "
            f"per network call); e.g. batch_size={micro_batch * max(1, batch_size // micro_batch)}"
        )
    labels = conf["labels"]
    num_classes = labels["num_classes"]
    if network.get("num_classes") not in (None, num_classes):
        raise ConfigError(
            f"labels.num_classes={num_classes} but the model is conditional on {network['num_classes']} classes; "
            f"set labels.num_classes={network['num_classes']}"
        )
    if labels["protocol"] == "balanced" and num_samples % num_classes:
        raise ConfigError(
            f"labels.protocol=balanced gives every class num_samples / {num_classes} samples, so num_samples must be "
            f"a multiple of {num_classes}, got {num_samples}"
        )
    sampler = conf["sampler"]
    if float(sampler.get("eta", 0.0)) != 0.0 and not sampler["use_ddim"]:
        raise ConfigError(
            f"sampler.eta={sampler['eta']} only applies to DDIM, but sampler.use_ddim is false; use a DDIM sampler "
            "(e.g. sampler=ddim25) or drop the eta override"
        )
    for group in ("guidance", "classifier"):
        choice = conf[group].get("name", "none")
        stray = sorted(set(conf[group]) - (group_keys(group, choice) or set(conf[group])))
        if stray:
            raise ConfigError(
                f"{group}={choice} does not use {', '.join(f'{group}.{key}' for key in stray)} (set for another "
                f"{group}, e.g. by the experiment); remove it with {' '.join(f'~{group}.{key}' for key in stray)}"
            )
    if conf["guidance"].get("name") == "autoguidance" and not isinstance(conf["guidance"].get("weak_model"), Mapping):
        raise SamplingError(
            "guidance=autoguidance needs a weak model: add `- /model@guidance.weak_model: NAME` (a configs/model "
            "file) to the exp's defaults list"
        )
    inverse = conf.get("inverse") or {}
    if inverse.get("name", "none") != "none":
        if sampler["use_ddim"]:
            raise ConfigError("inverse=dps corrects DDPM ancestral steps, but sampler.use_ddim is true; choose a "
                                "DDPM sampler (the paper's: sampler=ddpm1000)")
        if conf["guidance"].get("name", "none") not in ("none", "pag"):
            raise ConfigError(f"inverse=dps runs with guidance=none or guidance=pag, not {conf['guidance']['name']}")
    classifier = conf["classifier"]
    if classifier.get("name", "none") != "none":
        size = classifier["model"]["network"]["image_size"]
        if size != network["image_size"]:
            raise ConfigError(
                f"classifier={classifier['name']} judges {size}x{size} images but the model makes "
                f"{network['image_size']}x{network['image_size']}; choose the classifier of that size"
            )


# ------------------------------------------------------------------------------------------------------ file system
_HINTS = {
    errno.ENOSPC: "free disk space or choose another out_dir=...",
    errno.EDQUOT: "free quota or choose another out_dir=...",
    errno.EROFS: "the file system is read-only: choose another out_dir=...",
    errno.EACCES: "make it writable or choose another out_dir=...",
    errno.EPERM: "make it writable or choose another out_dir=...",
}


@contextmanager
def writing(what: str, where: Location, resumable: bool = True) -> Iterator[None]:
    """Turn a failed write into one sentence; the atomic writers leave no partial file behind."""
    tail = "; finished shards are kept and the same command resumes from them" if resumable else ""
    try:
        yield
    except StorageError as err:  # its sentence already says what to do
        raise SamplingError(f"cannot write {what} in {where}: {err}{tail}") from None
    except OSError as err:
        if isinstance(err, FileNotFoundError | IsADirectoryError | NotADirectoryError) or err.errno not in _HINTS:
            hint = "check the path and choose a writable out_dir=..."
        else:
            hint = _HINTS[err.errno]
        raise SamplingError(f"cannot write {what} in {where} ({err.strerror or err}); {hint}{tail}") from None


@dataclass
class Layout:
    out_dir: Location
    shard_dir: Location
    png_dir: Location
    log_dir: Location

    @classmethod
    def of(cls, out_dir: str | Path | ObjectPath) -> Layout:
        try:
            out = location(out_dir)
        except ValueError as err:  # a URL whose scheme is unknown or whose back-end is not installed
            raise SamplingError(f"out_dir={out_dir}: {err}") from None
        return cls(out, out / "shards", out / "png", out / "logs")

    @property
    def remote(self) -> bool:
        return isinstance(self.out_dir, ObjectPath)

    def error_marker(self, rank: int) -> Location:
        return self.log_dir / f"rank{rank}.error"

    def log_file(self, rank: int) -> Path:
        """Where this rank's logging handler writes: logs/rank{r}.log, or a local stand-in for a store (a log
        cannot be appended to an object), seeded from the stored log so launches keep adding to one file."""
        if not isinstance(self.log_dir, ObjectPath):
            return self.log_dir / f"rank{rank}.log"
        key = hashlib.sha256(str(self.out_dir).encode()).hexdigest()[:16]
        local = Path(tempfile.gettempdir()) / "pag-adm-logs" / key / f"rank{rank}.log"
        local.parent.mkdir(parents=True, exist_ok=True)
        stored = self.log_dir / f"rank{rank}.log"
        local.write_bytes(stored.read_bytes() if stored.exists() else b"")
        return local

    def upload_log(self, rank: int, local: Path) -> None:
        """Copy a store run's local log to logs/rank{r}.log (nothing to do for a local run)."""
        if isinstance(self.log_dir, ObjectPath):
            try:
                (self.log_dir / f"rank{rank}.log").write_bytes(local.read_bytes())
            except OSError as err:
                print(f"warning: rank {rank}'s log stays in {local}: {err}", file=sys.stderr)


def next_poll(delay: float, changed: bool, base: float, remote: bool) -> float:
    """Seconds until rank 0 looks again: `base` locally and whenever shards arrived; in a store, doubling up to
    REMOTE_MAX_POLL_S while nothing changes (listings are requests, billed and rate-limited)."""
    if changed or not remote:
        return base
    return min(2 * delay, max(base, REMOTE_MAX_POLL_S))


class _TqdmHandler(logging.Handler):
    """Console messages that do not break rank 0's progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(layout: Layout, rank: RankInfo, log_file: Path) -> list[logging.Handler]:
    """Everything (per shard: DEBUG) to `log_file`; INFO to the console on rank 0, warnings on the others."""
    LOG.setLevel(logging.DEBUG)
    LOG.propagate = False
    fmt = logging.Formatter(f"%(asctime)s rank{rank.rank} %(levelname)s %(message)s")
    file_handler = logging.FileHandler(log_file)
    console = _TqdmHandler(logging.INFO if rank.is_main else logging.WARNING)
    for handler in (file_handler, console):
        handler.setFormatter(fmt)
        LOG.addHandler(handler)
    return [file_handler, console]


# ------------------------------------------------------------------------------------------------------ sampling
@dataclass
class Sampler:
    """Computes the samples of any index range, always on index-aligned micro-batches."""

    net: nn.Module
    diffusion: GaussianDiffusion
    cond_fn: Callable[..., torch.Tensor] | None
    device: torch.device
    conf: Mapping[str, Any]
    precision: str = "fp32"  # what conf["precision"] resolved to on this device; recorded in every shard
    compiled: bool = False
    memory_format: str = "contiguous"  # the network's layout (speed.memory_format resolved); recorded in every shard
    inverse: InverseProblem | None = None  # DPS: sample i reconstructs ground-truth image i

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.conf["model"]["network"]["image_size"]
        return size, size, self.conf["model"]["network"]["in_channels"]

    def micro_batch(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 NHWC images and int64 labels of samples m * micro_batch ... (m + 1) * micro_batch - 1."""
        conf, size = self.conf, self.conf["micro_batch"]
        height, width, channels = self.image_shape
        streams = MicroBatchStreams(conf["seed"], range(m * size, (m + 1) * size), (channels, height, width),
                                    conf["labels"]["num_classes"], conf["labels"]["protocol"],
                                    perturbation=is_stochastic(conf["guidance"]))
        if streams.perturbation_generators is not None:
            set_generators(self.net, streams.perturbation_generators)
        set_samples(self.net, list(range(m * size, (m + 1) * size)))
        sampler = conf["sampler"]
        net, measurement_fn, labels = self.net, None, streams.labels
        if self.inverse is not None:
            indices = range(m * size, (m + 1) * size)
            net, measurement_fn = self.inverse.term(self.diffusion, self.net, indices, self.device)
            labels = torch.tensor(list(indices))  # the ground-truth image index of every sample
        x = self.diffusion.sample_loop(
            net, (size, channels, height, width), noise=streams.x_T.to(self.device),
            clip_denoised=bool(sampler["clip_denoised"]), cond_fn=self.cond_fn,
            model_kwargs={"y": streams.labels.to(self.device)}, use_ddim=bool(sampler["use_ddim"]),
            eta=float(sampler["eta"]), noise_fn=lambda like: streams.noise().to(like.device),
            measurement_fn=measurement_fn,
        )
        return quantize_uint8(x).cpu().numpy(), labels.numpy().astype(np.int64)

    def sample(self, start: int, end: int, on_micro_batch: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray]:
        size = self.conf["micro_batch"]
        images, labels = [], []
        for m in range(start // size, (end - 1) // size + 1):
            batch_images, batch_labels = self.micro_batch(m)
            lo, hi = max(start - m * size, 0), min(end - m * size, size)
            images.append(batch_images[lo:hi])
            labels.append(batch_labels[lo:hi])
            on_micro_batch(hi - lo)
        return np.concatenate(images), np.concatenate(labels)


def build_sampler(conf: Mapping[str, Any], device: torch.device, compile_network: bool = True
                  ) -> tuple[nn.Module, Sampler]:
    """The diffusion network of `conf` and the Sampler around it (guider, classifier gradient, precision), on
    `device`; `speed.compile` applies only with compile_network. Bad settings raise ValueError naming the key."""
    precision = str(conf.get("precision", "auto"))
    speed = conf.get("speed") or {}
    memory_format = str(speed.get("memory_format", "auto"))
    model = load_model(conf["model"], conf["paths"]["checkpoints"], device, precision, memory_format)
    compiled = compile_network and bool(speed.get("compile"))
    if compiled:
        compile_model(model, speed)
    diffusion = make_diffusion(conf["model"], conf["sampler"])
    weak_cfg = conf["guidance"].get("weak_model")  # autoguidance: a second, weaker network of the same kind
    weak = load_model(weak_cfg, conf["paths"]["checkpoints"], device, precision, memory_format) if weak_cfg else None
    net = sampling_network(model, diffusion, conf["guidance"], weak)
    cond_fn = classifier_fn(conf["classifier"], conf["paths"]["checkpoints"], device, precision)
    return model, Sampler(net, diffusion, cond_fn, device, conf, model_precision(model), compiled,
                          memory_format_name(model), inverse_problem(conf))


class Progress:
    """Rank 0's bar over all ranks: samples in shard files (polled) plus its own samples in flight. In an object
    store the shard listing is taken from the wait loop, or at most every POLL_S seconds, never per micro-batch."""

    def __init__(self, shard_dir: Location, num_samples: int, enabled: bool):
        self.shard_dir, self.num_samples = shard_dir, num_samples
        self.in_flight = 0
        self.list_every = POLL_S if isinstance(shard_dir, ObjectPath) else 0.0
        self._listed_at, self._stored = -math.inf, 0
        self.bar = tqdm(total=num_samples, initial=self._on_disk(), unit="img", desc="sampling", disable=not enabled,
                        dynamic_ncols=True, smoothing=0.05)

    def _on_disk(self, refs: list[ShardRef] | None = None) -> int:
        if refs is None and time.monotonic() - self._listed_at < self.list_every:
            return self._stored
        refs = list_shards(self.shard_dir) if refs is None else refs
        self._listed_at = time.monotonic()
        self._stored = sum(max(0, min(ref.end, self.num_samples) - ref.start) for ref in refs)
        return self._stored

    def refresh(self, refs: list[ShardRef] | None = None) -> None:
        """Update the bar; `refs`: a listing just taken, so none is taken again."""
        count = min(self._on_disk(refs) + self.in_flight, self.num_samples)
        if count > self.bar.n:
            self.bar.update(count - self.bar.n)

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------------------------------------------ the run
class Run:
    """One rank's part of a sampling run over `conf` (a plain, resolved config mapping)."""

    def __init__(self, conf: Mapping[str, Any], rank: RankInfo, poll_s: float = POLL_S):
        validate(conf)
        self.conf, self.rank, self.poll_s = conf, rank, poll_s
        self.layout = Layout.of(conf["out_dir"])
        self.num_samples, self.batch_size = conf["num_samples"], conf["batch_size"]
        size = conf["model"]["network"]["image_size"]
        self.image_shape = (size, size, conf["model"]["network"]["in_channels"])
        self.config_hash = mf.config_hash(conf)
        self.started = time.time()

    # -------------------------------------------------------------------------------- preparation
    def prepare(self) -> dict | None:
        """Check inputs and the run directory before any work; return the manifest of an earlier launch, if any."""
        conf, layout = self.conf, self.layout
        if conf["model"].get("checkpoint") is not None:
            checkpoint_path(conf["model"]["checkpoint"], conf["paths"]["checkpoints"])
        if conf["classifier"].get("name", "none") != "none":
            checkpoint_path(conf["classifier"]["model"]["checkpoint"], conf["paths"]["checkpoints"])
        with writing("the run directory", layout.out_dir, resumable=False):
            for directory in (layout.out_dir, layout.shard_dir, layout.log_dir):
                directory.mkdir(parents=True, exist_ok=True)
        manifest = mf.read_manifest(layout.out_dir)
        if manifest is None or manifest["config_hash"] == self.config_hash:
            return manifest
        if list_shards(layout.shard_dir) or manifest.get("merged"):
            mf.check_resume(manifest, conf, self.config_hash, layout.out_dir)
        return None  # an earlier launch with another config finished nothing: its manifest is replaced

    def record_launch(self, manifest: dict | None, device: torch.device) -> dict:
        manifest = manifest or mf.new_manifest(self.conf, self.config_hash)
        manifest["num_samples"] = self.num_samples
        manifest["config"] = dict(self.conf)
        manifest["runs"].append(mf.run_record(self.rank.world_size, self.rank.launcher, device, self.conf))
        with writing("manifest.json", self.layout.out_dir):
            mf.write_manifest(self.layout.out_dir, manifest)
        return manifest

    def finished(self, manifest: Mapping[str, Any] | None) -> Location | None:
        """The merged file of this sample count, when an earlier launch already wrote it."""
        return mf.merged_file(manifest, self.layout.out_dir, self.num_samples)

    # -------------------------------------------------------------------------------- own shards
    def owned_ranges(self) -> Iterator[tuple[int, int]]:
        count = math.ceil(self.num_samples / self.batch_size)
        for k in range(self.rank.rank, count, self.rank.world_size):
            yield k * self.batch_size, min((k + 1) * self.batch_size, self.num_samples)

    def _verified(self, refs: list[ShardRef], lo: int, hi: int) -> list[ShardRef]:
        """Existing shards overlapping [lo, hi) that verify; bad ones are moved aside."""
        good = []
        for ref in refs:
            if ref.start >= hi or ref.end <= lo or not ref.path.exists():
                continue
            try:
                shard = read_shard(ref, self.config_hash, self.image_shape)
            except CorruptShard as err:
                moved = quarantine(ref.path)
                LOG.warning("shard %s %s; moved to %s, recomputing its samples", ref.path.name, err, moved)
                continue
            good.append(ref)
            if self.conf["save_png"]:
                a, b = max(lo, shard.start), min(hi, shard.end)
                with writing("PNG files", self.layout.png_dir):
                    export_pngs(self.layout.png_dir, a, shard.images[a - shard.start:b - shard.start],
                                shard.labels[a - shard.start:b - shard.start])
        return good

    def sample_own_shards(self, sampler: Sampler, progress: Progress | None) -> int:
        layout, computed = self.layout, 0
        existing = list_shards(layout.shard_dir)

        def advance(count: int) -> None:
            if progress is not None:
                progress.in_flight += count
                progress.refresh()

        for lo, hi in self.owned_ranges():
            with writing("shards", layout.shard_dir):
                remove_temp_files(layout.shard_dir, lo, hi)
                remove_png_temp_files(layout.png_dir, lo, hi)
            done = self._verified(existing, lo, hi)
            for start, end in gaps(lo, hi, [(ref.start, ref.end) for ref in done]):
                images, labels = sampler.sample(start, end, advance)
                meta = {"config_hash": self.config_hash, "seed": self.conf["seed"], "start": start, "end": end,
                        "micro_batch": self.conf["micro_batch"], "device": sampler.device.type,
                        "precision": sampler.precision, "compiled": sampler.compiled,
                        "memory_format": sampler.memory_format,
                        "rank": self.rank.rank, "world_size": self.rank.world_size, "torch": torch.__version__}
                with writing("shards", layout.shard_dir):
                    path = write_shard(layout.shard_dir, start, images, labels, meta)
                if progress is not None:
                    progress.in_flight -= end - start
                if self.conf["save_png"]:
                    with writing("PNG files", layout.png_dir):
                        export_pngs(layout.png_dir, start, images, labels)
                LOG.debug("wrote %s", path.name)
                computed += end - start
        return computed

    # -------------------------------------------------------------------------------- rank 0: wait and merge
    def _failed_ranks(self) -> list[str]:
        """What the other ranks' failure files written since this launch say (one listing of logs/)."""
        present = {path.name for path in files(self.layout.log_dir)}
        failures = []
        for rank in range(1, self.rank.world_size):
            marker = self.layout.error_marker(rank)
            if marker.name not in present:
                continue
            try:
                if marker.stat().st_mtime >= self.started - 1:
                    failures.append(f"rank {rank}: {marker.read_text().strip()}")
            except FileNotFoundError:
                continue
        return failures

    def wait_for_shards(self, progress: Progress | None) -> list[ShardRef]:
        timeout = float(self.conf["wait_timeout_s"])
        last_missing, last_change, delay = None, time.monotonic(), self.poll_s
        while True:
            refs = list_shards(self.layout.shard_dir)
            _, missing = coverage(refs, self.num_samples)
            if not missing:
                return refs
            failures = self._failed_ranks()
            if failures:
                raise SamplingError(
                    f"{'; '.join(failures)}; fix that and run the same command again: finished shards are kept"
                )
            changed = missing != last_missing
            delay = next_poll(delay, changed, self.poll_s, self.layout.remote)
            if changed:
                last_missing, last_change = missing, time.monotonic()
            elif time.monotonic() - last_change > timeout:
                owners = sorted({k % self.rank.world_size for a, b in missing
                                 for k in range(a // self.batch_size, (b - 1) // self.batch_size + 1)})
                raise SamplingError(
                    f"no new shard for {timeout:.0f} s (wait_timeout_s) while indices {missing[0][0]}.. are missing; "
                    f"rank(s) {owners} may have died (see {self.layout.log_dir}); run the same command again to "
                    "resume"
                )
            if progress is not None:
                progress.refresh(refs)
            time.sleep(delay)

    def merge(self, refs: list[ShardRef], manifest: dict) -> Location:
        with writing("the merged file", self.layout.out_dir):
            record = merge_shards(self.layout.out_dir, self.layout.shard_dir, refs, self.num_samples,
                                  self.config_hash, self.image_shape)
        path = self.layout.out_dir / record["file"]
        check_merged(path, self.num_samples, self.image_shape)
        devices = {shard["device"] for shard in record["shards"]}
        if len(devices) > 1:
            LOG.warning("shards were computed on %s: float results can differ between device types",
                        sorted(devices))
        with writing("shards", self.layout.shard_dir):
            remove_temp_files(self.layout.shard_dir, 0, MAX_SAMPLES + 1)
        manifest["merged"] = [m for m in manifest.get("merged", []) if m["num_samples"] != self.num_samples]
        manifest["merged"].append(record)
        with writing("manifest.json", self.layout.out_dir):
            mf.write_manifest(self.layout.out_dir, manifest)
        return path


def _configure_torch(conf: Mapping[str, Any], device: torch.device) -> None:
    if conf.get("cpu_threads") is not None:
        torch.set_num_threads(int(conf["cpu_threads"]))
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def run(conf: Mapping[str, Any], rank: RankInfo | None = None, poll_s: float = POLL_S) -> Location | None:
    """Sample this rank's shards; on rank 0 also wait for every shard and merge. Returns the merged file on rank 0."""
    rank = discover() if rank is None else rank
    with _store_errors():
        return _run(conf, rank, poll_s)


@contextmanager
def _store_errors() -> Iterator[None]:
    """An object store that failed outside a write (listing, reading) becomes one sentence."""
    try:
        yield
    except StorageError as err:
        raise SamplingError(f"{err}; finished shards are kept and the same command resumes from them") from None


def _run(conf: Mapping[str, Any], rank: RankInfo, poll_s: float) -> Location | None:
    job = Run(conf, rank, poll_s)
    manifest = job.prepare()
    layout = job.layout
    log_file = layout.log_file(rank.rank)
    handlers = _setup_logging(layout, rank, log_file)
    marker = layout.error_marker(rank.rank)
    try:
        marker.unlink(missing_ok=True)
        done = job.finished(manifest)
        if done is not None:
            LOG.info("already complete: %s (delete it or use scripts/merge.py to merge again)", done)
            return done if rank.is_main else None
        device = select_device(str(conf["device"]), rank.local_rank)
        _configure_torch(conf, device)
        try:
            _, sampler = build_sampler(conf, device)
            if sampler.inverse is not None:
                sampler.inverse.check_count(job.num_samples)
        except CheckpointError:
            raise
        except ValueError as err:  # the builders' messages name the bad key and the valid choices
            raise SamplingError(f"invalid configuration: {err}") from None
        if rank.is_main:
            manifest = job.record_launch(manifest, device)
        LOG.info("rank %d of %d (%s) on %s; out_dir %s; config hash %s", rank.rank, rank.world_size, rank.launcher,
                 device, layout.out_dir, job.config_hash[:12])
        progress = Progress(layout.shard_dir, job.num_samples, bool(conf["progress"])) if rank.is_main else None
        try:
            computed = job.sample_own_shards(sampler, progress)
            LOG.info("computed %d samples on this rank", computed)
            if not rank.is_main:
                return None
            refs = job.wait_for_shards(progress)
        finally:
            if progress is not None:
                progress.close()
        path = job.merge(refs, manifest)
        LOG.info("merged %d samples into %s", job.num_samples, path)
        if sampler.inverse is not None:
            with writing("the reconstructions file", layout.out_dir):
                outputs = sampler.inverse.write_outputs(layout.out_dir, path, job.num_samples)
            LOG.info("reconstructions, measurements, ground truths and image ids in %s", outputs)
        return path
    except Exception as err:
        if not rank.is_main:
            try:
                marker.write_text(f"{type(err).__name__}: {err}\n")
            except OSError:
                pass
        raise
    finally:
        for handler in handlers:
            LOG.removeHandler(handler)
            handler.close()
        layout.upload_log(rank.rank, log_file)


def remerge(out_dir: str | Path | ObjectPath, num_samples: int | None = None) -> Location:
    """Merge the shards of a run directory again (scripts/merge.py), using its manifest's config and sample count."""
    with _store_errors():
        return _remerge(Layout.of(out_dir), num_samples)


def _remerge(layout: Layout, num_samples: int | None) -> Location:
    manifest = mf.read_manifest(layout.out_dir)
    if manifest is None:
        raise SamplingError(f"{layout.out_dir} has no manifest.json: it is not a sampler run directory")
    conf = {**manifest["config"], "out_dir": str(layout.out_dir)}
    if num_samples is not None:
        conf["num_samples"] = num_samples
    job = Run(conf, RankInfo(0, 1, 0, "merge"))
    if job.config_hash != manifest["config_hash"]:
        raise SamplingError(f"{layout.out_dir}/manifest.json is inconsistent (its config does not hash to its "
                            "config_hash); it was edited by hand")
    refs = list_shards(layout.shard_dir)
    _, missing = coverage(refs, job.num_samples)
    if missing:
        have = sum(b - a for a, b in gaps(0, job.num_samples, missing))
        raise SamplingError(
            f"{layout.shard_dir} covers {have} of {job.num_samples} samples (first missing index {missing[0][0]}); "
            "run the sampler again with the same config to finish them, or pass --num-samples to merge fewer"
        )
    return job.merge(refs, manifest)

