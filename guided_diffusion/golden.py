"""Check reference fixtures (format: shared/golden/README.md) against this implementation.

    python -m guided_diffusion.golden FIXTURE.pt [FIXTURE.pt ...]

Every check prints one line `name  max_abs_err  tol  PASS|FAIL|SKIP`; the exit status is non-zero when a check
fails or a fixture cannot be interpreted. The fixture kind is recognised from the file's structure, not its name,
and tolerances come from its JSON sidecar (falling back to the README's table), so new reference data in the same
format is checked without code changes. Variants this code cannot run yet are reported as SKIP.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
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

from .diffusion import GaussianDiffusion, create_diffusion, named_betas, quantize_uint8
from .factory import build_network, diffusion_spec_from_flags, unet_spec_from_flags
from .respace import space_timesteps

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"

# README section 8, used where a sidecar gives no tolerance for a key.
DEFAULT_TOLERANCES: list[tuple[str, Any]] = [
    ("*mask*", "exact"),
    ("sag_attn_map*", {"atol": 1e-5, "rtol": 0.0}),
    ("sag_attn_colsum", {"atol": 3e-5, "rtol": 0.0}),
    ("clf_logits", {"atol": 1e-3, "rtol": 1e-4}),
    ("clf_cond_grad", {"atol": 1e-4, "rtol": 1e-4}),
    ("out_fp16", {"atol": 2e-2, "rtol": 0.0}),
    ("out*", {"atol": 1e-4, "rtol": 1e-4}),
    ("attn_block_out*", {"atol": 1e-4, "rtol": 1e-4}),
    ("uint8_nhwc", "lsb"),
    ("x_steps", {"atol": 2e-3, "rtol": 1e-3}),
    ("*", {"atol": 2e-4, "rtol": 1e-4}),
]
SCHEDULE_TOLERANCE = {"atol": 1e-12, "rtol": 1e-12}
LSB_MAX_FRACTION = 0.005


class FixtureError(Exception):
    """The fixture cannot be interpreted (missing sidecar, weights, or an unknown structure)."""


@dataclass
class Result:
    name: str
    status: str
    max_abs_err: float | None = None
    tol: str = ""
    note: str = ""

    def line(self) -> str:
        err = "-" if self.max_abs_err is None else f"{self.max_abs_err:.3e}"
        text = f"{self.name}  {err}  {self.tol or '-'}  {self.status}"
        return f"{text}  ({self.note})" if self.note else text


# --------------------------------------------------------------------------------------------- tolerances
def _sidecar_tolerances(sidecar: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Sidecar entries like {"out, out_pag*": {...}, "sag_mask, sag_attn_mask_lowres": "exact"} -> (glob, tol)."""
    rules: list[tuple[str, Any]] = []
    for names, tol in sidecar.get("recommended_tolerance_fp32_cpu", {}).items():
        if isinstance(tol, str):
            if "exact" in tol and "uint8" not in names:
                tol = "exact"
            elif "uint8" in names or "LSB" in tol or "|diff| <= 1" in tol:
                tol = "lsb"
            else:
                continue
        elif not (isinstance(tol, Mapping) and "atol" in tol):
            continue
        for name in names.split(","):
            pattern = name.split("(")[0].strip()
            if pattern == "all float tensors":
                pattern = "*"
            if pattern:
                rules.append((pattern, tol))
    # Specific patterns first, catch-alls last.
    return sorted(rules, key=lambda rule: rule[0] == "*")


def _tolerance_for(key: str, rules: list[tuple[str, Any]]) -> Any:
    leaf = key.split(".")[-1]
    for pattern, tol in rules + DEFAULT_TOLERANCES:
        if any(fnmatch.fnmatchcase(part, pattern) for part in (key, leaf, key.split(".")[0])):
            return tol
    raise AssertionError("the catch-all default always matches")


def _describe(tol: Any) -> str:
    if isinstance(tol, Mapping):
        return f"atol={tol['atol']:g},rtol={tol['rtol']:g}"
    return "exact" if tol == "exact" else f"lsb<={LSB_MAX_FRACTION:.1%}"


