"""The import layers of ../shared/DESIGN.md, checked on the source (parsed with ast, nothing is imported).

Every import counts, also those inside functions: a lazy import is still an arrow and can still close a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LIBRARY = {"guided_diffusion", "guidance", "inverse", "sampling", "evaluations", "training"}
TOP = {"golden", "reproduce", "visualization"}
# Which packages each package may import, besides itself. `training` (the demo trainer) is not in DESIGN.md: it
# trains models of guided_diffusion and the demo's feature network of evaluations, and only scripts and tests use it.
ALLOWED: dict[str, set[str]] = {
    "guided_diffusion": set(),
    "guidance": {"guided_diffusion"},
    "inverse": {"guided_diffusion"},
    "sampling": {"guidance", "inverse", "guided_diffusion"},
    "evaluations": set(),
    "training": {"guided_diffusion", "evaluations"},
    **{top: {"sampling", "guidance", "inverse", "evaluations", "guided_diffusion"} for top in TOP},
    "bench": LIBRARY | TOP,
    "tests": LIBRARY | TOP | {"bench"},
    "scripts": LIBRARY | TOP,
}
# Single modules a package may import although their package is out of bounds: evaluations reads and writes
# files through the project's file I/O helpers (fileio, and storage: where a file lives, local or in an object
# store), which happen to live in the model package.
ALLOWED_MODULES: dict[str, set[str]] = {"evaluations": {"guided_diffusion.fileio", "guided_diffusion.storage"}}
# Nothing imports an entry point, not even another entry point.
NEVER_IMPORTED = {"scripts"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages under `root`, by dotted name."""
    modules = {}
    for package in ALLOWED:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(path, root)] = path
    return modules


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> list[str]:
    """The absolute dotted names a module imports, `from a import b` giving both `a` and `a.b`."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the project modules it imports (the deepest existing module each import names)."""
    modules = project_modules(root)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imported_names(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        graph[name] = targets
    return graph


def wrong_arrows(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for source, targets in sorted(graph.items()):
        package = source.split(".")[0]
        for target in sorted(targets):
            target_package = target.split(".")[0]
            if target_package in NEVER_IMPORTED:
                wrong.append(f"{source} -> {target} (nothing imports {target_package})")
            elif target_package != package and target_package not in ALLOWED[package] and (
                target not in ALLOWED_MODULES.get(package, set())
            ):
                wrong.append(f"{source} -> {target} ({package} may import only {sorted(ALLOWED[package])})")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_import_follows_the_layers():
    assert wrong_arrows(import_graph(ROOT)) == []


def test_no_import_cycles():
    assert cycles(import_graph(ROOT)) == []


def test_the_checks_fail_on_a_wrong_arrow_and_a_cycle(tmp_path):
    files = {
        "guided_diffusion/__init__.py": "",
        "guided_diffusion/unet.py": "from guidance.pag import PAG\n",
        "guided_diffusion/fileio.py": "",
        "guidance/__init__.py": "",
        "guidance/pag.py": "from . import windows\n",
        "guidance/windows.py": "def f():\n    from guidance.pag import PAG\n",
        "evaluations/__init__.py": "",
        "evaluations/npz_io.py": "from guided_diffusion.fileio import atomic_write\nimport guided_diffusion.unet\n",
        "tests/__init__.py": "",
        "tests/test_x.py": "from scripts.sample import main\nfrom guided_diffusion import unet\n",
        "scripts/sample.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert [line.split(" (")[0] for line in wrong_arrows(graph)] == [
        "evaluations.npz_io -> guided_diffusion.unet",
        "guided_diffusion.unet -> guidance.pag",
        "tests.test_x -> scripts.sample",
    ]
    assert cycles(graph) == [["guidance.pag", "guidance.windows"]]
