"""The package's layers: no module imports one that imports it back (counting imports inside
functions too), the network layer does not reach up into the training infrastructure, and
nothing below the facade (api.py) reads the spec layer."""

from __future__ import annotations

import ast
from pathlib import Path

import nri_pyro

PACKAGE = Path(nri_pyro.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every nri_pyro module -> the nri_pyro modules it imports anywhere in its code.
    ``from nri_pyro.x import y`` is an import of the module nri_pyro.x.y where that is one,
    else of nri_pyro.x (for a name defined there)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    # The package's __init__ gathers the public names: it may import anything, and nothing
    # inside the package may import it.
    graph = _imports()
    assert graph["nri_pyro"], "the walk found no imports: the test would check nothing"
    importers = sorted(m for m, deps in graph.items() if "nri_pyro" in deps)
    assert importers == [], f"modules that import the package's __init__: {importers}"
    assert _cycle(graph) is None, f"an import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_network_layer_and_the_priors_do_not_import_training_infrastructure():
    graph = _imports()
    layer = ("nri_pyro.priors", "nri_pyro.structure", "nri_pyro.distributions",
             "nri_pyro.model", "nri_pyro.guide")  # fmt: skip
    low = [m for m in graph if m.startswith(("nri_pyro.nn", "nri_pyro.priors")) or m in layer]
    high = {"nri_pyro.distributed", "nri_pyro.training", "nri_pyro.api", "nri_pyro.cli",
            "nri_pyro.ablate", "nri_pyro.study_run", "nri_pyro.study_tables",
            "nri_pyro.study_variants", "nri_pyro.study_data"}  # fmt: skip
    reaching_up = {m: sorted(graph[m] & high) for m in low if graph[m] & high}
    assert reaching_up == {}
    # The data-parallel step's computations, which the network layer reads, import nothing.
    assert graph["nri_pyro.nn.parallel"] == set()


def _below(graph: dict[str, set[str]], module: str) -> set[str]:
    """Every module that ``module`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_no_module_below_the_facade_imports_the_spec_layer():
    # The YAML layer (specs, and presets, which resolve spec files) sits above the model:
    # the model, guide, training and evaluation take resolved settings and never read specs.
    graph = _imports()
    spec_layer = {"nri_pyro.specs", "nri_pyro.presets"}
    below = _below(graph, "nri_pyro.api") - spec_layer
    assert {"nri_pyro.model", "nri_pyro.guide", "nri_pyro.training"} <= below
    reaching_up = {m: sorted(graph[m] & spec_layer) for m in below if graph[m] & spec_layer}
    assert reaching_up == {}
