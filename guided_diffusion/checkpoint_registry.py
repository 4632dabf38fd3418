"""The official ADM (guided-diffusion, jul-2021) and IDDPM (improved-diffusion, march-2021) checkpoints, as data.

Each entry keeps the flags exactly as the upstream README gives them; the full flag dict is those flags over the
script defaults of the model's family, as upstream's argparse builds it (the factory translates it into a network
spec). Also: URL, family (adm | iddpm), kind (diffusion | classifier | upsampler), parameter and state-dict key
counts, and the README's classifier pairing for class-guided sampling.

`sha256` and `size` are None where unknown: the downloader then records the sha256 of the first download in a
`NAME.pt.sha256` sidecar and verifies later copies against it. Fill them in here once known; they take precedence.

Third-party checkpoints that have no direct link (`manual_download`: their `url` is the page to fetch them from by
hand) are verified, and their sha256 recorded, on first use (`checkpoints verify NAME`).
"""

from __future__ import annotations

from typing import Any

# guided-diffusion script_util.model_and_diffusion_defaults()
ADM_DEFAULTS: dict[str, Any] = {
    "image_size": 64, "num_channels": 128, "num_res_blocks": 2, "num_heads": 4, "num_heads_upsample": -1,
    "num_head_channels": -1, "attention_resolutions": "16,8", "channel_mult": "", "dropout": 0.0,
    "class_cond": False, "use_checkpoint": False, "use_scale_shift_norm": True, "resblock_updown": False,
    "use_fp16": False, "use_new_attention_order": False, "learn_sigma": False, "diffusion_steps": 1000,
    "noise_schedule": "linear", "timestep_respacing": "", "use_kl": False, "predict_xstart": False,
    "rescale_timesteps": False, "rescale_learned_sigmas": False,
}
# guided-diffusion sr_model_and_diffusion_defaults(): no image_size / channel_mult / attention order
SUPERRES_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in ADM_DEFAULTS.items() if k not in ("image_size", "channel_mult", "use_new_attention_order")},
    "large_size": 256, "small_size": 64,
}
# guided-diffusion classifier_defaults()
CLASSIFIER_DEFAULTS: dict[str, Any] = {
    "image_size": 64, "classifier_use_fp16": False, "classifier_width": 128, "classifier_depth": 2,
    "classifier_attention_resolutions": "32,16,8", "classifier_use_scale_shift_norm": True,
    "classifier_resblock_updown": True, "classifier_pool": "attention",
}
# improved-diffusion script_util.model_and_diffusion_defaults(): rescaled timesteps and VB terms
IDDPM_DEFAULTS: dict[str, Any] = {
    "image_size": 64, "num_channels": 128, "num_res_blocks": 2, "num_heads": 4, "num_heads_upsample": -1,
    "attention_resolutions": "16,8", "dropout": 0.0, "learn_sigma": False, "sigma_small": False,
    "class_cond": False, "diffusion_steps": 1000, "noise_schedule": "linear", "timestep_respacing": "",
    "use_kl": False, "predict_xstart": False, "rescale_timesteps": True, "rescale_learned_sigmas": True,
    "use_checkpoint": False, "use_scale_shift_norm": True,
}


