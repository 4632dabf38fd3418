"""Compose the sampling config without the command line (tests, notebooks): the same tree scripts/sample.py uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
COMPOSITION_KEYS = {"combine", "interval"}


def experiments() -> list[str]:
    """Names accepted by +exp=NAME."""
    return sorted(path.stem for path in (CONFIG_DIR / "exp").glob("*.yaml"))


def compose_config(overrides: Sequence[str] = ()) -> dict:
    """The resolved config `python scripts/sample.py OVERRIDES...` runs with (single-run mode), as plain data."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="sample"):
        cfg = compose(config_name="sample", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def group_keys(group: str, choice: str) -> set[str] | None:
    """The keys a config group option defines (its own and those its defaults list adds), or None if it has no file.

    A key outside this set under that group was left over by an experiment written for another option, e.g. PAG's
    `layers` after `guidance=sag`.
    """
    path = CONFIG_DIR / group / f"{choice}.yaml"
    if not path.is_file():
        return None
    data = OmegaConf.to_container(OmegaConf.load(path))
    keys = set(data) - {"defaults"}
    if group == "guidance" and choice != "none":
        keys |= COMPOSITION_KEYS  # any method takes a combination rule and an interval (guidance.build)
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            keys.update(key.split("@")[-1].lstrip("/") for key in entry)
    return keys
