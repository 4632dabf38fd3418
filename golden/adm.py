"""Checks of the ADM, SAG and PAG fixtures: weights, schedules, forward passes, guided steps and sampling loops."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from guidance.attention import attention_plan
from guidance.base import Guider
from guidance.classifier import DropLabels, classifier_cond_fn
from guidance.compat import paper_scale
from guidance.pag import PAG, legacy_layouts
from guidance.perturbations import identity_attention
from guidance.sag import SAG, sag_attention_map, sag_column_sums
from guided_diffusion.diffusion import GaussianDiffusion, create_diffusion, named_betas, quantize_uint8
from guided_diffusion.respace import space_timesteps

from .fixture import (
    FAIL,
    PASS,
    SCHEDULE_TOLERANCE,
    SKIP,
    Fixture,
    FixtureError,
    Result,
    compare,
    describe_tolerance,
    flatten,
)


# ------------------------------------------------------------------------------------------------ variants
@dataclass
class Variant:
    """How to sample one fixture variant: the network callable and the classifier gradient (or None)."""

    model: Callable[..., torch.Tensor]
    cond_fn: Callable[..., torch.Tensor] | None
    record: dict[str, torch.Tensor] | None = None


def _pag(fixture: Fixture, diffusion: GaussianDiffusion, layers: list[str] | None = None,
         upstream_script: bool = True) -> Guider:
    """PAG as the fixture's sidecar describes it; `upstream_script` adds the script's legacy-layout reset."""
    cfg = fixture.sidecar["pag"]
    return PAG(fixture.model, diffusion, layers or cfg["drop_layers"], paper_scale(cfg["guide_scale"]),
               upstream_legacy_layout=upstream_script)


def _sag(fixture: Fixture, diffusion: GaussianDiffusion) -> Guider:
    cfg = fixture.sidecar["sag"]
    return SAG(fixture.model, diffusion, cfg["layer"], paper_scale(cfg["guide_scale"]),
               blur_sigma=cfg["blur_sigma"], blur_kernel=cfg.get("kernel_size", 31), map_heads="unet")


GUIDERS: dict[str, Callable[[Fixture, GaussianDiffusion], Guider]] = {
    "sag": _sag,
    "pag": _pag,
    "pag_semantic": lambda fixture, diffusion: _pag(fixture, diffusion, upstream_script=False),
}


def make_variant(fixture: Fixture, name: str, diffusion: GaussianDiffusion) -> Variant | None:
    """baseline, cg, and <guidance>[_cg] for every guidance in GUIDERS; None when unsupported."""
    base, cg = (name[:-3], True) if name.endswith("_cg") else (name, name == "cg")
    if base in ("baseline", "cg"):
        model: Callable[..., torch.Tensor] = DropLabels(fixture.model)
        record = None
    elif base in GUIDERS:
        guider = GUIDERS[base](fixture, diffusion)
        guider.record = record = {}
        model = guider
    else:
        return None
    return Variant(model, fixture.cond_fn() if cg else None, record)


def _unsupported(name: str) -> str:
    return f"variant {name!r} is not supported yet (guidance issue)"


# ------------------------------------------------------------------------------------------------ checkers
def check_weights(fixture: Fixture) -> Iterator[Result]:
    """Weights load strictly into models built from the fixture's flags / classifier kwargs."""
    for key, build in (("model_state_dict", lambda: fixture.model), ("classifier_state_dict",
                                                                       lambda: fixture.classifier)):
        if fixture.data.get(key) is None:
            continue
        net = build()
        ours = net.state_dict()
        errs = [compare(key, ours[k].float(), v.float(), "exact").max_abs_err or 0.0
                for k, v in fixture.data[key].items()]
        yield Result(f"{fixture.stem}/load/{key}", PASS if max(errs) == 0.0 else FAIL, max(errs), "exact")


