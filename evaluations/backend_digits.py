"""The demo's feature space: a small CNN classifier of the bundled digits, in place of Inception.

Inception features of 32x32 coloured digits say little, and the Inception graph is a download; the demo
evaluates in the feature space of a classifier trained here on the demo's own data (configs/train/demo32_features
.yaml). It plays Inception's roles one for one: the penultimate layer is `pool` (FID, precision, recall), the first
channels of an 8x8 map are `spatial` (sFID) and softmax(pool @ W) gives the Inception Score, whose ceiling is the
number of classes (10), not ImageNet's 1000. Numbers in this space are never comparable with Inception numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from guided_diffusion.fileio import file_sha256, unreadable

FORMAT = "pag-adm/digits-features-v1"
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "data" / "demo" / "digits_features.pt"
FEATURE_SPACE = "demo digits classifier (not Inception: not comparable with any paper's numbers)"


class DigitsFeatureNet(nn.Module):
    """Conv classifier of 32x32 RGB images: 32 -> 16 -> 8 -> 4 px, global pooling, a feature layer, logits."""

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = 10, spatial_channels: int = 4):
        super().__init__()
        self.spatial_channels = spatial_channels

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())

        self.stem = nn.Sequential(block(3, width), block(width, width), nn.AvgPool2d(2))
        self.mid = nn.Sequential(block(width, 2 * width), nn.AvgPool2d(2), block(2 * width, 2 * width))
        self.head = nn.Sequential(nn.AvgPool2d(2), block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(4 * width, feature_dim), nn.SiLU())
        self.logits = nn.Linear(feature_dim, num_classes, bias=False)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool features [N, feature_dim], the 8x8 map [N, C, 8, 8]) of images in [-1, 1]."""
        spatial = self.mid(self.stem(x))
        return self.head(spatial), spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.embed(x)[0])


class DigitsFeatures:
    """The evaluator's FeatureBackend over a trained DigitsFeatureNet file."""

    name = "digits"
    feature_space = FEATURE_SPACE

    def __init__(self, path: Path = DEFAULT_PATH, device: str | None = None):
        self.device = torch.device(device or "cpu")
        network, state = read_feature_net(path)
        self.graph_sha256 = file_sha256(path)
        self.net = DigitsFeatureNet(**network).to(self.device).eval()
        try:
            self.net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{path}: its weights do not fit the network it describes ({str(err).splitlines()[0]}); "
                             "retrain it with make train-demo") from None

    @torch.no_grad()
    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        pool, spatial = self.net.embed(x)
        spatial = spatial[:, : self.net.spatial_channels].permute(0, 2, 3, 1).reshape(len(x), -1)
        return pool.cpu().numpy().astype(np.float32), spatial.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def softmax(self, pool_features: np.ndarray) -> np.ndarray:
        logits = self.net.logits(torch.from_numpy(pool_features).to(self.device))
        return F.softmax(logits, dim=-1).cpu().numpy()


def feature_net_file(network: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What a feature-network file holds: its constructor arguments and weights, so it loads on its own."""
    return {"format": FORMAT, "network": dict(network), "state_dict": dict(state_dict)}


def read_feature_net(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(constructor arguments, state dict) of a feature-network file, with an error that says how to make one."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"demo feature network {path} not found; train it with "
            "`python scripts/train.py --config-name demo32_features` (make train-demo)"
        )
    retrain = "restore it with `git checkout data/demo`, or retrain it with make train-demo"
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch.load trips on, the file is not one of ours
        raise unreadable(path, err, "a torch file", retrain) from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError(f"{path} is not a demo feature-network file ({FORMAT}); {retrain}")
    return content["network"], content["state_dict"]
