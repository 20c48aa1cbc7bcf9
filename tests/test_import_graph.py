"""The import graph inside each package: no cycles, and no module that only its tests import.

Every import counts, also one inside a function: a lazy import that closes a cycle still means two
modules each need the other (a responsibility in the wrong place), and it fails as soon as someone
moves it to the top of the file.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ldifs_engine", "tasks", "app")
# modules that run as programs rather than being imported: console scripts (pyproject.toml),
# ``python -m`` targets and the web app's launcher
ENTRY_POINTS = {"app.cli", "app.main", "ldifs_engine.__main__", "tasks.worker"}
# written for the runner and wired into it by work landing separately: remove a module from this set as
# soon as the graph shows an importer (all are wired now)
AWAITING_USE: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(pkg: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_names(path: Path, name: str, known: set[str]) -> set[str]:
    """Absolute names of the modules ``path`` imports: ``from m import x`` is ``m.x`` when that is a
    module, else ``m``; in a file that calls ``importlib.import_module``, a string naming a module of
    its package (``"concepts"`` in ``ldifs_engine/data/__init__.py``, ``"tasks.cli_jobs"``) counts too."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    strings: set[str] = set()
    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
        elif isinstance(node, ast.Attribute) and node.attr == "import_module":
            dynamic = True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    if dynamic:
        pkg = ".".join(here)
        out.update(s for s in strings if s in known)
        out.update(f"{pkg}.{s.lstrip('.')}" for s in strings if f"{pkg}.{s.lstrip('.')}" in known)
    return out


def all_modules() -> dict[str, Path]:
    return {name: path for pkg in PACKAGES for name, path in modules(pkg).items()}


def graph(pkg: str) -> dict[str, set[str]]:
    """Module → the modules of the same package it imports. Edges into the package's root
    ``__init__`` are left out: it is initialised before any of its modules and holds only metadata
    and lazy look-ups (``from . import __version__`` is no cycle)."""
    mods, known = modules(pkg), set(all_modules())
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for imp in imported_names(path, name, known):
            while imp and imp not in mods:  # ``import tasks.store`` → tasks.store; an attribute → its module
                imp = imp.rpartition(".")[0]
            if imp and imp != name and imp != pkg:
                targets.add(imp)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_relative_and_lazy_imports(tmp_path):
    # the checker itself: a cycle through a function-level relative import is found
    edges = graph("ldifs_engine")
    assert "ldifs_engine.spec" in edges["ldifs_engine.runner"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_inside_any_package():
    found = {pkg: cycles(graph(pkg)) for pkg in PACKAGES}
    assert found == {pkg: [] for pkg in PACKAGES}


def test_every_module_is_used_by_product_code():
    mods = all_modules()
    importers: dict[str, set[str]] = {}
    for name, path in mods.items():  # within and across packages (app → tasks → ldifs_engine)
        for imp in imported_names(path, name, set(mods)):
            if imp in mods and imp != name:
                importers.setdefault(imp, set()).add(name)
    unused = [name for name, path in mods.items()
              if name not in ENTRY_POINTS and path.name != "__init__.py" and not importers.get(name)]
    assert sorted(set(unused) - AWAITING_USE) == []