def _parse_value(text: str, default: Any) -> Any:
    """Upstream's argparse types: str2bool for booleans, else the default's type."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"):
            raise ValueError(f"not a boolean: {text!r}")
        return text.lower() in ("true", "yes", "1", "t", "y")
    return type(default)(text)


def flags_from_readme(readme_flags: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """'--name value ...' over the family's defaults: the flag dict upstream's scripts end up with."""
    words = readme_flags.split()
    if len(words) % 2 or not all(w.startswith("--") for w in words[::2]):
        raise ValueError(f"flags must be '--name value' pairs: {readme_flags!r}")
    flags = dict(defaults)
    for name, value in zip(words[::2], words[1::2], strict=True):
        key = name[2:]
        if key not in defaults:
            raise ValueError(f"unknown flag --{key}")
        flags[key] = _parse_value(value, defaults[key])
    return flags


def _entry(url: str, family: str, kind: str, description: str, num_params: int, num_state_dict_keys: int,
           readme_flags: str, classifier: str | None = None, classifier_scale: float | None = None,
           manual_download: bool = False) -> dict:
    if kind == "classifier":
        defaults = CLASSIFIER_DEFAULTS
    elif kind == "upsampler":
        defaults = SUPERRES_DEFAULTS
    else:
        defaults = IDDPM_DEFAULTS if family == "iddpm" else ADM_DEFAULTS
    return {
        "url": url, "family": family, "kind": kind, "description": description, "num_params": num_params,
        "num_state_dict_keys": num_state_dict_keys, "sha256": None, "size": None, "classifier": classifier,
        "classifier_scale": classifier_scale, "manual_download": manual_download,
        "flags": flags_from_readme(readme_flags, defaults),
    }


CHECKPOINTS: dict[str, dict] = {
    "64x64_diffusion": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/64x64_diffusion.pt",
        family="adm", kind="diffusion", description="ImageNet 64x64, class-conditional",
        num_params=295904454, num_state_dict_keys=541,
        classifier="64x64_classifier", classifier_scale=1.0,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 "
            "--image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 "
            "--num_head_channels 64 --num_res_blocks 3 --resblock_updown True --use_new_attention_order True "
            "--use_fp16 True --use_scale_shift_norm True"
        ),
    ),
    "128x128_diffusion": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/128x128_diffusion.pt",
        family="adm", kind="diffusion", description="ImageNet 128x128, class-conditional",
        num_params=421529606, num_state_dict_keys=493,
        classifier="128x128_classifier", classifier_scale=0.5,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 128 "
            "--learn_sigma True --noise_schedule linear --num_channels 256 --num_heads 4 --num_res_blocks 2 "
            "--resblock_updown True --use_fp16 True --use_scale_shift_norm True"
        ),
    ),
    "256x256_diffusion": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion.pt",
        family="adm", kind="diffusion", description="ImageNet 256x256, class-conditional",
        num_params=553838086, num_state_dict_keys=567,
        classifier="256x256_classifier", classifier_scale=1.0,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 256 "
            "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
            "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True"
        ),
    ),
    "256x256_diffusion_uncond": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
        family="adm", kind="diffusion", description="ImageNet 256x256, unconditional (the SAG/PAG model)",
        num_params=552814086, num_state_dict_keys=566,
        classifier="256x256_classifier", classifier_scale=10.0,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256 "
            "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
            "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True"
        ),
    ),
    "512x512_diffusion": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/512x512_diffusion.pt",
        family="adm", kind="diffusion", description="ImageNet 512x512, class-conditional, fp32",
        num_params=558997638, num_state_dict_keys=645,
        classifier="512x512_classifier", classifier_scale=4.0,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 512 "
            "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
            "--num_res_blocks 2 --resblock_updown True --use_fp16 False --use_scale_shift_norm True"
        ),
    ),
    "64x64_classifier": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/64x64_classifier.pt",
        family="adm", kind="classifier", description="noisy-image classifier for 64x64_diffusion (depth 4)",
        num_params=65438568, num_state_dict_keys=307,
        readme_flags="--image_size 64 --classifier_depth 4",
    ),
    "128x128_classifier": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/128x128_classifier.pt",
        family="adm", kind="classifier", description="noisy-image classifier for 128x128_diffusion",
        num_params=42568040, num_state_dict_keys=221,
        readme_flags="--image_size 128",
    ),
    "256x256_classifier": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_classifier.pt",
        family="adm", kind="classifier", description="noisy-image classifier for the 256x256 models",
        num_params=54096360, num_state_dict_keys=249,
        readme_flags="--image_size 256",
    ),
    "512x512_classifier": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/512x512_classifier.pt",
        family="adm", kind="classifier", description="noisy-image classifier for 512x512_diffusion",
        num_params=54448360, num_state_dict_keys=281,
        readme_flags="--image_size 512",
    ),
    "64_256_upsampler": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/64_256_upsampler.pt",
        family="adm", kind="upsampler", description="ImageNet 64 -> 256 super-resolution, class-conditional",
        num_params=311795910, num_state_dict_keys=567,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --large_size 256 "
            "--small_size 64 --learn_sigma True --noise_schedule linear --num_channels 192 --num_heads 4 "
            "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True"
        ),
    ),
    "128_512_upsampler": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/128_512_upsampler.pt",
        family="adm", kind="upsampler", description="ImageNet 128 -> 512 super-resolution, class-conditional",
        num_params=308835270, num_state_dict_keys=537,
        readme_flags=(
            "--attention_resolutions 32,16 --class_cond True --diffusion_steps 1000 --large_size 512 "
            "--small_size 128 --learn_sigma True --noise_schedule linear --num_channels 192 "
            "--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True "
            "--use_scale_shift_norm True"
        ),
    ),
    "lsun_bedroom": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/lsun_bedroom.pt",
        family="adm", kind="diffusion", description="LSUN bedroom 256x256, unconditional",
        num_params=552814086, num_state_dict_keys=566,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --dropout 0.1 "
            "--image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 "
            "--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True "
            "--use_scale_shift_norm True"
        ),
    ),
    "lsun_cat": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/lsun_cat.pt",
        family="adm", kind="diffusion", description="LSUN cat 256x256, unconditional",
        num_params=552814086, num_state_dict_keys=566,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --dropout 0.1 "
            "--image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 "
            "--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True "
            "--use_scale_shift_norm True"
        ),
    ),
    "lsun_horse": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/lsun_horse.pt",
        family="adm", kind="diffusion", description="LSUN horse 256x256, unconditional",
        num_params=552814086, num_state_dict_keys=566,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --dropout 0.1 "
            "--image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 "
            "--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True "
            "--use_scale_shift_norm True"
        ),
    ),
    "lsun_horse_nodropout": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/lsun_horse_nodropout.pt",
        family="adm", kind="diffusion", description="LSUN horse 256x256, unconditional, trained without dropout",
        num_params=552814086, num_state_dict_keys=566,
        readme_flags=(
            "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --dropout 0.0 "
            "--image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 "
            "--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True "
            "--use_scale_shift_norm True"
        ),
    ),
    "imagenet64_uncond_100M_1500K": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/march-2021/imagenet64_uncond_100M_1500K.pt",
        family="iddpm", kind="diffusion",
        description="IDDPM ImageNet 64x64, unconditional, L_hybrid (4000 cosine steps)",
        num_params=121063942, num_state_dict_keys=450,
        readme_flags=(
            "--image_size 64 --num_channels 128 --num_res_blocks 3 --learn_sigma True --diffusion_steps 4000 "
            "--noise_schedule cosine"
        ),
    ),
    "imagenet64_uncond_vlb_100M_1500K": _entry(
        url="https://openaipublic.blob.core.windows.net/diffusion/march-2021/imagenet64_uncond_vlb_100M_1500K.pt",
        family="iddpm", kind="diffusion", description="IDDPM ImageNet 64x64, unconditional, L_vlb (4000 cosine steps)",
        num_params=121063942, num_state_dict_keys=450,
        readme_flags=(
            "--image_size 64 --num_channels 128 --num_res_blocks 3 --learn_sigma True --diffusion_steps 4000 "
            "--noise_schedule cosine --use_kl True"
        ),
    ),
    # DPS (Chung et al., ICLR 2023) FFHQ 256 model, from the DPS README's Google Drive folder (no direct link);
    # flags = DPS configs/model_config.yaml (the ILVR FFHQ model's; channel_mult "" = the 256 px default).
    # PAG App. C.1 / Table 7 use it for DPS + PAG.
    "ffhq_10m": _entry(
        url="https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh",
        family="adm", kind="diffusion", description="FFHQ 256x256, unconditional (DPS / ILVR, 'seen 10M images')",
        num_params=93563910, num_state_dict_keys=362, manual_download=True,
        readme_flags=(
            "--attention_resolutions 16 --class_cond False --diffusion_steps 1000 --dropout 0.0 --image_size 256 "
            "--learn_sigma True --noise_schedule linear --num_channels 128 --num_head_channels 64 --num_heads 4 "
            "--num_heads_upsample -1 --num_res_blocks 1 --resblock_updown True --use_checkpoint False "
            "--use_fp16 False --use_new_attention_order False --use_scale_shift_norm True"
        ),
    ),
}
