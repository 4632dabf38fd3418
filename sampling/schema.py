"""Config keys checked once, at load, so a wrong value is one sentence instead of a failure deep in a builder.

The schema is inferred from the YAML tree itself: a key is known when some file of the tree defines it, and its type
is the union of the types its values have in those files (an int where floats appear is fine; a key only ever null
takes anything). So a new key needs no registration beyond the YAML file that introduces it. What a type cannot say,
ranges, choices and patterns, is plain data next to the code that reads the key (`CONFIG_RULES` dicts), keyed by
dotted path:

    {"guidance.scale": {"min": 0.0}, "precision": {"choices": ("auto", "fp32")}, "sampler.timestep_respacing":
     {"pattern": r"(ddim)?[0-9]+", "allowed": "N or ddimN", "example": "ddim25"}}

Rule fields: min / max (inclusive), above (exclusive lower bound), choices, pattern (a full match of the value as
text) with `allowed` (how to say it), type (for keys only ever null in YAML: "int", "float", "str", "list", "bool"),
example.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

Rules = Mapping[str, Mapping[str, Any]]

_KIND_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "list": "a list", "dict": "a group of keys"}


def _kind(value: object) -> str | None:
    """The schema kind of a YAML value; None for null, `???` and interpolations (they say nothing of the type)."""
    if value is None or (isinstance(value, str) and (value == "???" or "${" in value)):
        return None
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", list),
                        ("dict", dict)):
        if isinstance(value, types):
            return kind
    return type(value).__name__


@dataclass
class Key:
    """What the tree's files put under one key: the kinds of its values, one example, its children (dicts) and the
    kinds of its list items."""

    kinds: set[str] = field(default_factory=set)
    example: object = None
    children: dict[str, Key] = field(default_factory=dict)
    items: set[str] = field(default_factory=set)

    def add(self, value: object) -> None:
        kind = _kind(value)
        if kind is None:
            return
        self.kinds.add(kind)
        if self.example is None and kind != "dict":
            self.example = value
        if kind == "dict":
            for name, child in value.items():
                if name != "defaults":
                    self.children.setdefault(str(name), Key()).add(child)
        elif kind == "list":
            self.items.update(k for k in map(_kind, value) if k is not None)

    def at(self, dotted: str) -> Key:
        node = self
        for part in filter(None, dotted.split(".")):
            node.kinds.add("dict")
            node = node.children.setdefault(part, Key())
        return node

    def merge(self, other: Key) -> None:
        self.kinds |= other.kinds
        self.items |= other.items
        self.example = self.example if self.example is not None else other.example
        for name, child in other.children.items():
            self.children.setdefault(name, Key()).merge(child)


def _package(path: Path, config_dir: Path, text: str) -> str:
    """Where a file's keys land: `# @package _global_` at the root, else under its group path (dotted)."""
    header = re.search(r"^#\s*@package\s+(\S+)", text, re.MULTILINE)
    if header:
        return "" if header.group(1) == "_global_" else header.group(1)
    return ".".join(path.relative_to(config_dir).parent.parts)


def infer_schema(config_dir: Path, skip: Iterable[str] = ()) -> Key:
    """The schema of every YAML file under `config_dir` (except the folders and files in `skip`), merged at their
    packages. A defaults entry `/group@where: option` (a group mounted elsewhere) gives `where` that group's keys."""
    root = Key(kinds={"dict"})
    mounts = []
    skipped = [config_dir / name for name in skip]
    paths = [p for p in sorted(config_dir.rglob("*.yaml")) if not any(p == s or s in p.parents for s in skipped)]
    # Groups' own files first, so a key's example in messages is its default rather than one experiment's value.
    for path in sorted(paths, key=lambda p: "@package _global_" in p.read_text()):
        text = path.read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            raise ConfigError(f"{path} is not valid YAML{line} ({getattr(err, 'problem', None) or err}); fix or "
                              "remove the file") from None
        package = _package(path, config_dir, text)
        root.at(package).add(data)
        for entry in data.get("defaults", []) if isinstance(data, dict) else []:
            for name in entry if isinstance(entry, dict) else ():
                group, _, where = str(name).partition("@")
                if where and not group.startswith("override"):
                    source = group.lstrip("/") if group.startswith("/") else ".".join(filter(None, (package, group)))
                    mounts.append((".".join(filter(None, (package, where))), source.replace("/", ".")))
    for where, source in mounts:
        root.at(where).merge(root.at(source))
    root.children.pop("hydra", None)  # Hydra's own settings never reach the job's config
    return root


