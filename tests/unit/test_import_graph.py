"""The house's floors, checked on the source: the kernel imports nothing above it, the serving tiers neither
each other nor the tools, and no module import cycle exists (imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lmrec", "lmrec_data", "lmrec_tools", "gateway", "retrieval_service", "ranking_service", "training")
# What each package may import from the others (itself always); anything not listed is a floor above it.
ALLOWED = {
    "lmrec": set(),
    "lmrec_data": {"lmrec"},
    "gateway": {"lmrec"},
    "retrieval_service": {"lmrec"},
    "ranking_service": {"lmrec"},
    "training": {"lmrec", "lmrec_data", "ranking_service"},
    "lmrec_tools": {"lmrec", "lmrec_data", "gateway", "retrieval_service", "ranking_service", "training"},
}
LONG_MODULE_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Repo modules `name` imports anywhere in its body (resolved to the longest known module)."""
    targets = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for candidate in names:
            while candidate and candidate not in MODULES:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_each_package_imports_only_the_floors_below_it():
    wrong = []
    for name, targets in GRAPH.items():
        top = name.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports up a floor or across tiers:\n" + "\n".join(sorted(wrong))


def _cycle_from(start: str) -> list[str] | None:
    path, on_path, done = [], set(), set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(GRAPH.get(node, ())):
            # A package's __init__ importing its own submodules is how a package exports; not a loop.
            if nxt.startswith(node + "."):
                continue
            if nxt in on_path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done and (found := visit(nxt)):
                return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    return visit(start)


def test_no_module_import_cycle():
    cycles = {" -> ".join(c) for name in GRAPH if (c := _cycle_from(name))}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


SCRIPTS = {f"{path.parent.name}/{path.name}": path for folder in ("bench", "tools")
           for path in (ROOT / folder).glob("*.py")}


@pytest.mark.parametrize("name", sorted(MODULES) + sorted(SCRIPTS))
def test_a_long_module_says_why_in_its_docstring(name):
    source = (MODULES.get(name) or SCRIPTS[name]).read_text(encoding="utf-8")
    if source.count("\n") <= LONG_MODULE_LINES:
        return
    docstring = ast.get_docstring(ast.parse(source)) or ""
    assert "Long because" in docstring, (f"{name} has {source.count(chr(10))} lines: split it by job, or say "
                                          "'Long because ...' in its docstring")


def test_the_graph_sees_lazy_imports():
    # The check is only as good as its parser: cli's subcommands import training inside functions.
    assert "training.train" in GRAPH["lmrec_tools.cli"]
