"""The demo trainer: data, resumption that reproduces an uninterrupted run, and config protection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from training.data import NUM_CLASSES, load_digits_rgb
from training.loop import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "demo32_cond.yaml"


def _cfg(out_dir: Path, steps: int, **overrides) -> dict:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg.update(out_dir=str(out_dir), steps=steps, save_every=2, log_every=1, batch_size=4, **overrides)
    return cfg


def test_digits_are_32px_rgb_in_range_with_all_classes() -> None:
    images, labels = load_digits_rgb()
    assert images.shape == (1797, 3, 32, 32) and images.min() == -1 and images.max() <= 1
    assert torch.bincount(labels).tolist() == torch.bincount(load_digits_rgb()[1]).tolist()
    assert len(torch.unique(labels)) == NUM_CLASSES
    assert torch.equal(images, load_digits_rgb()[0])


def test_resumed_training_equals_uninterrupted(tmp_path: Path) -> None:
    straight = torch.load(train(_cfg(tmp_path / "a", 4)), weights_only=True)
    train(_cfg(tmp_path / "b", 2))
    resumed = torch.load(train(_cfg(tmp_path / "b", 4)), weights_only=True)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_resume_with_another_config_is_refused(tmp_path: Path) -> None:
    train(_cfg(tmp_path, 2))
    with pytest.raises(ValueError, match="another config"):
        train(_cfg(tmp_path, 4, lr=1e-3))


def test_classifier_config_trains(tmp_path: Path) -> None:
    cfg = yaml.safe_load((CONFIG.parent / "demo32_classifier.yaml").read_text())
    cfg.update(out_dir=str(tmp_path), steps=2, save_every=2, log_every=1, batch_size=4)
    weights = torch.load(train(cfg), weights_only=True)
    assert weights["out.2.c_proj.weight"].shape[0] == NUM_CLASSES
