"""What README.md and docs/*.md tell a user to type exists.

Read from fenced code blocks and inline `code` only, with these rules and nothing cleverer:
- `make T` (and `make A | B` alternatives): T is a target of the Makefile; `VAR=...` after it is a Makefile variable;
- a path ending in .py under a project folder, and `python -m M`: the file or module exists;
- `+exp=NAME`: configs/exp/NAME.yaml exists;
- `key=value` with a lower-case dotted key: a known config key, or an existing option when the key is a group
  (sampling.config.check_overrides); values written in capitals (NAME, DIR, N) are placeholders;
- links to other .md files: the file exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sampling.config import check_overrides
from sampling.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAKEFILE = (ROOT / "Makefile").read_text()
TARGETS = set(re.findall(r"^([a-z0-9][a-z0-9-]*):", MAKEFILE, re.MULTILINE))
MAKE_VARIABLES = set(re.findall(r"^([A-Z_]+) \??=", MAKEFILE, re.MULTILINE) + re.findall(r"\$\(([A-Z_]+)\)", MAKEFILE))
FOLDERS = "scripts|bench|evaluations|sampling|guidance|guided_diffusion|golden|reproduce|visualization|training|tests"
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|\.\.\.|[<>]")
# Mistakes the docs show on purpose, with the error they get (docs/configs.md), and the generic `key=value`.
NOT_CHECKED = {"guidance.scale=abc", "guidance.scle=2", "+guidance.scle=2", "key=value"}


def code_of(text: str) -> list[str]:
    """Lines of fenced code blocks, then inline code spans of the prose."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    lines = [line.split("#")[0] for block in blocks for line in block.split("\n")]
    return lines + re.findall(r"`([^`\n]+)`", prose)


def problems(page: Path) -> list[str]:
    text = page.read_text()
    found = []
    for code in code_of(text):
        for match in re.finditer(r"\bmake ([a-z0-9-]+(?: \| [a-z0-9-]+)*)((?: [A-Z_]+=\S*)*)", code):
            found += [f"make target {t!r}" for t in match.group(1).split(" | ") if t not in TARGETS]
            found += [f"Makefile variable {v!r}" for v in re.findall(r"([A-Z_]+)=", match.group(2))
                      if v not in MAKE_VARIABLES]
        for path in re.findall(rf"(?<![\w/.])((?:{FOLDERS})/[\w/]+\.py)\b", code):
            found += [] if (ROOT / path).is_file() else [f"file {path}"]
        for module in re.findall(r"python -m ([\w.]+)", code):
            base = ROOT / module.replace(".", "/")
            found += [] if base.with_suffix(".py").is_file() or (base / "__main__.py").is_file() else [
                f"module {module}"]
        for token in re.findall(r"(?<![\w\-./$])(\+{0,2}[a-z][a-z0-9_]*(?:[./][a-z0-9_]+)*=(?!=)[^\s`'\"]*)", code):
            if token in NOT_CHECKED:
                continue
            key, _, value = token.partition("=")
            if PLACEHOLDER.search(value) or not value or "|" in value:
                value = ""
            try:
                if value:
                    check_overrides([token])
                else:
                    check_overrides([f"{key}=__placeholder__"]) if not _is_group(key) else None
            except ConfigError as err:
                found.append(f"config {token!r}: {err}")
    for link in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", text):
        found += [] if (page.parent / link).is_file() else [f"link {link}"]
    return found


def _is_group(key: str) -> bool:
    return (ROOT / "configs" / key.lstrip("+").replace(".", "/")).is_dir()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_named_thing_exists(page):
    assert problems(page) == []


def test_every_doc_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme] == []


def test_the_checker_finds_what_does_not_exist(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Run `make demo-fast`, then\n```\npython scripts/sampel.py +exp=adm256_pag guidance.scael=2\n"
                    "python -m evaluations.evaluatr A B\nmake demo NGPUS=2\n```\nsee [here](nowhere.md) and "
                    "`sampler=ddim7`.\n")
    assert [p.split(":")[0] for p in problems(page)] == [
        "file scripts/sampel.py", "config '+exp=adm256_pag'", "config 'guidance.scael=2'",
        "module evaluations.evaluatr", "Makefile variable 'NGPUS'", "make target 'demo-fast'",
        "config 'sampler=ddim7'", "link nowhere.md",
    ]
