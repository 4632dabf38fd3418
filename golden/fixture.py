"""A fixture file and its sidecar, tolerances and comparisons (format: shared/golden/README.md).

Shared by every fixture family's checks: a family module recognises its files by structure and yields `Result`s.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from guidance.classifier import classifier_cond_fn
from guided_diffusion.diffusion import GaussianDiffusion, create_diffusion
from guided_diffusion.factory import build_network, diffusion_spec_from_flags, unet_spec_from_flags
from guided_diffusion.layout import resolve_memory_format

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


def describe_tolerance(tol: Any) -> str:
    if isinstance(tol, Mapping):
        return f"atol={tol['atol']:g},rtol={tol['rtol']:g}"
    return "exact" if tol == "exact" else f"lsb<={LSB_MAX_FRACTION:.1%}"


def compare(name: str, ours: torch.Tensor, ref: torch.Tensor, tol: Any) -> Result:
    """|ours - ref| <= atol + rtol |ref|; "exact"; or "lsb": uint8 within 1 on at most 0.5 % of values."""
    ours = torch.as_tensor(ours).detach().cpu()
    ref = torch.as_tensor(ref).detach().cpu()
    if ours.shape != ref.shape:
        note = f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
        return Result(name, FAIL, None, describe_tolerance(tol), note)
    diff = (ours.double() - ref.double()).abs()
    err = float(diff.max()) if diff.numel() else 0.0
    if tol == "exact":
        ok = err == 0.0
    elif tol == "lsb":
        ok = err <= 1.0 and float((diff > 0).double().mean()) <= LSB_MAX_FRACTION
    else:
        ok = bool((diff <= tol["atol"] + tol["rtol"] * ref.double().abs()).all())
    return Result(name, PASS if ok else FAIL, err, describe_tolerance(tol))


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
            raise FixtureError(f"{path}: cannot be read ({type(err).__name__}: {err}); copy the fixture and its "
                               f"{sidecar_path.name} again from the golden set (../shared/golden/)") from err
        if not isinstance(data, dict):
            raise FixtureError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
        return cls(path, data, sidecar, _sidecar_tolerances(sidecar))

    @property
    def stem(self) -> str:
        return self.path.stem

    def sibling_name(self, kind: str) -> str:
        """The file of another kind in this fixture's set by the naming convention: dps32_steps -> dps32_<kind>.pt."""
        return f"{self.stem.rsplit('_', 1)[0]}_{kind}.pt"

    def sibling(self, kind: str) -> dict[str, Any]:
        path = self.path.parent / self.sibling_name(kind)
        if not path.is_file():
            raise FixtureError(f"{self.path}: its {kind} file {path} is missing")
        return torch.load(path, map_location="cpu", weights_only=True)

    def tol(self, key: str) -> Any:
        return _tolerance_for(key, self.tolerances)

    @cached_property
    def weights(self) -> dict[str, Any]:
        if self.data.get("model_state_dict") is not None:
            return self.data
        name = self.sidecar.get("weights_file") or self.sibling_name("weights")
        weights_path = self.path.parent / name
        if not weights_path.is_file():
            raise FixtureError(f"{self.path}: weights file {weights_path} is missing")
        return torch.load(weights_path, map_location="cpu", weights_only=True)

    @cached_property
    def flags(self) -> dict[str, Any]:
        return dict(self.weights.get("model_flags") or self.sidecar["model_flags"])

    def build_model(self, **overrides: Any) -> torch.nn.Module:
        """The fixture's network in the layout the CPU sampler runs it in (speed.memory_format: auto)."""
        spec = {**unet_spec_from_flags(self.flags), **overrides}
        model = build_network(spec)
        model.load_state_dict(self.weights["model_state_dict"], strict=True)
        precision = "fp16" if spec.get("use_fp16") else "fp32"
        return model.to(memory_format=resolve_memory_format("auto", precision, torch.device("cpu"))).eval()

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