def _describe(key: Key, rule: Mapping[str, Any]) -> str:
    if "choices" in rule:
        return "one of " + ", ".join(map(str, rule["choices"]))
    if "allowed" in rule:
        return rule["allowed"]
    kinds = {rule["type"]} if "type" in rule else key.kinds
    if kinds <= {"int", "float"} and "float" in kinds:
        kinds = {"float"}
    text = " or ".join(_KIND_NAMES.get(k, k) for k in sorted(kinds))
    bounds = [f">= {rule['min']}" if "min" in rule else "", f"> {rule['above']}" if "above" in rule else "",
              f"<= {rule['max']}" if "max" in rule else ""]
    return " ".join([text, " and ".join(b for b in bounds if b)]).strip()


def _example(dotted: str, key: Key, rule: Mapping[str, Any]) -> str:
    example = rule.get("example", rule["choices"][0] if "choices" in rule else key.example)
    if isinstance(example, bool):
        example = str(example).lower()
    elif isinstance(example, list):
        example = "[" + ",".join(map(str, example)) + "]"
    return f"e.g. {dotted}={example}" if example is not None else ""


def _kind_ok(value: object, kinds: set[str]) -> bool:
    kind = _kind(value)
    return not kinds or kind is None or kind in kinds or (kind == "int" and "float" in kinds)


def _reject(dotted: str, value: object, key: Key, rule: Mapping[str, Any], what: str = "") -> ConfigError:
    shown = value if not isinstance(value, str) else repr(value)
    tail = "; ".join(filter(None, [f"allowed: {_describe(key, rule)}", _example(dotted, key, rule)]))
    return ConfigError(f"config key {dotted} = {shown}{what} is not valid; {tail}")


def _check_value(dotted: str, value: object, key: Key, rule: Mapping[str, Any]) -> None:
    if value is None:
        return
    kinds = {rule["type"]} if "type" in rule else key.kinds
    if not _kind_ok(value, kinds):
        if kinds == {"str"} and _kind(value) in ("int", "float"):
            # Hydra reads an unquoted 10 as a number; the key takes text
            quoted = f"{dotted}='\"{value}\"'"
            raise _reject(dotted, value, key, rule, f" (a number; this key takes text: quote it, {quoted})")
        raise _reject(dotted, value, key, rule)
    if isinstance(value, list) and key.items:
        bad = [item for item in value if not _kind_ok(item, key.items)]
        if bad:
            kinds = " or ".join(_KIND_NAMES.get(k, k) for k in sorted(key.items))
            raise _reject(dotted, value, key, {"allowed": f"a list whose items are {kinds}", **rule},
                          f" (item {bad[0]!r})")
    if "choices" in rule and value not in rule["choices"]:
        raise _reject(dotted, value, key, rule)
    if "pattern" in rule and not re.fullmatch(rule["pattern"], str(value)):
        raise _reject(dotted, value, key, rule)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if ("min" in rule and value < rule["min"]) or ("max" in rule and value > rule["max"]) or (
            "above" in rule and value <= rule["above"]
        ):
            raise _reject(dotted, value, key, rule)


def check_config(conf: Mapping[str, Any], schema: Key, rules: Rules | None = None, prefix: str = "") -> None:
    """Raise ConfigError on the first unknown key or value outside its type, range, choices or pattern."""
    rules = rules or {}
    for name, value in conf.items():
        dotted = f"{prefix}{name}"
        key = schema.children.get(str(name))
        if key is None:
            known = sorted(schema.children)
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"did you mean {prefix}{close[0]}? " if close else ""
            where = f"{prefix[:-1]} has" if prefix else "the config has"
            raise ConfigError(f"unknown config key {dotted} (= {value!r}); {hint}{where} {', '.join(known)}")
        if isinstance(value, Mapping) and key.children:
            check_config(value, key, rules, dotted + ".")
        elif key.children and value is not None and "dict" in key.kinds and key.kinds <= {"dict"}:
            raise ConfigError(f"config key {dotted} = {value!r} is not valid; it is a group of keys "
                              f"({', '.join(sorted(key.children))}); set one of them, e.g. {dotted}.NAME=VALUE")
        else:
            _check_value(dotted, value, key, rules.get(dotted, {}))
