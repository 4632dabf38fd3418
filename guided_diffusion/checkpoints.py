"""Official ADM / IDDPM checkpoints: registry, resumable sha256-checked download, strict loading with clear errors.

    python -m guided_diffusion.checkpoints list [--dir models]
    python -m guided_diffusion.checkpoints download NAME... | all [--dir models]
    python -m guided_diffusion.checkpoints verify NAME... | all [--dir models]

The registry (`checkpoint_registry.py`) keeps upstream's flags; the network and diffusion specs are translated from
them by `factory.py`, the same translation the model configs (configs/model/*.yaml) are tested against.

Loading accepts a plain state dict. Two common wrappings are undone automatically because they are unambiguous: a dict
holding exactly one nested state dict (e.g. {"state_dict": ...} or {"model": ...}), and the `module.` /
`_orig_mod.` key prefixes that DistributedDataParallel and torch.compile add. Everything else that does not fit
raises a CheckpointError whose message is one sentence: what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import difflib
import pickle
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn

from .checkpoint_registry import CHECKPOINTS
from .factory import build_network, classifier_spec_from_flags, diffusion_spec_from_flags, unet_spec_from_flags
from .fileio import DownloadError, DownloadInterrupted, DownloadMismatch, atomic_write, file_sha256
from .fileio import download as download_file
from .storage import local_path

DEFAULT_DIR = "models"
CLI = "python -m guided_diffusion.checkpoints"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_KIND_WORDS = {
    "classifier": "a noisy-image classifier",
    "upsampler": "a super-resolution (upsampler) model (its input conv takes 6 channels)",
    "diffusion": "a diffusion model",
}


class CheckpointError(ValueError):
    """A checkpoint name, file or download is unusable; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """One official checkpoint (see checkpoint_registry.py for the meaning of the fields)."""

    name: str
    url: str
    family: str
    kind: str
    description: str
    num_params: int
    num_state_dict_keys: int
    flags: Mapping[str, Any] = field(repr=False)
    sha256: str | None = None
    size: int | None = None
    classifier: str | None = None
    classifier_scale: float | None = None
    manual_download: bool = False

    @property
    def filename(self) -> str:
        return f"{self.name}.pt"


REGISTRY: dict[str, Checkpoint] = {
    name: Checkpoint(name=name, **{**entry, "flags": MappingProxyType(dict(entry["flags"]))})
    for name, entry in CHECKPOINTS.items()
}


# ---------------------------------------------------------------------------------------------------------------------
# Registry look-ups and model construction


def checkpoint_info(name: str) -> Checkpoint:
    """The registry entry of an official checkpoint; an unknown name raises with the closest known one."""
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, list(REGISTRY), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise CheckpointError(f"unknown checkpoint '{name}'; {hint}known: {', '.join(REGISTRY)}")


def network_spec(name: str) -> dict:
    """The network spec (kind + every constructor argument) of an official checkpoint, from its upstream flags."""
    info = checkpoint_info(name)
    if info.kind == "classifier":
        return classifier_spec_from_flags(info.flags)
    return unet_spec_from_flags(info.flags, family=info.family)


def diffusion_spec(name: str) -> dict:
    """create_diffusion's arguments (minus respacing) for an official diffusion model or upsampler."""
    info = checkpoint_info(name)
    if info.kind == "classifier":
        raise CheckpointError(f"'{name}' is a classifier and has no diffusion; use the diffusion model's schedule")
    return diffusion_spec_from_flags(info.flags)


