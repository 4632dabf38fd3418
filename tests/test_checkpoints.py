"""The checkpoint registry, strict loading with one-sentence diagnoses, the resumable download and the CLI.

Official files cannot be downloaded here: big configurations are exercised with meta-tensor state dicts (shapes only,
tiny files), real loading with a small registered stand-in, and downloads against a local HTTP server.
"""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from guided_diffusion import checkpoints as ckpt
from guided_diffusion.checkpoints import REGISTRY, Checkpoint, CheckpointError
from guided_diffusion.diffusion import create_diffusion
from guided_diffusion.factory import build_network, classifier_spec_from_flags, unet_spec_from_flags

from .manifests import assert_state_matches_manifest, load_manifest, manifest_names, require_manifest_dir, state_entries

# The OpenAI checkpoints, each with a golden manifest; third-party ones (manual download) are tested on their own.
NAMES = [name for name, info in REGISTRY.items() if not info.manual_download]
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------------
# Registry against the golden manifests


def test_manifest_directory_is_present():
    assert require_manifest_dir().is_dir()


def test_registry_covers_every_manifest():
    assert set(NAMES) == manifest_names()


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_matches_manifest(name):
    info, manifest = REGISTRY[name], load_manifest(name)
    assert info.url == manifest["url"] and info.url.endswith(f"/{info.filename}")
    assert dict(info.flags) == manifest["flags"]
    assert info.num_params == manifest["num_params"]
    assert info.num_state_dict_keys == manifest["num_state_dict_keys"]
    assert info.family == ("iddpm" if "improved-diffusion" in manifest["upstream"] else "adm")
    expected_kind = "classifier" if "create_classifier" in manifest["upstream"] else (
        "upsampler" if "SuperResModel" in manifest["upstream"] else "diffusion")
    assert info.kind == expected_kind
    assert info.sha256 is None or len(info.sha256) == 64
    if info.classifier is not None:
        assert REGISTRY[info.classifier].kind == "classifier"


@pytest.mark.parametrize("name", NAMES)
def test_build_model_reproduces_manifest(name):
    model = ckpt.build_model(name, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert_state_matches_manifest(model, load_manifest(name))


@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY[n].kind == "classifier"])
def test_classifier_fp16_variant_matches_manifest(name):
    spec = classifier_spec_from_flags({**REGISTRY[name].flags, "classifier_use_fp16": True})
    with torch.device("meta"):
        model = build_network(spec)
    assert state_entries(model) == load_manifest(name)["keys_if_classifier_use_fp16_true"]


def test_state_dict_order_of_class_conditional_models():
    assert state_entries(ckpt.build_model("256x256_diffusion")) == load_manifest("256x256_diffusion")["keys"]


def test_diffusion_specs():
    assert ckpt.diffusion_spec("imagenet64_uncond_100M_1500K") == dict(
        steps=4000, noise_schedule="cosine", learn_sigma=True, sigma_small=False, predict_xstart=False,
        rescale_timesteps=True,
    )
    assert ckpt.diffusion_spec("256x256_diffusion_uncond")["noise_schedule"] == "linear"
    assert ckpt.diffusion_spec("64x64_diffusion")["noise_schedule"] == "cosine"
    diffusion = create_diffusion(**ckpt.diffusion_spec("64_256_upsampler"), timestep_respacing="250")
    assert diffusion.num_timesteps == 250
    with pytest.raises(CheckpointError, match="classifier and has no diffusion"):
        ckpt.diffusion_spec("256x256_classifier")


def test_unknown_name_suggests_the_closest():
    with pytest.raises(CheckpointError) as err:
        ckpt.build_model("256x256_diffusion_uncnd")
    message = str(err.value)
    assert message.startswith("unknown checkpoint '256x256_diffusion_uncnd'")
    assert "did you mean '256x256_diffusion_uncond'?" in message and "known: 64x64_diffusion," in message


# ---------------------------------------------------------------------------------------------------------------------
# A small registered stand-in for real loading and downloading

TINY = "tiny_test"
TINY_FLAGS = {
    "image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2", "attention_resolutions": "16",
    "num_heads": 2, "num_head_channels": -1, "class_cond": True, "learn_sigma": True, "use_fp16": True,
    "resblock_updown": True, "use_scale_shift_norm": True,
}