def check_schedules(fixture: Fixture) -> Iterator[Result]:
    for entry_name, entry in fixture.data.items():
        steps, schedule = int(entry["diffusion_steps"]), str(entry["noise_schedule"])
        respacing = str(entry["timestep_respacing"])
        diffusion = create_diffusion(steps, schedule, timestep_respacing=respacing)
        ours = {
            "base_betas": named_betas(schedule, steps),
            "use_timesteps_sorted": np.array(space_timesteps(steps, respacing)),
            "timestep_map": diffusion.timestep_map,
        }
        for key, ref in entry.items():
            if not torch.is_tensor(ref):
                continue
            value = ours[key] if key in ours else getattr(diffusion, key, None)
            name = f"{fixture.stem}/{entry_name}/{key}"
            if value is None:
                yield Result(name, SKIP, note="unknown schedule array")
                continue
            tol = "exact" if ref.dtype == torch.int64 else SCHEDULE_TOLERANCE
            yield compare(name, torch.from_numpy(np.asarray(value)), ref, tol)


def _forward_variant(key: str) -> str:
    if key.startswith(("out_pag", "pag")):
        return "pag"
    if key.startswith("sag"):
        return "sag"
    if key.startswith("clf"):
        return "cg"
    return "baseline"


def _capture_outputs(model: torch.nn.Module, names: list[str], call: Callable[[], Any]) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out))
               for n in names if n in modules]
    try:
        call()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def check_forward(fixture: Fixture) -> Iterator[Result]:
    data = flatten(fixture.data)
    x, t = data["x"], data["t"]
    y = data.get("y")
    model_fn = DropLabels(fixture.model)
    block_names = [k.split(".", 1)[1] for k in data if k.startswith("attn_block_out.")]
    ours: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        blocks = _capture_outputs(fixture.model, block_names, lambda: ours.__setitem__("out", model_fn(x, t, y=y)))
    if "out_fp16" in data:
        with torch.no_grad():
            ours["out_fp16"] = DropLabels(fixture.build_model(use_fp16=True))(x, t, y=y).float()
    for name, value in blocks.items():
        ours[f"attn_block_out.{name}"] = value
    if "clf_logits" in data or "clf_cond_grad" in data:
        if fixture.classifier is not None:
            with torch.no_grad():
                ours["clf_logits"] = fixture.classifier(x, t)
            if y is not None:
                scale = float(data.get("clf_scale", fixture.classifier_scale))
                ours["clf_cond_grad"] = classifier_cond_fn(fixture.classifier, scale)(x, t, y=y)
    with torch.no_grad():
        ours.update(_forward_guidance(fixture, data))
    for key, ref in data.items():
        if key in ("x", "t", "y") or not torch.is_tensor(ref):
            continue
        name = f"{fixture.stem}/{_forward_variant(key)}/{key}"
        if key in ours:
            yield compare(name, ours[key], ref, fixture.tol(key))
        elif key == "clf_cond_grad" and y is None:
            yield Result(name, SKIP, note="the fixture stores no labels y for this gradient")
        else:
            yield Result(name, SKIP, note=_unsupported(_forward_variant(key)))


