"""Inverse problems in the sampler: ground truths from `data_dir`, per-sample measurements, the DPS term, outputs.

Sample i reconstructs image i of the sorted file list (or of `inverse.file_list`). Its operator parameters and
measurement noise come from stream 2 of sample i (sampling.rng), so a measurement is a pure function of (config,
seed, i, image i) and the reconstructions go through the same sharded, resumable, world-size-invariant runner as
plain samples. After the merge, `reconstructions_NxHxWx3.npz` gathers reconstructions, measurements, ground truths
and image ids (the measurements are recomputed from their streams, never stored in shards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError

from guided_diffusion.diffusion import GaussianDiffusion, quantize_uint8
from guided_diffusion.fileio import atomic_write
from inverse.dps import DPS, NORMS, PlainEps
from inverse.operators import OPERATORS, MotionBlur, Operator, build_operator, measure

from .errors import SamplingError
from .rng import MEASUREMENT_STREAM, sample_generator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Ranges and choices of the inverse keys (their types come from the YAML files; sampling.schema).
CONFIG_RULES = {
    "inverse.eta": {"min": 0.0},
    "inverse.norm": {"choices": NORMS},
    "inverse.sigma_y": {"min": 0.0},
    "inverse.operator.name": {"choices": tuple(OPERATORS)},
    "inverse.operator.kernel": {"choices": MotionBlur.KERNEL_MODES},
}


def image_files(data_dir: str | Path | None, file_list: str | Path | None = None) -> list[Path]:
    """The ground-truth images in sample order: `file_list`'s lines, else every image under data_dir, sorted."""
    if data_dir is None:
        raise SamplingError("an inverse problem needs its ground-truth images: set data_dir=FOLDER")
    root = Path(data_dir)
    if not root.is_dir():
        raise SamplingError(f"data_dir {root} is not a folder of images: set data_dir=FOLDER")
    if file_list is not None:
        return listed_files(root, Path(file_list))
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SamplingError(f"data_dir {root} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    return files


def listed_files(root: Path, file_list: Path) -> list[Path]:
    """The images named by `file_list` (one per line; '#' starts a comment line), in its order.

    A name is a path relative to `root`; a bare file name not found there is looked up anywhere under `root`, so one
    list serves a flat ImageNet validation folder and the one-folder-per-class layout alike.
    """
    try:
        lines = file_list.read_text().splitlines()
    except OSError as err:
        raise SamplingError(f"inverse.file_list {file_list} cannot be read ({err.strerror or err}): set it to a "
                            "text file of image names, one per line, or to null") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    files = [root / name for name in names]
    if not all(f.is_file() for f in files):
        found: dict[str, list[Path]] = {}
        for path in root.rglob("*"):
            found.setdefault(path.name, []).append(path)
        files = [f if f.is_file() or len(found.get(f.name, [])) != 1 else found[f.name][0] for f in files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SamplingError(f"{len(missing)} image(s) of {file_list} are not under {root} (first: {missing[0]}; "
                            "a bare name must match exactly one file there): restore them or remove their lines")
    return files


def load_image(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) in [-1, 1]: RGB, centre-cropped to a square and bicubic-resized when not already size x size."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise SamplingError(f"cannot read ground-truth image {path} ({err}): replace or remove it") from None
    if image.size != (size, size):
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return array / 127.5 - 1.0


class InverseProblem:
    """The run's operator and ground truths; hands the sampler a DPS term for any micro-batch of indices."""

    def __init__(self, conf: Mapping[str, Any], data_dir: str | Path | None, image_size: int, seed: int):
        self.conf, self.image_size, self.seed = conf, int(image_size), int(seed)
        try:
            self.operator: Operator = build_operator(conf["operator"], image_size, run_seed=seed)
        except ValueError as err:
            raise SamplingError(f"invalid inverse.operator: {err}") from None
        self.files = image_files(data_dir, conf.get("file_list"))

    def check_count(self, num_samples: int) -> None:
        if num_samples > len(self.files):
            raise SamplingError(f"num_samples={num_samples} but the data holds {len(self.files)} ground-truth "
                                f"images (sample i reconstructs image i): lower num_samples or add images")

    def truths(self, indices: Sequence[int]) -> torch.Tensor:
        """Images of the indices; indices past the data (padding of a last micro-batch) wrap around."""
        return torch.stack([load_image(self.files[i % len(self.files)], self.image_size) for i in indices])

    def measurements(self, indices: Sequence[int], truths: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        generators = [sample_generator(self.seed, i, MEASUREMENT_STREAM) for i in indices]
        params = self.operator.draw(generators)
        return measure(self.operator, truths, params, float(self.conf["sigma_y"]), generators), params

    def term(self, diffusion: GaussianDiffusion, net: nn.Module, indices: Sequence[int], device: torch.device
             ) -> tuple[nn.Module, DPS]:
        """The network to sample with (it keeps the plain eps for x0-hat) and the DPS term of these indices."""
        y, params = self.measurements(indices, self.truths(indices))
        plain = PlainEps(net)
        dps = DPS(diffusion, self.operator, y.to(device), {k: v.to(device) for k, v in params.items()},
                  float(self.conf["eta"]), str(self.conf["norm"]), plain=plain)
        return plain, dps

    def ids(self, num_samples: int) -> list[str]:
        return [str(path.name) for path in self.files[:num_samples]]

    def write_outputs(self, out_dir: Path, merged: Path, num_samples: int) -> Path:
        """reconstructions_NxHxWx3.npz: reconstructions, measurements (float16), truths, ids, indices (atomic)."""
        with np.load(merged) as npz:
            reconstructions = npz["arr_0"]
        indices = list(range(num_samples))
        truths = self.truths(indices)
        measurements, _ = self.measurements(indices, truths)
        path = out_dir / f"reconstructions_{merged.name.split('_', 1)[1]}"
        arrays = {"reconstructions": reconstructions, "measurements": measurements.numpy().astype(np.float16),
                  "truths": quantize_uint8(truths).numpy(), "ids": np.array(self.ids(num_samples)),
                  "indices": np.arange(num_samples, dtype=np.int64)}
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        return path


def read_reconstructions(run_dir: Path) -> dict[str, np.ndarray]:
    """The reconstructions file a DPS run wrote after its merge."""
    files = sorted(Path(run_dir).glob("reconstructions_*.npz"))
    if not files:
        raise FileNotFoundError(f"{run_dir} holds no reconstructions_*.npz: run its DPS exp first")
    with np.load(files[-1]) as npz:
        return {key: npz[key] for key in npz.files}


def inverse_problem(conf: Mapping[str, Any]) -> InverseProblem | None:
    """The run's inverse problem, or None for plain sampling."""
    inverse = conf.get("inverse")
    if not inverse or inverse.get("name", "none") == "none":
        return None
    if inverse["name"] != "dps":
        raise SamplingError(f"inverse.name must be dps or none, got {inverse['name']!r}")
    return InverseProblem(inverse, conf.get("data_dir"), conf["model"]["network"]["image_size"], conf["seed"])