@pytest.fixture
def tiny(monkeypatch) -> Checkpoint:
    """Registers a small ADM-style checkpoint so the name-based paths run on real (random) weights."""
    model = build_network(unet_spec_from_flags(TINY_FLAGS))
    entry = Checkpoint(
        name=TINY, url="http://127.0.0.1:9/tiny_test.pt", family="adm", kind="diffusion", description="test stand-in",
        num_params=sum(p.numel() for p in model.parameters()), num_state_dict_keys=len(model.state_dict()),
        flags=TINY_FLAGS,
    )
    monkeypatch.setitem(REGISTRY, TINY, entry)
    return entry


def _random_state(spec: dict, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A float32 state dict with random values everywhere (the released files hold float32 weights)."""
    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        model = build_network({**spec, "use_fp16": False})
    return {key: torch.randn(value.shape, generator=generator).to(dtype) for key, value in model.state_dict().items()}


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_load_by_name_gives_fp16_torso_like_the_constructor(tiny, tmp_path):
    spec = ckpt.network_spec(TINY)
    state = _random_state(spec)
    model = ckpt.load_checkpoint(TINY, _save(state, tmp_path / "tiny.pt"))
    assert not model.training
    reference = build_network(spec)  # use_fp16=True: the constructor converts the torso convolutions
    reference.load_state_dict(state, strict=True)
    loaded, expected = model.state_dict(), reference.state_dict()
    assert list(loaded) == list(expected)
    for key in expected:
        assert loaded[key].dtype == expected[key].dtype, key
        assert torch.equal(loaded[key], expected[key]), key
        assert loaded[key].device.type == "cpu"
    assert loaded["input_blocks.1.0.in_layers.2.weight"].dtype == torch.float16
    assert loaded["input_blocks.1.0.in_layers.0.weight"].dtype == torch.float32  # GroupNorm
    assert loaded["time_embed.0.weight"].dtype == loaded["out.2.weight"].dtype == torch.float32


def test_fp16_file_loads_into_fp32_model(tiny, tmp_path):
    spec = {**ckpt.network_spec(TINY), "use_fp16": False}
    state = _random_state(spec, torch.float16)
    model = ckpt.load_checkpoint(spec, _save(state, tmp_path / "half.pt"))
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, state[key].float()), key


def test_nested_and_prefixed_state_dicts_are_unwrapped(tiny, tmp_path):
    state = _random_state(ckpt.network_spec(TINY))
    wrapped = {"model": {f"module.{key}": value for key, value in state.items()}, "step": 1000}
    model = ckpt.load_checkpoint(TINY, _save(wrapped, tmp_path / "wrapped.pt"))
    assert torch.equal(model.time_embed[0].weight, state["time_embed.0.weight"])


def _load_error(target, path: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        ckpt.load_checkpoint(target, path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 1000, message  # one sentence, never a wall of keys
    return message


def test_several_nested_state_dicts_name_the_keys(tiny, tmp_path):
    state = _random_state(ckpt.network_spec(TINY))
    message = _load_error(TINY, _save({"model": state, "ema": state}, tmp_path / "both.pt"))
    assert "several state dicts" in message and "'model', 'ema'" in message and "['ema']" in message


def test_optimizer_file(tiny, tmp_path):
    optimizer = torch.optim.AdamW(nn.Linear(2, 2).parameters())
    message = _load_error(TINY, _save(optimizer.state_dict(), tmp_path / "opt.pt"))
    assert "optimizer state" in message and "EMA" in message


def test_pickled_module(tmp_path):
    message = _load_error("256x256_diffusion", _save(nn.Linear(2, 2), tmp_path / "module.pt"))
    assert "pickled Python object (torch.nn.modules.linear.Linear)" in message
    assert "torch.save(model.state_dict(), path)" in message


def test_not_a_mapping(tmp_path):
    message = _load_error("256x256_diffusion", _save(torch.zeros(3), tmp_path / "tensor.pt"))
    assert "holds a Tensor, not a state dict" in message


def test_dict_without_tensors(tmp_path):
    message = _load_error("256x256_diffusion", _save({"epoch": 3, "note": "x"}, tmp_path / "meta.pt"))
    assert "is a dict but not a state dict" in message and "'epoch'" in message


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_truncated_or_corrupt_file(tmp_path, damage):
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(4096)}, buffer)
    data = {"truncated": buffer.getvalue()[:9000], "random": bytes(range(256)) * 20, "empty": b""}[damage]
    path = tmp_path / "256x256_diffusion_uncond.pt"
    path.write_bytes(data)
    message = _load_error("256x256_diffusion_uncond", path)
    floor = 4 * REGISTRY["256x256_diffusion_uncond"].num_params
    assert f"is truncated or corrupt ({len(data):,} bytes, expected at least {floor:,})" in message
    command = f"python -m guided_diffusion.checkpoints download 256x256_diffusion_uncond --dir {tmp_path}"
    assert f"delete it and run `{command}`" in message


def test_missing_file(tmp_path):
    message = _load_error("lsun_cat", tmp_path / "lsun_cat.pt")
    assert "does not exist" in message and "download lsun_cat" in message


# ---------------------------------------------------------------------------------------------------------------------
# A file of another configuration: meta-tensor state dicts carry the shapes in a tiny file


def _meta_file(tmp_path: Path, source: str | dict) -> Path:
    if isinstance(source, str):
        model = ckpt.build_model(source)
    else:
        with torch.device("meta"):
            model = build_network(source)
    return _save(model.state_dict(), tmp_path / "other.pt")


def _variant(name: str, **changes) -> dict:
    return {**ckpt.network_spec(name), **changes}


MISMATCHES = [
    ("256x256_diffusion", "256x256_diffusion_uncond", [
        "the file is class-conditional (it has label_emb.weight) but the model is unconditional",
        "this file looks like 256x256_diffusion; you asked for 256x256_diffusion_uncond",
    ]),
    ("256x256_diffusion_uncond", "256x256_diffusion", [
        "the file is unconditional (no label_emb.weight) but the model is class-conditional",
        "looks like 256x256_diffusion_uncond / lsun_bedroom / lsun_cat / lsun_horse / lsun_horse_nodropout",
    ]),
    ("256x256_classifier", "256x256_diffusion", [
        "the file is a noisy-image classifier but the requested model is a diffusion model",
        "looks like 256x256_classifier",
    ]),
    ("256x256_diffusion", "256x256_classifier", [
        "the file is a diffusion model but the requested model is a noisy-image classifier",
    ]),
    ("64_256_upsampler", "256x256_diffusion", [
        "the file is a super-resolution (upsampler) model", "looks like 64_256_upsampler",
    ]),
    ("imagenet64_uncond_100M_1500K", "64x64_diffusion", [
        "num_channels is 128 in the file (time_embed.0.weight [512, 128]) but 192 in the model",
        "the file is unconditional",
        "conv Downsample/Upsample (`op`/`conv` keys: resblock_updown False, IDDPM style)",
        "looks like imagenet64_uncond_100M_1500K / imagenet64_uncond_vlb_100M_1500K",
    ]),
    ("512x512_diffusion", "256x256_diffusion", [
        "the file has 21 input blocks but the model 18", "looks like 512x512_diffusion",
    ]),
    ("128x128_diffusion", "256x256_diffusion", ["input blocks", "looks like 128x128_diffusion"]),
    ("256x256_diffusion_uncond", _variant("256x256_diffusion_uncond", model_channels=128), [
        "does not fit the given network spec",
        "num_channels is 256 in the file (time_embed.0.weight [1024, 256]) but 128 in the model",
    ]),
    ("256x256_diffusion_uncond", _variant("256x256_diffusion_uncond", out_channels=3), [
        "the file predicts 6 output channels (learn_sigma True) but the model 3 (learn_sigma False)",
    ]),
    ("256x256_diffusion_uncond", _variant("256x256_diffusion_uncond", num_res_blocks=3), [
        "the file has 18 input blocks but the model 24 (num_res_blocks, channel_mult or image size differ)",
    ]),
    ("256x256_diffusion_uncond", _variant("256x256_diffusion_uncond", attention_resolutions=[16, 32]), [
        "the file has 16 attention blocks but the model 11 (attention_resolutions differ)",
    ]),
    (_variant("256x256_diffusion", num_head_channels=-1, num_heads=4, channel_mult=[1, 1, 2, 2, 4, 8]),
     "256x256_diffusion", [
        "2 unexpected (e.g. input_blocks.16.0.skip_connection.weight), 124 with other shapes (e.g. "
        "input_blocks.16.0.in_layers.2.weight: [2048, 1024, 3, 3] in the file, [1024, 1024, 3, 3] in the model)",
        "no official checkpoint has this layout",
    ]),
]


@pytest.mark.parametrize(("source", "target", "phrases"), MISMATCHES, ids=lambda v: v if isinstance(v, str) else None)
def test_other_configuration_is_diagnosed(tmp_path, source, target, phrases):
    message = _load_error(target, _meta_file(tmp_path, source))
    for phrase in phrases:
        assert phrase in message, message


# ---------------------------------------------------------------------------------------------------------------------
# Download against a local HTTP server


class _Server:
    """Serves `payload` at /tiny_test.pt with optional Range support and a connection cut after `cut_after` bytes."""

    def __init__(self) -> None:
        self.payload = bytes(range(256)) * 40
        self.honor_range = True
        self.cut_after: int | None = None
        self.status: int | None = None
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.headers.get("Range"))
                data, start = server.payload, 0
                if server.status is not None:
                    self.send_error(server.status)
                    return
                wanted = self.headers.get("Range")
                if wanted and server.honor_range:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if server.cut_after is None else body[: server.cut_after])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tiny_test.pt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


@pytest.fixture
def server(monkeypatch, tiny):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = _Server()
    monkeypatch.setitem(REGISTRY, TINY, replace(tiny, url=srv.url))
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _download_error(directory: Path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as err:
        ckpt.download(TINY, directory, progress=False, **kwargs)
    return str(err.value)


def test_fresh_download_records_sha256(server, tmp_path):
    path = ckpt.download(TINY, tmp_path, progress=False)
    assert path == tmp_path / "tiny_test.pt" and path.read_bytes() == server.payload
    assert (tmp_path / "tiny_test.pt.sha256").read_text() == f"{server.sha256}  tiny_test.pt\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_test.pt", "tiny_test.pt.sha256"]
    assert server.requests == [None]


def test_resumes_a_part_file(server, tmp_path):
    (tmp_path / "tiny_test.pt.part").write_bytes(server.payload[:1234])
    path = ckpt.download(TINY, tmp_path, progress=False)
    assert path.read_bytes() == server.payload and server.requests == ["bytes=1234-"]
    assert not (tmp_path / "tiny_test.pt.part").exists()


def test_restarts_when_the_server_ignores_range(server, tmp_path):
    server.honor_range = False
    (tmp_path / "tiny_test.pt.part").write_bytes(b"x" * 100)
    assert ckpt.download(TINY, tmp_path, progress=False).read_bytes() == server.payload


def test_complete_part_file_is_finished_without_data(server, tmp_path):
    (tmp_path / "tiny_test.pt.part").write_bytes(server.payload)
    assert ckpt.download(TINY, tmp_path, progress=False).read_bytes() == server.payload
    assert server.requests == [f"bytes={len(server.payload)}-"]


def test_interrupted_download_keeps_the_part_and_resumes(server, tmp_path):
    server.cut_after = 2000
    message = _download_error(tmp_path)
    assert "was interrupted (got 2,000 of 10,240 bytes); run the same command again to resume" in message
    assert not (tmp_path / "tiny_test.pt").exists()  # the final name appears only once complete
    assert (tmp_path / "tiny_test.pt.part").stat().st_size == 2000
    server.cut_after = None
    assert ckpt.download(TINY, tmp_path, progress=False).read_bytes() == server.payload
    assert server.requests[-1] == "bytes=2000-"


@pytest.mark.parametrize("field", ["sha256", "size"])
def test_download_that_differs_from_the_registry_is_moved_aside(server, tmp_path, monkeypatch, field):
    wrong = {"sha256": "0" * 64, "size": 999}[field]
    monkeypatch.setitem(REGISTRY, TINY, replace(REGISTRY[TINY], **{field: wrong}))
    message = _download_error(tmp_path)
    assert "is not the expected file" in message and "moved to" in message
    assert not (tmp_path / "tiny_test.pt").exists() and not (tmp_path / "tiny_test.pt.part").exists()
    assert (tmp_path / "tiny_test.pt.mismatch").read_bytes() == server.payload


def test_registry_sha256_accepts_the_right_file(server, tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, TINY, replace(REGISTRY[TINY], sha256=server.sha256, size=len(server.payload)))
    assert ckpt.download(TINY, tmp_path, progress=False).read_bytes() == server.payload
    assert not (tmp_path / "tiny_test.pt.sha256").exists()  # the registry is the reference, no sidecar needed


def test_later_download_is_checked_against_the_recorded_sha256(server, tmp_path):
    ckpt.download(TINY, tmp_path, progress=False)
    (tmp_path / "tiny_test.pt").unlink()
    server.payload = server.payload[::-1]
    message = _download_error(tmp_path)
    assert "tiny_test.pt.sha256 (recorded at the first download)" in message
    assert (tmp_path / "tiny_test.pt.mismatch").exists()


def test_finished_file_is_verified_and_never_destroyed(server, tmp_path):
    path = ckpt.download(TINY, tmp_path, progress=False)
    assert ckpt.download(TINY, tmp_path, progress=False) == path
    damaged = server.payload[:-1] + b"!"
    path.write_bytes(damaged)
    message = _download_error(tmp_path)
    assert f"{path} has sha256" in message and "delete it" in message
    assert path.read_bytes() == damaged
    assert server.requests == [None]  # neither call touched the network


def test_unreachable_server(tiny, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tiny_test.pt"
    message = _download_error(tmp_path, url=url)
    assert f"cannot reach 127.0.0.1:{port}" in message
    assert f"download {url} by hand into {tmp_path}/" in message and f"verify {TINY} --dir {tmp_path}" in message


def test_http_error(server, tmp_path):
    server.status = 404
    message = _download_error(tmp_path)
    assert "the server answered HTTP 404" in message and "by hand" in message


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def _tiny_payload(server) -> None:
    buffer = io.BytesIO()
    torch.save(_random_state(ckpt.network_spec(TINY)), buffer)
    server.payload = buffer.getvalue()


def test_cli_download_and_verify(server, tmp_path, capsys):
    _tiny_payload(server)
    assert ckpt.main(["download", TINY, "--dir", str(tmp_path)]) == 0
    assert ckpt.main(["verify", TINY, "--dir", str(tmp_path)]) == 0
    assert f"ok  {TINY}  sha256 {server.sha256}" in capsys.readouterr().out
    with open(tmp_path / "tiny_test.pt", "ab") as fh:
        fh.write(b"\0")
    assert ckpt.main(["verify", TINY, "--dir", str(tmp_path)]) == 1
    assert f"FAILED  {TINY}: " in capsys.readouterr().err
    assert (tmp_path / "tiny_test.pt").exists()


def test_cli_verify_of_a_hand_downloaded_file_records_its_sha256(tiny, tmp_path, capsys):
    _save(_random_state(ckpt.network_spec(TINY)), tmp_path / "tiny_test.pt")
    assert ckpt.main(["verify", TINY, "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "tiny_test.pt.sha256").read_text().split()[0] == ckpt.file_sha256(tmp_path / "tiny_test.pt")


def test_cli_verify_loads_strictly(tiny, tmp_path, capsys):
    _save(_random_state({**ckpt.network_spec(TINY), "num_classes": None}), tmp_path / "tiny_test.pt")
    assert ckpt.main(["verify", TINY, "--dir", str(tmp_path)]) == 1
    assert "the file is unconditional" in capsys.readouterr().err


def test_cli_unknown_name(tmp_path, capsys):
    assert ckpt.main(["download", "64x64_difusion", "--dir", str(tmp_path)]) == 1
    assert "error: unknown checkpoint '64x64_difusion'; did you mean '64x64_diffusion'?" in capsys.readouterr().err


def test_cli_list(tmp_path, capsys):
    (tmp_path / "lsun_cat.pt").write_bytes(b"")
    (tmp_path / "lsun_horse.pt.part").write_bytes(b"12345")
    assert ckpt.main(["list", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert list(rows) == list(REGISTRY) and rows["ffhq_10m"][-1].startswith("https://drive.google.com/")
    assert rows["lsun_cat"][4] == "yes" and rows["lsun_bedroom"][4] == "no" and rows["lsun_horse"][4] == "partial"
    assert rows["256x256_diffusion_uncond"][1:4] == ["diffusion", "adm", "552.8M"]
    assert rows["256x256_diffusion_uncond"][-1] == REGISTRY["256x256_diffusion_uncond"].url


def test_cli_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "guided_diffusion.checkpoints", "list"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "imagenet64_uncond_100M_1500K" in result.stdout


def test_ffhq_10m_builds_on_meta_and_asks_for_a_manual_download(tmp_path):
    """DPS's FFHQ model: flags of DPS's model_config.yaml, the 4 attention blocks of the facts sheet, no direct link."""
    info = REGISTRY["ffhq_10m"]
    model = ckpt.build_model("ffhq_10m")
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == info.num_params
    assert len(model.state_dict()) == info.num_state_dict_keys
    blocks = [name for name, module in model.named_modules() if type(module).__name__ == "AttentionBlock"]
    assert blocks == ["input_blocks.9.1", "middle_block.1", "output_blocks.2.1", "output_blocks.3.1"]
    with pytest.raises(CheckpointError, match=r"no direct download link: fetch ffhq_10m.pt by hand from https://"):
        ckpt.download("ffhq_10m", tmp_path)
    assert "ffhq_10m" not in ckpt._names(["all"])
