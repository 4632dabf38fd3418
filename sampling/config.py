"""Compose the sampling config without the command line (tests, notebooks): the same tree scripts/sample.py uses."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from .errors import ConfigError
from .schema import Key, infer_schema

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
COMPOSITION_KEYS = {"combine", "interval"}


def experiments() -> list[str]:
    """Names accepted by +exp=NAME."""
    return sorted(path.stem for path in (CONFIG_DIR / "exp").glob("*.yaml"))


@cache
def sample_schema() -> Key:
    """The keys scripts/sample.py composes: every YAML file of configs/ except the other entry points' trees."""
    return infer_schema(CONFIG_DIR, skip=("tables", "train", "list_layers.yaml"))


def check_overrides(overrides: Sequence[str], schema: Key | None = None, config_dir: Path = CONFIG_DIR) -> None:
    """Reject an option no group has and a key no file defines, which Hydra reports in several lines, in one
    sentence (ConfigError). Keys added with `+` are checked after composition (sampling.runner.validate).
    Default: the tree of scripts/sample.py."""
    schema = schema or sample_schema()
    for override in overrides:
        key, equals, value = override.partition("=")
        if not equals or key.startswith(("~", "hydra", "+hydra")) or "@" in key:
            continue
        appended, key = key.startswith("+"), key.lstrip("+")
        group = config_dir / key.replace(".", "/") if "." not in key or "/" in key else None
        if group is not None and group.is_dir():
            options = sorted(path.stem for path in group.glob("*.yaml"))
            for option in value.split(","):  # a multirun sweep lists several
                if option not in options:
                    raise ConfigError(f"{key}={option} is not an option of configs/{key}/; choose one of "
                                      f"{', '.join(options)}, e.g. {key}={options[0]}")
            continue
        node = schema
        for part in key.split("."):
            if not appended and part not in node.children and (node.children or "dict" not in node.kinds):
                raise ConfigError(f"unknown config key {key} in {override!r}; valid keys at that level: "
                                  f"{', '.join(sorted(node.children))} (add a new key with +{override})")
            node = node.children.get(part, Key())


def compose_config(overrides: Sequence[str] = ()) -> dict:
    """The resolved config `python scripts/sample.py OVERRIDES...` runs with (single-run mode), as plain data."""
    check_overrides(overrides)
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