def compare(name: str, ours: torch.Tensor, ref: torch.Tensor, tol: Any) -> Result:
    """|ours - ref| <= atol + rtol |ref|; "exact"; or "lsb": uint8 within 1 on at most 0.5 % of values."""
    ours = torch.as_tensor(ours).detach().cpu()
    ref = torch.as_tensor(ref).detach().cpu()
    if ours.shape != ref.shape:
        return Result(name, FAIL, None, _describe(tol), f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
    diff = (ours.double() - ref.double()).abs()
    err = float(diff.max()) if diff.numel() else 0.0
    if tol == "exact":
        ok = err == 0.0
    elif tol == "lsb":
        ok = err <= 1.0 and float((diff > 0).double().mean()) <= LSB_MAX_FRACTION
    else:
        ok = bool((diff <= tol["atol"] + tol["rtol"] * ref.double().abs()).all())
    return Result(name, PASS if ok else FAIL, err, _describe(tol))


# ------------------------------------------------------------------------------------------------ fixture
def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": leaf}; lists stay leaves."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


@dataclass
class Fixture:
    path: Path
    data: dict[str, Any]
    sidecar: dict[str, Any]
    tolerances: list[tuple[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path) -> Fixture:
        if not path.is_file():
            raise FixtureError(f"{path}: no such file")
        sidecar_path = path.with_suffix(".json")
        if not sidecar_path.is_file():
            raise FixtureError(f"{path}: its sidecar {sidecar_path.name} is missing (every fixture needs one)")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            sidecar = json.loads(sidecar_path.read_text())
        except Exception as err:  # noqa: BLE001 - any load failure means "cannot interpret"
            raise FixtureError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err
        if not isinstance(data, dict):
            raise FixtureError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
        return cls(path, data, sidecar, _sidecar_tolerances(sidecar))

    @property
    def stem(self) -> str:
        return self.path.stem

    def tol(self, key: str) -> Any:
        return _tolerance_for(key, self.tolerances)

    @cached_property
    def weights(self) -> dict[str, Any]:
        if self.data.get("model_state_dict") is not None:
            return self.data
        name = self.sidecar.get("weights_file")
        if not name:
            raise FixtureError(f"{self.path}: sidecar names no weights_file")
        weights_path = self.path.parent / name
        if not weights_path.is_file():
            raise FixtureError(f"{self.path}: weights file {weights_path} is missing")
        return torch.load(weights_path, map_location="cpu", weights_only=True)

    @cached_property
    def flags(self) -> dict[str, Any]:
        return dict(self.weights.get("model_flags") or self.sidecar["model_flags"])

    def build_model(self, **overrides: Any) -> torch.nn.Module:
        model = build_network({**unet_spec_from_flags(self.flags), **overrides})
        model.load_state_dict(self.weights["model_state_dict"], strict=True)
        return model.eval()

    @cached_property
    def model(self) -> torch.nn.Module:
        return self.build_model()

    @cached_property
    def classifier(self) -> torch.nn.Module | None:
        kwargs = self.weights.get("classifier_kwargs")
        if kwargs is None:
            return None
        classifier = build_network({"kind": "classifier", **kwargs})
        classifier.load_state_dict(self.weights["classifier_state_dict"], strict=True)
        return classifier.eval()

    @property
    def classifier_scale(self) -> float:
        return float((self.sidecar.get("classifier") or {}).get("classifier_scale", 1.0))

    def cond_fn(self) -> Callable[..., torch.Tensor]:
        if self.classifier is None:
            raise FixtureError(f"{self.path}: a classifier-guided variant needs classifier weights")
        return classifier_cond_fn(self.classifier, self.classifier_scale)

    def diffusion(self, respacing: str) -> GaussianDiffusion:
        return create_diffusion(**diffusion_spec_from_flags(self.flags), timestep_respacing=respacing)


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
                    yield Result(name, PASS if ok else FAIL, worst, _describe(tol), f"{len(results)} steps")
                elif key == "uint8_nhwc":
                    yield compare(name, quantize_uint8(steps[-1]), ref, fixture.tol(key))
                elif key == "labels_npz":
                    yield compare(name, y if torch.is_tensor(y) else torch.empty(0), ref, "exact")
                else:
                    yield Result(name, SKIP, note=f"unknown loop key {key!r}")


def kind_of(data: Mapping[str, Any]) -> str:
    """Recognise a fixture by its structure (README section 5)."""
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
    raise FixtureError("unrecognised fixture structure (not weights, forward, steps, loops or schedules)")


CHECKERS: dict[str, Callable[[Fixture], Iterator[Result]]] = {
    "weights": check_weights,
    "forward": check_forward,
    "steps": check_steps,
    "loops": check_loops,
    "schedules": check_schedules,
}


def check_file(path: Path) -> list[Result]:
    fixture = Fixture.open(path)
    try:
        return list(CHECKERS[kind_of(fixture.data)](fixture))
    except FixtureError as err:
        raise FixtureError(f"{path}: {err}") from err
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise FixtureError(f"{path}: cannot be interpreted ({type(err).__name__}: {err})") from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixtures", nargs="+", type=Path, help="fixture .pt files (each with its .json sidecar)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    counts = {PASS: 0, FAIL: 0, SKIP: 0}
    broken = 0
    for path in args.fixtures:
        try:
            results = check_file(path)
        except FixtureError as err:
            print(f"ERROR  {err}", file=sys.stderr)
            broken += 1
            continue
        for result in results:
            counts[result.status] += 1
            print(result.line(), flush=True)
    print(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped, {broken} unreadable fixture(s)")
    return 1 if counts[FAIL] or broken else 0


if __name__ == "__main__":
    sys.exit(main())