def _forward_guidance(fixture: Fixture, data: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """PAG-perturbed forwards and SAG's captured map, for the keys the fixture holds (README 5.1)."""
    x, t, y = data["x"], data["t"], data.get("y")
    model, batch = fixture.model, data["x"].shape[0]
    run = DropLabels(model)
    ours: dict[str, torch.Tensor] = {}

    def perturbed(layers: list[str]) -> torch.Tensor:
        with attention_plan(model, {name: [(slice(0, batch), identity_attention)] for name in layers}):
            return run(x, t, y=y)

    if "pag" in fixture.sidecar:
        drop_layers = list(fixture.sidecar["pag"]["drop_layers"])
        if "out_pag" in data:
            ours["out_pag"] = perturbed(drop_layers)
        for key in data:
            if key.startswith("out_pag_single_eps."):
                ours[key] = perturbed([key.split(".", 1)[1]])[:, : x.shape[1]]
        with legacy_layouts(model):
            if "out_pag_script_unperturbed" in data:
                ours["out_pag_script_unperturbed"] = run(x, t, y=y)
            if "out_pag_script" in data:
                ours["out_pag_script"] = perturbed(drop_layers)
    if "sag" in fixture.sidecar and any(k.startswith("sag_attn") for k in data):
        sag = _sag(fixture, fixture.diffusion(""))
        _, qkv = sag.capture_qkv(x, t, {"y": y})
        attn_map = sag_attention_map(qkv, sag.heads, sag.layout)
        ours["sag_attn_map"] = attn_map
        if "sag_attn_map_row_stride" in data:
            ours["sag_attn_map_rows"] = attn_map[:, :: int(data["sag_attn_map_row_stride"])]
        colsum = sag_column_sums(qkv, sag.heads, sag.layout)
        ours["sag_attn_colsum"] = colsum
        ours["sag_attn_mask_lowres"] = (colsum > sag.threshold).reshape(-1, sag.resolution, sag.resolution)
    return ours


def _recorded_noise(noises: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A noise source that replays the fixture's randn_like draws in order."""
    stream = iter(noises)

    def noise_fn(x: torch.Tensor) -> torch.Tensor:
        try:
            value = next(stream)
        except StopIteration as err:
            raise FixtureError("the sampler drew more noise than the fixture recorded") from err
        if value.shape != x.shape:
            raise FixtureError(f"recorded noise has shape {tuple(value.shape)}, the sampler wants {tuple(x.shape)}")
        return value

    return noise_fn


def _schedule_results(fixture: Fixture, prefix: str, diffusion: GaussianDiffusion,
                      schedule: Mapping[str, torch.Tensor]) -> Iterator[Result]:
    for key, ref in schedule.items():
        ours = getattr(diffusion, key)
        tol = "exact" if ref.dtype == torch.int64 else SCHEDULE_TOLERANCE
        yield compare(f"{prefix}/schedule/{key}", torch.from_numpy(np.asarray(ours)), ref, tol)


def _variant_specs(fixture: Fixture, mode_data: Mapping[str, Any], reserved: set[str], diffusion: GaussianDiffusion,
                   prefix: str) -> tuple[list[tuple[str, Mapping[str, Any], Variant]], list[Result]]:
    """The mode's variants this code can run, as (name prefix, reference tensors, variant), and SKIPs for the rest."""
    runnable, skipped = [], []
    for variant, refs in mode_data.items():
        if variant in reserved or not isinstance(refs, Mapping):
            continue
        spec = make_variant(fixture, variant, diffusion)
        if spec is None:
            skipped += [Result(f"{prefix}/{variant}/{key}", SKIP, note=_unsupported(variant)) for key in refs]
        else:
            runnable.append((f"{prefix}/{variant}", refs, spec))
    return runnable, skipped


def check_steps(fixture: Fixture) -> Iterator[Result]:
    for mode, mode_data in fixture.data.items():
        common = mode_data["common"]
        use_ddim = mode == "ddim" or str(common["respacing"]).startswith("ddim")
        diffusion = fixture.diffusion(str(common["respacing"]))
        prefix = f"{fixture.stem}/{mode}"
        yield from _schedule_results(fixture, prefix, diffusion, mode_data.get("schedule", {}))
        x, t = common["x_t"], common["t_index"]
        kwargs = {"y": common["y"]} if torch.is_tensor(common.get("y")) else {}
        t_model = diffusion.model_timesteps(t)
        model_fn = DropLabels(fixture.model)
        with torch.no_grad():
            out = diffusion.p_mean_variance(model_fn, x, t, model_kwargs=kwargs)
            ours = {"t_model": t_model, "model_out": model_fn(x, t_model, **kwargs),
                    "pred_xstart": out["pred_xstart"], "log_variance": out["log_variance"]}
        if "cond_grad" in common and fixture.classifier is not None:
            ours["cond_t"] = t_model
            ours["cond_grad"] = fixture.cond_fn()(x, t_model, **kwargs)
        for key, ref in common.items():
            if key in ("x_t", "noise", "t_index", "respacing", "y") or not torch.is_tensor(ref):
                continue
            name = f"{prefix}/common/{key}"
            yield compare(name, ours[key], ref, fixture.tol(key)) if key in ours else Result(name, SKIP)
        runnable, skipped = _variant_specs(fixture, mode_data, {"common", "schedule"}, diffusion, prefix)
        yield from skipped
        for vprefix, refs, spec in runnable:
            step = diffusion.ddim_sample if use_ddim else diffusion.p_sample
            result = step(spec.model, x, t, cond_fn=spec.cond_fn, model_kwargs=kwargs,
                          noise_fn=_recorded_noise([common["noise"]]))
            result.update(spec.record or {})
            result["mean_final"] = result.get("mean")
            result["pred_xstart_final"] = result["pred_xstart"]
            if spec.record:
                result["pred_xstart_guided"] = diffusion.predict_xstart_from_eps(x, t, spec.record["guided_eps"])\
                    .clamp(-1, 1)
            for key, ref in refs.items():
                name = f"{vprefix}/{key}"
                if result.get(key) is None:
                    yield Result(name, SKIP, note=f"{key!r} is not produced by this variant")
                else:
                    yield compare(name, result[key], ref, fixture.tol(key))


def check_loops(fixture: Fixture) -> Iterator[Result]:
    for mode, mode_data in fixture.data.items():
        respacing = str(mode_data["respacing"])
        use_ddim = respacing.startswith("ddim")
        diffusion = fixture.diffusion(respacing)
        prefix = f"{fixture.stem}/{mode}"
        yield from _schedule_results(fixture, prefix, diffusion, mode_data.get("schedule", {}))
        if "timesteps_index_order" in mode_data:
            order = torch.arange(diffusion.num_timesteps - 1, -1, -1)
            yield compare(f"{prefix}/timesteps_index_order", order, mode_data["timesteps_index_order"], "exact")
        x_T = mode_data["x_T"]
        y = mode_data.get("y")
        kwargs = {"y": y} if torch.is_tensor(y) else {}
        runnable, skipped = _variant_specs(fixture, mode_data, {"schedule"}, diffusion, prefix)
        yield from skipped
        for vprefix, refs, spec in runnable:
            steps = [out["sample"] for out in diffusion.sample_loop_progressive(
                spec.model, tuple(x_T.shape), noise=x_T, cond_fn=spec.cond_fn, model_kwargs=kwargs,
                use_ddim=use_ddim, noise_fn=_recorded_noise(list(mode_data["noise"])))]
            for key, ref in refs.items():
                name = f"{vprefix}/{key}"
                if key == "x_steps":
                    tol = fixture.tol("x_steps")
                    results = [compare(name, s, r, tol) for s, r in zip(steps, ref, strict=True)]
                    worst = max((r.max_abs_err or 0.0) for r in results)
                    ok = all(r.status == PASS for r in results)
                    yield Result(name, PASS if ok else FAIL, worst, describe_tolerance(tol), f"{len(results)} steps")
                elif key == "uint8_nhwc":
                    yield compare(name, quantize_uint8(steps[-1]), ref, fixture.tol(key))
                elif key == "labels_npz":
                    yield compare(name, y if torch.is_tensor(y) else torch.empty(0), ref, "exact")
                else:
                    yield Result(name, SKIP, note=f"unknown loop key {key!r}")


def recognise(data: Mapping[str, Any]) -> str | None:
    """The ADM fixture kind of a file by its structure (README section 5); None when it is not one."""
    if "model_state_dict" in data:
        return "weights"
    if {"x", "t", "out"} <= set(data):
        return "forward"
    values = [v for v in data.values() if isinstance(v, Mapping)]
    if values and len(values) == len(data):
        if all("base_betas" in v for v in values):
            return "schedules"
        if all("common" in v for v in values):
            return "steps"
        if all("x_T" in v and "noise" in v for v in values):
            return "loops"
    return None



CHECKERS: dict[str, Callable[[Fixture], Iterator[Result]]] = {
    "weights": check_weights,
    "forward": check_forward,
    "steps": check_steps,
    "loops": check_loops,
    "schedules": check_schedules,
}


