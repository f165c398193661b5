"""The layering of vae_runner, held: every module imports only its own layer or lower ones, and
no modules import each other in a circle. Imports count wherever they are written, inside
functions too (a lazy import still ties the lower layer to the higher one).

The layers, lowest first (docs/development.md):
  base       vae_runner.config and the top-level modules (files, exit_codes, record, rundir, ...)
  data       vae_runner.data
  report     vae_runner.report: the console, plots, loggers (training reports through it)
  training   vae_runner.training
  sweep      vae_runner.sweep
  cli        vae_runner.cli: the entry points
  plugin     hydra_plugins: the `checked` sweeper, which calls into cli
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vae_runner", "hydra_plugins")

# A module's layer is that of the longest prefix listed here; a top-level module of vae_runner
# (files, exit_codes, record, rundir, faults, cpu_threads) is in the base layer.
LAYERS = {
    "vae_runner": 0,
    "vae_runner.config": 0,
    "vae_runner.data": 1,
    "vae_runner.report": 2,
    "vae_runner.training": 3,
    "vae_runner.sweep": 4,
    "vae_runner.cli": 5,
    "hydra_plugins": 6,
}
LAYER_NAMES = ("base", "data", "report", "training", "sweep", "cli", "plugin")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Every module below the packages, by dotted name (a package by its __init__.py)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of `from <...> import`, relative ones too."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that importing `name` runs: itself, else its longest known prefix."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(modules: dict[str, Path]) -> dict[str, list[tuple[str, int]]]:
    """For each module, the modules of ours it imports (at any depth) with the line of each."""
    graph: dict[str, list[tuple[str, int]]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, is_package, node)
                # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod
                names = [
                    f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                    for a in node.names
                ]
            else:
                continue
            for name in names:
                target = _known(name, modules)
                if target is not None and target != module:
                    edges.append((target, node.lineno))
        graph[module] = sorted(set(edges), key=lambda edge: (edge[1], edge[0]))  # once a line
    return graph


def layer(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} is in no layer: add its package to LAYERS in {__file__}"
    return LAYERS[max(prefixes, key=len)]


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    return [
        f"{module}:{line} ({LAYER_NAMES[layer(module)]}) imports {target} "
        f"({LAYER_NAMES[layer(target)]}, a higher layer)"
        for module, edges in sorted(graph.items())
        for target, line in edges
        if layer(target) > layer(module)
    ]


def strongly_connected(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Tarjan's components of more than one module, each sorted (iterative: no recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted({t for t, _ in graph[start]})))]
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
                    work.append((child, iter(sorted({t for t, _ in graph.get(child, [])}))))
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
    return sorted(found)


def a_cycle(graph: dict[str, list[tuple[str, int]]], component: list[str]) -> list[str]:
    """One circle through the component's first module, shortest first: a -> b -> ... -> a."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, _ in graph[node]:
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target in members and target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Each circle of modules: one loop through it, then every module caught in it if more."""
    found = []
    for component in strongly_connected(graph):
        loop = a_cycle(graph, component)
        more = f" (all caught: {', '.join(component)})" if len(component) > len(loop) - 1 else ""
        found.append(" -> ".join(loop) + more)
    return found


# The project itself


def test_no_module_imports_a_higher_layer():
    found = upward_imports(imports(module_files(ROOT)))
    assert not found, "\n".join(["upward imports:", *found])


def test_no_modules_import_each_other_in_a_circle():
    found = cycles(imports(module_files(ROOT)))
    assert not found, "\n".join(["import cycles:", *found])


def test_every_layer_is_found():
    """The checks above read the real tree: each layer has modules, and the graph has edges."""
    graph = imports(module_files(ROOT))
    assert {LAYER_NAMES[layer(m)] for m in graph} == set(LAYER_NAMES)
    assert "vae_runner.config.errors" in {t for t, _ in graph["vae_runner.config.schema"]}
    assert "vae_runner.cli.checks" in {
        t for t, _ in graph["hydra_plugins.vae_runner_sweeper.checked_sweeper"]
    }  # imported inside a method


# The checker, on a small package written here


def _write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(root)


def test_a_lazy_import_of_a_higher_layer_is_named(tmp_path):
    modules = _write(
        tmp_path,
        {
            "vae_runner/__init__.py": "",
            "vae_runner/files.py": "import json\n",
            "vae_runner/report/__init__.py": "",
            "vae_runner/report/plots.py": (
                "from vae_runner import files\n"  # down: fine
                "def draw():\n"
                "    if True:\n"
                "        from ..training.history import load\n"  # up, relative, in a function
            ),
            "vae_runner/training/__init__.py": "",
            "vae_runner/training/history.py": "from vae_runner.report import plots\n",
            "hydra_plugins/__init__.py": "",
            "hydra_plugins/sweeper.py": "import vae_runner.training.history\n",  # top: fine
        },
    )
    assert upward_imports(imports(modules)) == [
        "vae_runner.report.plots:4 (report) imports vae_runner.training.history "
        "(training, a higher layer)"
    ]


def test_a_circle_is_named_once_with_its_path(tmp_path):
    modules = _write(
        tmp_path,
        {
            "vae_runner/__init__.py": "",
            "vae_runner/sweep/__init__.py": "",
            "vae_runner/sweep/a.py": "from vae_runner.sweep import b\n",
            "vae_runner/sweep/b.py": "def f():\n    import vae_runner.sweep.c\n",
            "vae_runner/sweep/c.py": "from vae_runner.sweep.a import thing\n",
            "vae_runner/sweep/d.py": "from vae_runner.sweep import a, b, c\n",  # into it, not on it
            "vae_runner/sweep/e.py": "from . import f\n",
            "vae_runner/sweep/f.py": "from .e import g\n",
        },
    )
    assert cycles(imports(modules)) == [
        "vae_runner.sweep.a -> vae_runner.sweep.b -> vae_runner.sweep.c -> vae_runner.sweep.a",
        "vae_runner.sweep.e -> vae_runner.sweep.f -> vae_runner.sweep.e",
    ]
