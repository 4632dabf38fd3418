"""DPS through the sharded runner: ground truths from data_dir, the reconstructions file, invariance and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sampling.config import compose_config
from sampling.dist import RankInfo
from sampling.errors import SamplingError
from sampling.inverse import image_files
from sampling.runner import build_sampler, run

NUM = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("truths")
    rng = np.random.default_rng(0)
    for i in range(NUM + 1):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "00099.jpg")  # cropped+resized
    return folder


def dps_config(out_dir: Path, data_dir: Path, *overrides: str) -> dict:
    return compose_config(["+exp=smoke", "+inverse=dps", "inverse/operator=box_inpainting32", f"+data_dir={data_dir}",
                           "sampler.use_ddim=false", "sampler.timestep_respacing='4'", f"out_dir={out_dir}",
                           "progress=false", f"num_samples={NUM}", *overrides])


def reconstructions(out_dir: Path) -> dict[str, np.ndarray]:
    with np.load(out_dir / "reconstructions_4x32x32x3.npz") as npz:
        return {key: npz[key] for key in npz.files}


def test_reconstructions_file_and_world_size_invariance(tmp_path: Path, data_dir: Path) -> None:
    single = tmp_path / "single"
    run(dps_config(single, data_dir, "batch_size=2", "micro_batch=2"), RankInfo(0, 1, 0, "single"), poll_s=0.05)
    out = reconstructions(single)
    assert sorted(out) == ["ids", "indices", "measurements", "reconstructions", "truths"]
    assert out["reconstructions"].shape == out["truths"].shape == (NUM, 32, 32, 3)
    assert out["measurements"].shape == (NUM, 3, 32, 32) and out["measurements"].dtype == np.float16
    assert list(out["ids"]) == [f"{i:05d}.png" for i in range(NUM)]
    truth = np.asarray(Image.open(data_dir / "00002.png"))
    assert np.abs(out["truths"][2].astype(int) - truth).max() <= 1
    masked = out["measurements"][:, 0] == 0  # noise is added everywhere, so no pixel is exactly 0
    assert not masked.any()
    with np.load(single / "samples_4x32x32x3.npz") as npz:
        assert np.array_equal(npz["arr_0"], out["reconstructions"]) and list(npz["arr_1"]) == list(range(NUM))
    two = tmp_path / "two"
    conf = dps_config(two, data_dir, "batch_size=2", "micro_batch=2")
    run(conf, RankInfo(1, 2, 1, "test"), poll_s=0.05)
    run(conf, RankInfo(0, 2, 0, "test"), poll_s=0.05)
    assert (two / "reconstructions_4x32x32x3.npz").read_bytes() == (single / "reconstructions_4x32x32x3.npz"
                                                                     ).read_bytes()


def test_per_sample_norm_makes_micro_batches_agree(tmp_path: Path, data_dir: Path) -> None:
    """micro_batch 1 vs 2: only float rounding differs with norm: sample; the whole-batch norm couples samples."""
    diffs = {}
    for norm in ("sample", "batch"):
        outs = []
        for micro in (1, 2):
            out_dir = tmp_path / f"{norm}{micro}"
            run(dps_config(out_dir, data_dir, "batch_size=2", f"micro_batch={micro}", f"inverse.norm={norm}"),
                RankInfo(0, 1, 0, "single"), poll_s=0.05)
            outs.append(reconstructions(out_dir)["reconstructions"].astype(int))
        diffs[norm] = np.abs(outs[0] - outs[1]).max()
    assert diffs["sample"] <= 1 < diffs["batch"]


def test_bad_inputs_are_one_sentence(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(SamplingError, match="holds 6 ground-truth images"):
        run(dps_config(tmp_path / "a", data_dir, "num_samples=7"), RankInfo(0, 1, 0, "single"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "00000.png").write_bytes(b"not a png")
    with pytest.raises(SamplingError, match=r"cannot read ground-truth image .*00000.png .*replace or remove it"):
        run(dps_config(tmp_path / "b", broken, "num_samples=1", "batch_size=1", "micro_batch=1"),
            RankInfo(0, 1, 0, "single"))
    with pytest.raises(SamplingError, match="is not a folder of images"):
        run(dps_config(tmp_path / "c", tmp_path / "nowhere"), RankInfo(0, 1, 0, "single"))
    with pytest.raises(SamplingError, match="choose a DDPM sampler"):
        run(dps_config(tmp_path / "d", data_dir, "sampler.use_ddim=true"), RankInfo(0, 1, 0, "single"))
    with pytest.raises(SamplingError, match="inverse.norm"):
        run(dps_config(tmp_path / "e", data_dir, "inverse.norm=mean"), RankInfo(0, 1, 0, "single"))


def test_file_list_skips_comments_and_finds_bare_names_in_class_folders(tmp_path: Path) -> None:
    for folder, name in (("n01", "val_3.png"), ("n02", "val_1.png"), ("n02", "val_2.png"), ("n03", "dup.png"),
                         ("n04", "dup.png")):
        (tmp_path / "images" / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "images" / folder / name)
    listing = tmp_path / "list.txt"
    listing.write_text("# our choice\nval_1.png\n\nn01/val_3.png\nval_2.png\n")
    files = image_files(tmp_path / "images", listing)
    assert [f.relative_to(tmp_path / "images").as_posix() for f in files] == ["n02/val_1.png", "n01/val_3.png",
                                                                              "n02/val_2.png"]
    listing.write_text("val_1.png\ndup.png\n")  # a bare name that matches two files is not guessed
    with pytest.raises(SamplingError, match=r"1 image\(s\) of .*list.txt are not under .*dup.png; a bare name must"):
        image_files(tmp_path / "images", listing)
    with pytest.raises(SamplingError, match="inverse.file_list .*missing.txt cannot be read"):
        image_files(tmp_path / "images", tmp_path / "missing.txt")


def test_micro_batch_governs_what_the_gradient_pass_keeps(tmp_path: Path, data_dir: Path) -> None:
    """The runner's micro_batch sets how many samples' activations one DPS backward holds (bytes of the tensors
    autograd saves, weights excluded): twice the micro-batch, twice the bytes; micro-batch 1 runs."""
    saved = {}
    for micro in (1, 2):
        conf = dps_config(tmp_path / f"m{micro}", data_dir, "batch_size=2", f"micro_batch={micro}")
        model, sampler = build_sampler(conf, torch.device("cpu"), compile_network=False)
        assert not any(p.requires_grad for p in model.parameters())  # DPS differentiates with respect to x_t only
        weights = {id(p) for p in model.parameters()}
        total = [0]

        def pack(tensor: torch.Tensor, weights: set[int] = weights, total: list[int] = total) -> torch.Tensor:
            total[0] += 0 if id(tensor) in weights else tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            images, _ = sampler.micro_batch(0)
        assert images.shape == (micro, 32, 32, 3)
        saved[micro] = total[0]
    assert saved[1] > 0 and saved[2] == pytest.approx(2 * saved[1], rel=0.02)
