"""Every config key is checked once, at load: a wrong type, range, choice or unknown key is one sentence, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reproduce.tables import CONFIG_RULES as TABLE_RULES
from reproduce.tables import table_schema
from sampling.config import CONFIG_DIR, compose_config
from sampling.errors import ConfigError
from sampling.runner import validate
from sampling.schema import check_config, infer_schema
from training.loop import CONFIG_RULES as TRAIN_RULES

ROOT = Path(__file__).resolve().parents[1]


def sample_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sample.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **env}, timeout=300)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("guidance.scale=abc", "config key guidance.scale = 'abc' is not valid; allowed: a number; e.g. guidance."),
        ("sampler.timestep_respacing=ddimX",
         "config key sampler.timestep_respacing = 'ddimX' is not valid; allowed: N (N evenly spaced steps), ddimN"),
        ("guidance.scle=2", "unknown config key guidance.scle in 'guidance.scle=2'; valid keys at that level: "),
        ("guidance=pga", "guidance=pga is not an option of configs/guidance/; choose one of "),
    ],
)
def test_sample_cli_names_the_key_in_one_line(tmp_path, override, message):
    result = sample_cli("+exp=smoke", f"out_dir={tmp_path}", override)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


def test_debug_switch_shows_the_traceback(tmp_path):
    result = sample_cli("+exp=smoke", f"out_dir={tmp_path}", "guidance.scale=abc", PAG_ADM_DEBUG="1")
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["num_samples=1.5"], r"num_samples = 1.5 is not valid; allowed: an integer >= 1 and <= 9999999"),
        (["seed=-1"], r"seed = -1 is not valid; allowed: an integer >= 0; e.g. seed=0"),
        (["precision=fp8"], r"allowed: one of auto, fp32, fp16, bf16; e.g. precision=auto"),
        (["labels.protocol=random"], r"allowed: one of uniform, balanced"),
        (["device=gpu"], r"device = 'gpu' is not valid; allowed: one of auto, cpu, cuda"),
        (["guidance.layers=[1,2]"], r"guidance.layers = \[1, 2\] \(item 1\) is not valid; allowed: a list whose items"),
        (["labels=3"], r"labels = 3 is not valid; it is a group of keys \(num_classes, protocol\)"),
        (["+labels.sheme=1"], r"unknown config key labels.sheme \(= 1\); labels has num_classes, protocol"),
        (["+guidance.scal=1"], r"did you mean guidance.scale\?"),
        (["guidance=sag", "~guidance.layers", "guidance.blur_kernel=4"], r"allowed: an odd integer >= 1"),
        (["guidance/perturbation=random_mask", "guidance.perturbation.p=1.5"], r"allowed: a number >= 0.0 and <= 1"),
        (["sampler.eta=-1"], r"sampler.eta = -1 is not valid; allowed: a number >= 0.0"),
        (["sampler.timestep_respacing=10"], r"= 10 \(a number; this key takes text: quote it, "
                                            r"sampler.timestep_respacing='\"10\"'\)"),
        (["save_png=1"], r"save_png = 1 is not valid; allowed: true or false"),
    ],
)
def test_values_outside_the_schema(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(["+exp=smoke", *overrides]))


def test_a_key_is_known_once_a_yaml_file_of_its_group_has_it(tmp_path):
    (tmp_path / "guidance").mkdir()
    (tmp_path / "exp").mkdir()
    (tmp_path / "guidance" / "pag.yaml").write_text("name: pag\nscale: 1.0\nwindow: null\n")
    (tmp_path / "guidance" / "new.yaml").write_text("name: new\nexecution: auto\nsteps: [1, 2]\n")
    (tmp_path / "exp" / "one.yaml").write_text("# @package _global_\nseed: 0\nguidance:\n  scale: 2\n")
    schema = infer_schema(tmp_path)
    check_config({"seed": 3, "guidance": {"name": "new", "execution": "sequential", "scale": 2, "window": [1, 0]}},
                 schema)
    rules = {"guidance.execution": {"choices": ("batched", "sequential", "auto")}}
    with pytest.raises(ConfigError, match=r"guidance.execution = 'fast' is not valid; allowed: one of batched"):
        check_config({"guidance": {"execution": "fast"}}, schema, rules)
    with pytest.raises(ConfigError, match=r"unknown config key guidance.executoin .*did you mean guidance.execution"):
        check_config({"guidance": {"executoin": "auto"}}, schema, rules)
    with pytest.raises(ConfigError, match=r"guidance.steps = \[1, 'x'\] \(item 'x'\)"):
        check_config({"guidance": {"steps": [1, "x"]}}, schema)


def test_mounted_groups_share_their_keys():
    schema = infer_schema(CONFIG_DIR, skip=("tables", "train", "list_layers.yaml"))
    assert set(schema.children["classifier"].children["model"].children) == set(schema.children["model"].children)


def test_train_and_table_files():
    train = infer_schema(CONFIG_DIR / "train")
    with pytest.raises(ConfigError, match=r"config key ema_rate = 2 is not valid; allowed: a number >= 0.0 and <= 1"):
        check_config({"ema_rate": 2}, train, TRAIN_RULES)
    with pytest.raises(ConfigError, match=r"backend = 'inception' is not valid; allowed: one of torch, tf, digits"):
        check_config({"backend": "inception"}, table_schema(), TABLE_RULES)


def test_a_broken_yaml_file_is_named(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "mine.yaml").write_text("# @package _global_\nseed: [1,\nnum_samples: 2\n")
    with pytest.raises(ConfigError, match=r"exp/mine.yaml is not valid YAML at line \d+ .*; fix or remove the file"):
        infer_schema(tmp_path)
