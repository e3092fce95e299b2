"""The package's import rules, checked by reading every module's imports with ``ast`` (no module is run).

Layers, from the bottom: ``core`` (NumPy in, NumPy out) < ``infra`` (config, artifacts, files, locks,
figures) < ``nn`` (everything that imports TensorFlow) and ``kaggle`` (API, notebook bundle) <
``stages`` (one module per command of the CLI's stage table) < ``cli``. The rules:

1. a layer imports only its own and lower layers (``kaggle.notebook`` may call the CLI's entry point:
   it runs stages the way a user does, lazily, inside a function);
2. the core imports nothing but the standard library, NumPy, pandas, OpenCV and the fold splitter;
3. a stage never imports another stage;
4. only ``nn`` imports TensorFlow, tf-keras, segmentation-models or albumentations;
5. the package, the CLI and every command that needs no model never load TensorFlow, not even
   through an import inside a function (the model commands import it only once a model must run;
   the package's ``Predictor`` attribute imports ``nn.predictor`` only when it is asked for);
6. no import circles.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

LAYERS = ("core", "infra", "nn", "kaggle", "stages")
ALLOWED = {  # layer -> the package's layers it may import
    "core": {"core"},
    "infra": {"core", "infra"},
    "nn": {"core", "infra", "nn"},
    "kaggle": {"core", "infra", "kaggle"},
    "stages": {"core", "infra", "nn", "kaggle", "stages"},
    None: {"core", "infra", "nn", "kaggle", "stages", None},  # the package itself, __main__, cli
}
CORE_THIRD_PARTY = {"numpy", "pandas", "cv2", "iterstrat", "sklearn"}
TENSORFLOW = {"tensorflow", "tf_keras", "keras", "segmentation_models", "albumentations"}
ENTRY_POINT_CALLERS = {"kaggle.notebook": {"cli"}}  # module -> top-level modules it may import lazily
PUBLIC_API = {"nn.predictor"}  # what the package's __getattr__ imports when asked for (``from severstal import X``)


@dataclass(frozen=True)
class Import:
    target: str  # absolute module name, e.g. "severstal.infra.config" or "numpy"
    line: int
    lazy: bool  # inside a function: runs only when called


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def read_imports(path: Path, name: str, modules: set[str]) -> list[Import]:
    """Every import of a module, relative ones made absolute; ``from . import x`` names module ``x``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, child.lineno, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - child.level + 1]
                    origin = ".".join(base + ([child.module] if child.module else []))
                else:
                    origin = child.module or ""
                for alias in child.names:
                    candidate = f"{origin}.{alias.name}"
                    found.append(Import(candidate if candidate in modules else origin, child.lineno, inner))
            visit(child, inner)

    visit(tree, False)
    return found


def package_imports(root: Path, package: str) -> dict[str, list[Import]]:
    """``{module: imports}`` of every module of a package folder."""
    files = {module_name(path, root, package): path for path in sorted(root.rglob("*.py"))}
    return {name: read_imports(path, name, set(files)) for name, path in files.items()}


def layer_of(module: str, package: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def relative_name(module: str, package: str) -> str:
    return module[len(package) + 1:] if module.startswith(package + ".") else module


def closure(start: str, graph: Mapping[str, list[Import]], lazy: bool = True,
            skip: Mapping[str, set[str]] | None = None) -> dict[str, list[str]]:
    """Every module reachable from ``start`` (internal ones followed), with one import path to it; the lazy imports
    ``skip[module]`` of a module are not followed."""
    paths = {start: [start]}
    queue = [start]
    skip = skip or {}
    while queue:
        current = queue.pop()
        for item in graph.get(current, []):
            if (not lazy and item.lazy) or item.target in paths or (item.lazy and item.target in skip.get(current, ())):
                continue
            paths[item.target] = [*paths[current], item.target]
            if item.target in graph:
                queue.append(item.target)
    return paths


def find_cycle(graph: Mapping[str, list[Import]]) -> list[str] | None:
    """One import circle among the package's modules, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for item in graph.get(node, []):
            if item.target not in graph:
                continue
            if state.get(item.target) == 1:
                return [*stack[stack.index(item.target):], item.target]
            if item.target not in state:
                cycle = visit(item.target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def violations(root: Path, package: str, stages: Mapping[str, str], model_stages: Iterable[str]) -> list[str]:
    """Every broken rule of the package in ``root``, one line each (empty: all rules hold).

    Args:
        root: the package's folder (``src/severstal``).
        package: its import name (``severstal``).
        stages: ``{command: module}`` of the CLI's stage table.
        model_stages: the commands that need a model (they may import TensorFlow lazily).
    """
    graph = package_imports(root, package)
    stage_modules = set(stages.values())
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for module, imports in sorted(graph.items()):
        layer = layer_of(module, package)
        short = relative_name(module, package)
        for item in imports:
            where = f"{short} line {item.line} imports {relative_name(item.target, package)}"
            top = item.target.split(".")[0]
            if item.target == package:  # the package itself holds only its version
                pass
            elif top == package:
                target_layer = layer_of(item.target, package)
                allowed = ALLOWED[layer] | (
                    {None} if item.lazy and relative_name(item.target, package) in ENTRY_POINT_CALLERS.get(short, ())
                    else set())
                if target_layer not in allowed:
                    problems.append(f"layers: {where} ({layer or 'top'} may import {sorted(map(str, ALLOWED[layer]))})")
                if module in stage_modules and item.target in stage_modules and item.target != module:
                    problems.append(f"stages: {where}, another stage")
            elif layer == "core" and top not in stdlib and top not in CORE_THIRD_PARTY and top != "__future__":
                problems.append(f"core: {where}, not the standard library or {sorted(CORE_THIRD_PARTY)}")
            if top in TENSORFLOW and layer != "nn":
                problems.append(f"tensorflow: {where} outside nn")
    no_model = [package, f"{package}.cli", *(module for command, module in stages.items()
                                             if command not in set(model_stages))]
    for start in no_model:
        if start not in graph:
            continue
        api = {package: {f"{package}.{name}" for name in PUBLIC_API}}
        for target, route in closure(start, graph, skip=api).items():
            if target.split(".")[0] in TENSORFLOW or layer_of(target, package) == "nn":
                shown = " -> ".join(relative_name(step, package) for step in route)
                problems.append(f"no model: {relative_name(start, package)} loads TensorFlow through {shown}")
                break
    cycle = find_cycle(graph)
    if cycle:
        problems.append("circle: " + " -> ".join(relative_name(step, package) for step in cycle))
    return problems
