"""The sampler of one composed config, used for looking rather than for writing shards.

Composition, validation, model loading and the per-sample seeding are the sampler's own (sampling.config,
sampling.runner, sampling.rng): sample i here is computed on the same micro-batch, from the same streams, with the same
thread count and precision as in `scripts/sample.py`, so a figure shows exactly the sampler's sample i (the network
runs eagerly: `speed.compile` is not applied here).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.nn as nn

from guided_diffusion.diffusion import GaussianDiffusion
from sampling.config import compose_config
from sampling.dist import select_device
from sampling.recorder import Recorder, Step
from sampling.runner import Sampler, _configure_torch, build_sampler, validate


@dataclass
class Session:
    conf: dict[str, Any]
    overrides: list[str]
    model: nn.Module
    sampler: Sampler

    @property
    def diffusion(self) -> GaussianDiffusion:
        return self.sampler.diffusion

    @property
    def net(self) -> nn.Module:
        return self.sampler.net

    @property
    def name(self) -> str:
        return str(self.conf["exp_name"])

    @property
    def micro_batch(self) -> int:
        return int(self.conf["micro_batch"])

    def images(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 NHWC images and labels of global sample indices, each micro-batch computed once."""
        batches = {m: self.sampler.micro_batch(m) for m in sorted({i // self.micro_batch for i in indices})}
        rows = [(batches[i // self.micro_batch], i % self.micro_batch) for i in indices]
        return np.stack([b[0][r] for b, r in rows]), np.array([b[1][r] for b, r in rows])

    def record(self, index: int, steps: Collection[int] | None = None,
               layers: Sequence[str] = ()) -> tuple[np.ndarray, int, list[Step]]:
        """Sample `index` (HWC uint8), its label and the recorded steps of its trajectory."""
        recorder = Recorder(self.net, self.diffusion, rows=[index % self.micro_batch], steps=steps, layers=layers,
                            clip_denoised=bool(self.conf["sampler"]["clip_denoised"]))
        with recorder:
            images, labels = self.sampler.micro_batch(index // self.micro_batch)
        return images[index % self.micro_batch], int(labels[index % self.micro_batch]), recorder.history


def open_session(overrides: Sequence[str]) -> Session:
    """Compose `overrides` as scripts/sample.py does and build its networks (ValueError on bad settings)."""
    conf = compose_config(overrides)
    validate(conf)
    device = select_device(str(conf["device"]), 0)
    _configure_torch(conf, device)  # thread count and cuDNN settings change float rounding (sampling.rng)
    model, sampler = build_sampler(conf, device, compile_network=False)
    return Session(conf, list(overrides), model, sampler)