def build_model(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The (untrained) network of an official checkpoint; on the meta device by default, which costs no memory."""
    with torch.device(device):
        return build_network(network_spec(name))


def _resolve(name_or_spec: str | Mapping[str, Any]) -> tuple[str | None, dict]:
    if isinstance(name_or_spec, str):
        return name_or_spec, network_spec(name_or_spec)
    return None, dict(name_or_spec)


# ---------------------------------------------------------------------------------------------------------------------
# Reading a file into a plain state dict


def _download_hint(name: str | None, directory: Path) -> str:
    if name is None:
        return "replace it with a complete copy"
    return f"delete it and run `{CLI} download {name} --dir {directory}`"


def _corrupt(path: Path, name: str | None) -> CheckpointError:
    size = path.stat().st_size
    if name is not None:
        info = REGISTRY[name]
        # The released files hold float32 weights only, so 4 bytes per parameter is a floor when the size is unknown.
        expected = f"{info.size:,}" if info.size is not None else f"at least {4 * info.num_params:,}"
        sizes = f"{size:,} bytes, expected {expected}"
    else:
        sizes = f"{size:,} bytes"
    return CheckpointError(f"{path} is truncated or corrupt ({sizes}); {_download_hint(name, path.parent)}")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def read_state_dict(path: str | Path, name: str | None = None) -> dict[str, torch.Tensor]:
    """Load `path` as a plain state dict (weights_only), unwrapping the unambiguous wrappings the module doc lists.

    `name` (a registry name) only sharpens the error messages.
    """
    path = Path(path)
    if not path.is_file():
        fetch = f"run `{CLI} download {name} --dir {path.parent}`" if name else "check the path"
        raise CheckpointError(f"checkpoint file {path} does not exist; {fetch}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as err:
        raise CheckpointError(f"{path} cannot be read ({err.strerror}); check its permissions") from None
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None or not re.fullmatch(r"[A-Za-z_][\w.]*", found.group(1)):
            raise _corrupt(path, name) from None
        raise CheckpointError(
            f"{path} contains a pickled Python object ({found.group(1)}), not a plain state dict; in the code that "
            "saved it, run `torch.save(model.state_dict(), path)` and load that file instead"
        ) from None
    except Exception:  # damaged bytes surface as OSError, EOFError, struct.error, IndexError, UnicodeDecodeError...
        raise _corrupt(path, name) from None
    if _is_state_dict(obj):
        return _strip_wrapper_prefixes(dict(obj))
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a dict of parameter names to tensors); "
            "save `model.state_dict()` instead"
        )
    if {"state", "param_groups"} <= set(obj):
        raise CheckpointError(
            f"{path} is an optimizer state (keys 'state' and 'param_groups'), not model weights; pass the model or "
            "EMA file instead (upstream saves model*.pt and ema_*.pt beside opt*.pt)"
        )
    nested = [key for key, value in obj.items() if _is_state_dict(value)]
    if len(nested) == 1:
        return _strip_wrapper_prefixes(dict(obj[nested[0]]))
    keys = ", ".join(repr(key) for key in list(obj)[:8])
    if nested:
        choice = ", ".join(repr(key) for key in nested)
        raise CheckpointError(
            f"{path} holds several state dicts (under {choice}); save the one you want on its own, e.g. "
            f"`torch.save(torch.load(path)[{nested[-1]!r}], 'weights.pt')`, and load that file"
        )
    raise CheckpointError(f"{path} is a dict but not a state dict (its keys: {keys}); save `model.state_dict()`")


# ---------------------------------------------------------------------------------------------------------------------
# Diagnosing a state dict that belongs to another configuration

Shapes = dict[str, tuple[int, ...]]


def _shapes(state: Mapping[str, torch.Tensor]) -> Shapes:
    return {key: tuple(value.shape) for key, value in state.items()}


@cache
def _registry_shapes(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(_shapes(build_model(name).state_dict()).items())


def _lookalikes(got: Shapes) -> list[str]:
    """Registry entries whose architecture (keys and shapes) equals the file's."""
    return [
        name for name, info in REGISTRY.items()
        if info.num_state_dict_keys == len(got) and dict(_registry_shapes(name)) == got
    ]


def _kind_of(shapes: Shapes) -> str:
    if not any(key.startswith("output_blocks.") for key in shapes):
        return "classifier"
    first = shapes.get("input_blocks.0.0.weight", ())
    return "upsampler" if len(first) > 1 and first[1] == 6 else "diffusion"


def _count(shapes: Shapes, pattern: str) -> int:
    return len({match.group(1) for key in shapes if (match := re.match(pattern, key))})


def _conv_resampling(shapes: Shapes) -> bool:
    return any(key.endswith((".op.weight", ".conv.weight")) for key in shapes)


def _diagnose(got: Shapes, want: Shapes) -> list[str]:
    """Short clauses naming the likely flag differences between a file (got) and a model (want)."""
    kind_got, kind_want = _kind_of(got), _kind_of(want)
    if kind_got != kind_want:
        return [f"the file is {_KIND_WORDS[kind_got]} but the requested model is {_KIND_WORDS[kind_want]}"]
    causes = []
    emb_got, emb_want = got.get("time_embed.0.weight"), want.get("time_embed.0.weight")
    if emb_got and emb_want and emb_got[1] != emb_want[1]:
        causes.append(
            f"num_channels is {emb_got[1]} in the file (time_embed.0.weight {list(emb_got)}) but {emb_want[1]} in the "
            "model"
        )
    if ("label_emb.weight" in got) != ("label_emb.weight" in want):
        causes.append(
            "the file is class-conditional (it has label_emb.weight) but the model is unconditional (class_cond False)"
            if "label_emb.weight" in got
            else "the file is unconditional (no label_emb.weight) but the model is class-conditional (class_cond True)"
        )
    if kind_want != "classifier":
        out_got, out_want = got.get("out.2.weight"), want.get("out.2.weight")
        if out_got and out_want and out_got[0] != out_want[0]:
            causes.append(
                f"the file predicts {out_got[0]} output channels (learn_sigma {out_got[0] == 6}) but the model "
                f"{out_want[0]} (learn_sigma {out_want[0] == 6})"
            )
    if _conv_resampling(got) != _conv_resampling(want):
        iddpm = "conv Downsample/Upsample (`op`/`conv` keys: resblock_updown False, IDDPM style)"
        adm = "ResBlock up/down (resblock_updown True, ADM style)"
        file_way, model_way = (iddpm, adm) if _conv_resampling(got) else (adm, iddpm)
        causes.append(f"the file resamples with {file_way} but the model with {model_way}")
    blocks_got, blocks_want = _count(got, r"input_blocks\.(\d+)\."), _count(want, r"input_blocks\.(\d+)\.")
    if blocks_got != blocks_want:
        causes.append(
            f"the file has {blocks_got} input blocks but the model {blocks_want} "
            "(num_res_blocks, channel_mult or image size differ)"
        )
    attn_got, attn_want = _count(got, r"(.*)\.qkv\.weight$"), _count(want, r"(.*)\.qkv\.weight$")
    if attn_got != attn_want and blocks_got == blocks_want:
        causes.append(
            f"the file has {attn_got} attention blocks but the model {attn_want} (attention_resolutions differ)"
        )
    return causes or [_key_summary(got, want)]


def _key_summary(got: Shapes, want: Shapes) -> str:
    missing = [key for key in want if key not in got]
    unexpected = [key for key in got if key not in want]
    reshaped = [key for key in want if key in got and got[key] != want[key]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} keys missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        key = reshaped[0]
        parts.append(f"{len(reshaped)} with other shapes (e.g. {key}: {list(got[key])} in the file, {list(want[key])} "
                     "in the model)")
    return ", ".join(parts)


def check_fits(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: str | Path,
               target: str | None = None) -> None:
    """Raise a one-sentence diagnosis unless `state` has exactly the keys and shapes of `expected` (dtype is free)."""
    got, want = _shapes(state), _shapes(expected)
    if got == want:
        return
    label = target or "the given network spec"
    message = f"{path} does not fit {label}: " + "; ".join(_diagnose(got, want))
    twins = _lookalikes(got)
    if twins:
        message += f"; this file looks like {' / '.join(twins)}; you asked for {label}"
        message += "; load it under that name (or fix the flags)"
    else:
        message += f"; no official checkpoint has this layout, so check the flags it was trained with (`{CLI} list`)"
    raise CheckpointError(message)


def load_checkpoint(name_or_spec: str | Mapping[str, Any], path: str | Path,
                    device: str | torch.device = "cpu", use_fp16: bool | None = None) -> nn.Module:
    """Build the model (registry name or network spec), load `path` into it strictly and return it in eval mode.

    The model is built on the meta device and the file's tensors are assigned (cast to the model's dtypes first), so
    loading needs the file's memory only, once. A use_fp16 model comes back with its torso in float16, as upstream
    has it after convert_to_fp16(); float16 files load into float32 models by casting. `use_fp16` overrides the
    spec's flag (the sampler's precision: an fp16 checkpoint runs in float32 on the CPU without a rounding trip).
    """
    name, spec = _resolve(name_or_spec)
    if use_fp16 is not None:
        spec["use_fp16"] = use_fp16
    path = Path(path)
    state = read_state_dict(path, name)
    with torch.device("meta"):
        model = build_network(spec)
    expected = model.state_dict()
    check_fits(state, expected, path, name)
    for key, reference in expected.items():
        state[key] = state[key].to(reference.dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------------------------------
# Checksums and download


def sidecar_path(path: str | Path) -> Path:
    """Where the sha256 of a downloaded file is recorded (`NAME.pt.sha256`, sha256sum format)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, digest: str) -> None:
    atomic_write(sidecar_path(path), lambda fh: fh.write(f"{digest}  {path.name}\n".encode()))


def expected_sha256(name: str, path: str | Path) -> tuple[str | None, str]:
    """The sha256 a file must have, and where that comes from: the registry first, else the recorded sidecar."""
    info = checkpoint_info(name)
    if info.sha256:
        return info.sha256, "the registry"
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        return sidecar.read_text().split()[0], f"{sidecar.name} (recorded at the first download)"
    return None, ""


def check_sha256(name: str, path: str | Path) -> str:
    """Verify a finished file's sha256 (never deleting it); with nothing to compare against, record it."""
    path = Path(path)
    digest = file_sha256(path)
    expected, source = expected_sha256(name, path)
    if expected is None:
        _write_sidecar(path, digest)
    elif digest != expected:
        raise CheckpointError(
            f"{path} has sha256 {digest} but {source} says {expected}; the file is corrupt or another version: "
            f"delete it (and a stale {sidecar_path(path).name}) and run `{CLI} download {name} --dir {path.parent}`"
        )
    return digest


def _manual_hint(url: str, name: str, directory: Path) -> str:
    return (f"or download {url} by hand into {directory}/ and run `{CLI} verify {name} --dir {directory}`")


def download(name: str, directory: str | Path = DEFAULT_DIR, url: str | None = None, progress: bool = True) -> Path:
    """Fetch an official checkpoint into `directory/NAME.pt` and verify its sha256; return the path.

    The data goes to `NAME.pt.part` (resumed when present) and is renamed to `NAME.pt` only once complete and
    verified. A finished file that is already there is verified, never replaced. A download whose sha256 differs
    from the expected one is moved aside to `NAME.pt.mismatch`, never accepted. `url` overrides the registry's.
    """
    info = checkpoint_info(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / info.filename
    if final.exists():
        check_sha256(name, final)
        return final
    if info.manual_download and url is None:
        raise CheckpointError(
            f"{name} has no direct download link: fetch {info.filename} by hand from {info.url} into {directory}/ "
            f"and run `{CLI} verify {name} --dir {directory}` (it records the file's sha256 on this first check)"
        )
    url = url or info.url
    expected, source = expected_sha256(name, final)
    try:
        digest = download_file(url, final, expected, info.size, progress, label=name)
    except DownloadMismatch as err:
        who = "the registry" if err.field == "size" else source
        raise CheckpointError(
            f"the download of {name} is not the expected file ({err.problem} according to {who}); it was moved to "
            f"{err.rejected}: delete it and run the command again, or if the server's file changed, delete "
            f"{sidecar_path(final).name} first"
        ) from None
    except DownloadInterrupted as err:
        raise CheckpointError(str(err)) from None
    except DownloadError as err:
        raise CheckpointError(f"{err}, {_manual_hint(url, name, directory)}") from None
    if expected is None:
        _write_sidecar(final, digest)
    return final


def verify(name: str, directory: str | Path = DEFAULT_DIR) -> str:
    """Check a downloaded checkpoint: its sha256, then a strict load into its model on the CPU; return the sha256."""
    path = Path(directory) / checkpoint_info(name).filename
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; run `{CLI} download {name} --dir {directory}`")
    digest = check_sha256(name, path)
    load_checkpoint(name, path, device="cpu")
    return digest


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def _status(directory: Path, info: Checkpoint) -> str:
    final = directory / info.filename
    if final.is_file():
        return "yes"
    part = final.with_name(final.name + ".part")
    return f"partial ({part.stat().st_size:,} B)" if part.is_file() else "no"


def _names(requested: Sequence[str]) -> list[str]:
    # `all`: every checkpoint with a direct link (a manual one is named explicitly once it is in place)
    names = [n for n, i in REGISTRY.items() if not i.manual_download] if "all" in requested else list(requested)
    for name in names:
        checkpoint_info(name)
    return names


def _cmd_list(directory: Path) -> int:
    rows = [("name", "kind", "family", "params", "present", "url")]
    for info in REGISTRY.values():
        params = f"{info.num_params / 1e6:.1f}M"
        rows.append((info.name, info.kind, info.family, params, _status(directory, info), info.url))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    print(f"(present: in {directory}/)")
    return 0


def _cmd_download(names: list[str], directory: Path) -> int:
    for name in names:
        print(f"ok  {download(name, directory)}")
    return 0


def _cmd_verify(names: list[str], directory: Path) -> int:
    failed = 0
    for name in names:
        try:
            digest = verify(name, directory)
        except CheckpointError as err:
            failed += 1
            print(f"FAILED  {name}: {err}", file=sys.stderr)
        else:
            print(f"ok  {name}  sha256 {digest}  (loads strictly into {name})")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m guided_diffusion.checkpoints`."""
    parser = argparse.ArgumentParser(prog=CLI, description="Official ADM / IDDPM checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (
        ("list", "show every official checkpoint and whether it is in --dir"),
        ("download", "download checkpoints (resumable, sha256-verified)"),
        ("verify", "check sha256 and a strict load of downloaded checkpoints"),
    ):
        cmd = sub.add_parser(command, help=help_text)
        if command != "list":
            cmd.add_argument("names", nargs="+", metavar="NAME", help="registry name(s), or 'all'")
        cmd.add_argument("--dir", default=DEFAULT_DIR, type=local_path,
                         help=f"checkpoint directory (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list(args.dir)
        names = _names(args.names)
        if args.command == "download":
            return _cmd_download(names, args.dir)
        return _cmd_verify(names, args.dir)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
