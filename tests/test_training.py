"""The demo trainer: data, resumption that reproduces an uninterrupted run, and config protection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from evaluations.backend_digits import DigitsFeatures
from guided_diffusion.diffusion import quantize_uint8
from training.data import NUM_CLASSES, load_digits_rgb
from training.loop import ema_decay, train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "demo32_cond.yaml"


def _cfg(out_dir: Path, steps: int, **overrides) -> dict:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg.update(out_dir=str(out_dir), export=str(out_dir / "ema.pt"), steps=steps, save_every=2, log_every=1,
               batch_size=4, **overrides)
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


def _other(name: str, out_dir: Path) -> dict:
    cfg = yaml.safe_load((CONFIG.parent / f"{name}.yaml").read_text())
    cfg.update(out_dir=str(out_dir), export=str(out_dir / "ema.pt"), steps=2, save_every=2, log_every=1, batch_size=4)
    return cfg


def test_classifier_config_trains(tmp_path: Path) -> None:
    weights = torch.load(train(_other("demo32_classifier", tmp_path)), weights_only=True)
    assert weights["out.2.c_proj.weight"].shape[0] == NUM_CLASSES


def test_feature_network_trains_into_a_file_the_digits_backend_loads(tmp_path: Path) -> None:
    path = train(_other("demo32_features", tmp_path))
    backend = DigitsFeatures(path)
    images = quantize_uint8(load_digits_rgb()[0][:5]).numpy()
    pool, spatial = backend.features(images)
    assert pool.shape == (5, 128) and spatial.shape == (5, 4 * 8 * 8)
    np.testing.assert_allclose(backend.softmax(pool).sum(axis=1), 1.0, rtol=1e-5)


def test_ema_warmup_forgets_the_initial_weights() -> None:
    assert ema_decay(0.999, 0, warmup=True) == 0.1 and ema_decay(0.999, 0, warmup=False) == 0.999
    assert ema_decay(0.999, 100_000, warmup=True) == 0.999
