"""configs/exp/dps_*.yaml: one exp per PAG Table 7 column for DPS and DPS + PAG (both readings of s), composing,
validating and holding the table's values (the expectations are copied from the paper, not from the configs)."""

from __future__ import annotations

import pytest

from sampling.config import CONFIG_DIR, compose_config, experiments
from sampling.runner import validate

OPERATORS = {"inpaint": "box_inpainting", "sr8": "super_resolution", "gauss": "gaussian_blur", "motion": "motion_blur"}
# PAG App. C.1 Table 7: dataset -> column -> (DPS eta, DPS + PAG eta, DPS + PAG s)
TABLE7 = {
    "ffhq": {"inpaint": (1.0, 1.0, 1.0), "sr8": (1.0, 1.0, 1.0), "gauss": (1.0, 1.0, 1.0), "motion": (1.0, 1.0, 1.0)},
    "imagenet": {"inpaint": (1.0, 1.0, 2.0), "sr8": (1.0, 1.0, 2.0), "gauss": (0.4, 0.4, 1.0),
                 "motion": (0.6, 1.0, 2.0)},
}
# Table 8 (FFHQ 1K): column -> ((DPS FID, LPIPS), (DPS + PAG FID, LPIPS))
TABLE8 = {"inpaint": ((33.12, 0.168), (26.74, 0.212)), "sr8": ((34.00, 0.320), (34.05, 0.327)),
          "gauss": ((44.05, 0.257), (29.42, 0.259)), "motion": ((39.92, 0.242), (30.57, 0.283))}
MODELS = {"ffhq": "ffhq_10m", "imagenet": "256x256_diffusion_uncond"}
LAYERS = {"ffhq": ["input_blocks.9.1"], "imagenet": ["middle_block.1", "output_blocks.2.1"]}
CASES = [(ds, col) for ds in TABLE7 for col in TABLE7[ds]]


def test_sixteen_rows_plus_the_other_scale_reading() -> None:
    names = {name for name in experiments() if name.startswith("dps_")}
    plain = {f"dps_{ds}_{col}" for ds, col in CASES}
    guided = {f"dps_pag_{ds}_{col}" for ds, col in CASES}
    assert names == plain | guided | {f"{name}_g" for name in guided} and len(plain | guided) == 16


@pytest.mark.parametrize(("ds", "col"), CASES)
def test_rows_hold_table_7(ds: str, col: str) -> None:
    eta, eta_pag, s = TABLE7[ds][col]
    for name, guided, scale in ((f"dps_{ds}_{col}", False, None), (f"dps_pag_{ds}_{col}", True, s),
                                (f"dps_pag_{ds}_{col}_g", True, s - 1.0)):
        conf = compose_config([f"+exp={name}"])
        validate(conf)
        assert conf["model"]["name"] == MODELS[ds] and conf["precision"] == "fp32"
        assert conf["sampler"]["timestep_respacing"] == "1000" and not conf["sampler"]["use_ddim"]
        inverse = conf["inverse"]
        assert (inverse["name"], inverse["norm"], inverse["sigma_y"]) == ("dps", "sample", 0.05)
        assert inverse["operator"]["name"] == OPERATORS[col] and conf["num_samples"] == 1000
        assert inverse["eta"] == (eta_pag if guided else eta)
        if guided:
            assert conf["guidance"]["name"] == "pag" and conf["guidance"]["scale"] == scale
            assert conf["guidance"]["layers"] == LAYERS[ds]
        else:
            assert conf["guidance"]["name"] == "none"
        text = (CONFIG_DIR / "exp" / f"{name}.yaml").read_text()
        head = text[: text.index("\ndefaults:")]
        assert "Table 7" in head and "ECCV 2024" in head
        if ds == "ffhq":
            assert inverse["file_list"] is None  # DPS's loader: the sorted folder, 00000..00999
            fid, lpips = TABLE8[col][guided]
            assert f"FID {fid:.2f}, LPIPS {lpips:.3f}" in head
        else:  # the ImageNet list is ours (test_imagenet_list_is_the_first_1000_validation_images)
            assert inverse["file_list"] == "data/imagenet/val_1k.txt"
            assert "our documented choice, not the paper's" in head
            assert "no input_blocks.9.1" in head or not guided
        if guided:
            reading = "read as the released ADM code's guide_scale g" if name.endswith("_g") else "is the paper's s"
            assert f"Scale reading: Table 7's {s} {reading}" in head


def test_operator_parameters_are_the_papers() -> None:
    conf = compose_config(["+exp=dps_ffhq_inpaint"])
    assert conf["inverse"]["operator"] == {"name": "box_inpainting", "box": 128, "margin": 16}
    ops = {col: compose_config([f"+exp=dps_ffhq_{col}"])["inverse"]["operator"] for col in ("sr8", "gauss", "motion")}
    assert ops["sr8"] == {"name": "super_resolution", "factor": 8}
    assert ops["gauss"] == {"name": "gaussian_blur", "kernel_size": 61, "sigma": 3.0}
    assert ops["motion"] == {"name": "motion_blur", "kernel_size": 61, "intensity": 0.5, "kernel": "per_sample"}



def test_imagenet_list_is_the_first_1000_validation_images() -> None:
    """Our documented choice (DPS published no ImageNet list): ILSVRC2012_val_00000001 .. 00001000, none dropped."""
    lines = (CONFIG_DIR.parent / "data" / "imagenet" / "val_1k.txt").read_text().splitlines()
    names = [line for line in lines if not line.startswith("#")]
    assert names == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 1001)]
    assert any("OUR CHOICE, NOT THE PAPERS'" in line for line in lines if line.startswith("#"))
