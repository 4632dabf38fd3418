"""Train a demo model: python scripts/train.py --config-name demo32_cond  (configs/train/*.yaml)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampling.config import CONFIG_DIR, check_overrides  # noqa: E402
from sampling.errors import ConfigError, report  # noqa: E402
from sampling.schema import check_config, infer_schema  # noqa: E402
from training.loop import CONFIG_RULES, train  # noqa: E402

TRAIN_DIR = CONFIG_DIR / "train"


@hydra.main(version_base=None, config_path="../configs/train", config_name="demo32_cond")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    conf = OmegaConf.to_container(cfg, resolve=True)
    try:
        check_config(conf, infer_schema(TRAIN_DIR), CONFIG_RULES)
    except ConfigError as err:
        sys.exit(report(err))
    if conf.get("threads"):
        torch.set_num_threads(int(conf["threads"]))
    print(train(conf))


if __name__ == "__main__":
    try:
        check_overrides([a for a in sys.argv[1:] if not a.startswith("-")], infer_schema(TRAIN_DIR), TRAIN_DIR)
    except ConfigError as err:
        sys.exit(report(err))
    main()
