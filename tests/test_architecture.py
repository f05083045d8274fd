"""The package's layering, read from the code: folders import only the folders below them.

From the ground up (README, "How the code is laid out"):

  base         errors, results, _lazy, the package root
  foundation   specs, data I/O, atomic files, ONNX loading, sandbox, comparator, host facts
  runtime      ONNX Runtime sessions, providers, timing
  passes       graph rewrites (may run a session to check themselves)
  frameworks   one adapter per source framework (may apply a pass after exporting)
  operations   export, validate, optimize, quantize, run, bench, ... (results are data)
  reports      rendering of results: Rich, JSON, JUnit, Markdown, HTML, plots
  cli          Typer commands: parse, call an operation, hand the result to reports

Every import counts, lazy ones inside functions and those under TYPE_CHECKING included: a
lazy import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "onnxkit"

LAYERS = ["base", "foundation", "runtime", "passes", "frameworks", "operations", "reports", "cli"]
# Modules at the package root that belong to the base.
BASE_MODULES = {"__init__", "__main__", "errors", "results", "_lazy"}
# Only these layers may import the renderers.
RENDERING = {"reports", "cli"}
# __main__ is the console entry point: it is allowed to start the CLI.
ENTRY_POINTS = {"onnxkit.__main__"}


def layer_of(module: str) -> str:
    """``onnxkit.foundation.spec`` -> ``foundation``; root modules -> ``base``."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in BASE_MODULES):
        return "base"
    return parts[1]


def _module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        anchor = module.split(".")
        if not is_package:
            anchor = anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    # `from onnxkit.reports import html` names the submodule; keep both spellings.
    return [base] + [f"{base}.{a.name}" for a in node.names]


def read_imports(package: Path) -> dict[str, set[str]]:
    """module -> the onnxkit modules it imports, anywhere in its body."""
    imports: dict[str, set[str]] = defaultdict(set)
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, package)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = _resolve(node, module, path.name == "__init__.py")
            else:
                continue
            imports[module].update(n for n in names if n == "onnxkit" or n.startswith("onnxkit."))
    return imports


def existing_modules(package: Path) -> set[str]:
    return {_module_name(p, package) for p in package.rglob("*.py")}


def _target(name: str, modules: set[str]) -> str | None:
    """The module an imported name refers to (``onnxkit.x.y.attr`` -> ``onnxkit.x.y``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def violations(package: Path) -> list[str]:
    modules = existing_modules(package)
    problems: list[str] = []
    unknown = sorted({layer_of(m) for m in modules} - set(LAYERS))
    problems += [f"folder onnxkit/{u}/ is in no layer" for u in unknown]
    rank = {name: i for i, name in enumerate(LAYERS)}
    folder_edges: set[tuple[str, str]] = set()
    for module, names in read_imports(package).items():
        src = layer_of(module)
        for name in names:
            target = _target(name, modules)
            if target is None or target == module:
                continue
            if module in ENTRY_POINTS:
                continue
            dst = layer_of(target)
            if dst != src:
                folder_edges.add((src, dst))
            if dst in rank and src in rank and rank[dst] > rank[src]:
                problems.append(f"{module} ({src}) imports {target} ({dst}), a layer above it")
            if dst == "reports" and src not in RENDERING:
                problems.append(f"{module} ({src}) imports the renderer {target}")
    problems += [f"folder cycle between {', '.join(c)}" for c in _cycles(folder_edges)]
    return sorted(set(problems))


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The folders that reach each other through imports (strongly connected components
    of more than one folder), each sorted: one line per tangle, however many paths."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    nodes = sorted(set(graph) | {b for _, b in edges})

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {n: reach(n) for n in nodes}
    tangles = {tuple(sorted(m for m in nodes if m in reachable[n] and n in reachable[m])) for n in nodes}
    return [list(t) for t in sorted(tangles) if len(t) > 1]


def test_the_package_follows_its_layers():
    assert violations(PACKAGE) == []


def test_every_folder_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(LAYERS) - {"base"}, folders - set(LAYERS)


@pytest.mark.parametrize(
    ("where", "planted", "expected"),
    [
        # The foundation may not reach up to the operations, even lazily inside a function.
        ("foundation/spec.py", "def _later():\n    from onnxkit.operations import validate\n",
         "imports onnxkit.operations.validate (operations), a layer above it"),
        # Rendering stays out of the operations.
        ("operations/export.py", "import onnxkit.reports.render\n", "imports the renderer onnxkit.reports.render"),
        # A relative import counts like an absolute one.
        ("runtime/session.py", "from ..frameworks import registry\n", "a layer above it"),
    ],
)
def test_a_planted_bad_import_is_caught(tmp_path, where, planted, expected):
    copy = tmp_path / "onnxkit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / where
    target.write_text(target.read_text(encoding="utf-8") + "\n" + planted, encoding="utf-8")
    found = violations(copy)
    assert any(expected in v and where.split("/")[0] in v for v in found), found


def test_a_planted_cycle_is_caught(tmp_path):
    copy = tmp_path / "onnxkit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "runtime" / "session.py"
    target.write_text(target.read_text(encoding="utf-8") + "\nimport onnxkit.passes\n", encoding="utf-8")
    found = violations(copy)
    assert any(v.startswith("folder cycle") and "runtime" in v and "passes" in v for v in found), found
