"""Training of the demo's diffusion models and noisy classifier: EMA weights, resumable, reproducible.

Batch k is drawn from a generator seeded by (seed, k), so a run stopped and resumed from its last state file draws
the same batches as an uninterrupted one. State files are written atomically; the exported weights are the EMA.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluations.backend_digits import DigitsFeatureNet, feature_net_file
from guided_diffusion.diffusion import GaussianDiffusion, create_diffusion
from guided_diffusion.factory import build_network
from guided_diffusion.fileio import atomic_write

from .data import load_digits_rgb

log = logging.getLogger(__name__)
KINDS = ("diffusion", "classifier", "features")
# Ranges and choices of the training keys; their types come from configs/train/*.yaml (checked by scripts/train.py).
CONFIG_RULES = {
    "kind": {"choices": KINDS},
    "steps": {"min": 1},
    "batch_size": {"min": 1},
    "lr": {"above": 0.0},
    "weight_decay": {"min": 0.0},
    "ema_rate": {"min": 0.0, "max": 1.0},
    "save_every": {"min": 1},
    "log_every": {"min": 1},
    "threads": {"min": 1},
    "augment_noise": {"min": 0.0},
    "seed": {"min": 0},
    "data_seed": {"min": 0},
}
# Paths and logging: they do not shape the weights.
_UNHASHED = ("out_dir", "export", "steps", "save_every", "log_every", "threads")


def config_hash(cfg: Mapping[str, Any]) -> str:
    """Hash of what shapes the weights; not paths, logging, or `steps` (a run may be extended)."""
    relevant = {k: v for k, v in cfg.items() if k not in _UNHASHED}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ema_decay(rate: float, step: int, warmup: bool) -> float:
    """The EMA decay after optimizer step `step` (0-based). With warmup it is min(rate, (1 + k) / (10 + k)): a plain
    EMA of a short run keeps rate**steps of the initial weights, whose zero output layer shrinks every prediction."""
    return min(rate, (1 + step) / (10 + step)) if warmup else rate


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, rate: float) -> None:
    for target, source in zip(ema.parameters(), model.parameters(), strict=True):
        target.mul_(rate).add_(source, alpha=1 - rate)


def _batch(step: int, seed: int, n: int, batch_size: int) -> tuple[torch.Generator, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return gen, torch.randint(0, n, (batch_size,), generator=gen)


def _loss(kind: str, model: nn.Module, diffusion: GaussianDiffusion | None, x0: torch.Tensor, y: torch.Tensor,
          gen: torch.Generator, class_cond: bool, cfg: Mapping[str, Any]) -> torch.Tensor:
    if kind == "features":
        sigma = torch.rand(x0.shape[0], 1, 1, 1, generator=gen) * cfg["augment_noise"]
        return F.cross_entropy(model(x0 + sigma * torch.randn(x0.shape, generator=gen)), y)
    t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    if kind == "classifier":
        x_t = diffusion.q_sample(x0, t, noise)
        return F.cross_entropy(model(x_t, diffusion.model_timesteps(t)), y)
    kwargs = {"y": y} if class_cond else {}
    return diffusion.training_losses(model, x0, t, kwargs, noise=noise, rescale_vb=cfg["rescale_vb"])["loss"].mean()


def train(cfg: Mapping[str, Any]) -> Path:
    """Train per `cfg` (configs/train/*.yaml); returns the path of the exported EMA state dict."""
    kind = cfg["kind"]
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, export_path = out_dir / "state.pt", Path(cfg["export"])
    digest = config_hash(cfg)
    torch.manual_seed(cfg["seed"])
    model = DigitsFeatureNet(**cfg["network"]) if kind == "features" else build_network(cfg["network"])
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    start = 0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["config_hash"] != digest:
            raise ValueError(f"{state_path} was trained with another config; use a new out_dir or delete it")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        log.info("resuming %s at step %d", out_dir, start)
    diffusion = create_diffusion(**cfg["diffusion"]) if "diffusion" in cfg else None
    images, labels = load_digits_rgb(cfg["data_seed"])
    class_cond = kind == "diffusion" and cfg["network"].get("num_classes") is not None
    model.train()
    began, losses = time.time(), []
    for step in range(start, cfg["steps"]):
        gen, idx = _batch(step, cfg["seed"], len(images), cfg["batch_size"])
        loss = _loss(kind, model, diffusion, images[idx], labels[idx], gen, class_cond, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_ema(ema, model, ema_decay(cfg["ema_rate"], step, cfg["ema_warmup"]))
        losses.append(loss.item())
        done = step + 1
        if done % cfg["log_every"] == 0:
            rate = (done - start) / (time.time() - began)
            log.info("step %d/%d loss %.4f (%.2f steps/s)", done, cfg["steps"], sum(losses) / len(losses), rate)
            losses.clear()
        if done % cfg["save_every"] == 0 or done == cfg["steps"]:
            state = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": done,
                     "config_hash": digest}
            atomic_write(state_path, lambda fh, state=state: torch.save(state, fh))
    exported = feature_net_file(cfg["network"], ema.state_dict()) if kind == "features" else ema.state_dict()
    export_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(export_path, lambda fh: torch.save(exported, fh))
    record = {**cfg, "config_hash": digest, "wall_s_this_run": round(time.time() - began, 1),
              "torch": torch.__version__}
    (out_dir / "train_config.json").write_text(json.dumps(record, indent=2, default=str))
    return export_path
