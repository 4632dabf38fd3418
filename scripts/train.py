"""Train a demo model: python scripts/train.py --config-name demo32_cond  (configs/train/*.yaml)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.loop import train  # noqa: E402


@hydra.main(version_base=None, config_path="../configs/train", config_name="demo32_cond")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    print(train(OmegaConf.to_container(cfg, resolve=True)))


if __name__ == "__main__":
    main()
