"""The package's imports run one way, and no import circle ties its modules.

Layers, highest first (a module may import only its own layer or lower ones):

    search.cli -> search.selection, search.benchmarks -> search.engine -> search.results
    -> search.config -> search.cluster -> models -> kernels

Every import counts, including the ones inside functions (a lazy import is still a dependency).
Walked with the standard library's ``ast``: no package is imported to check it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "models", "kernels")

# Higher number = higher layer. A module's layer is the one of its longest matching prefix.
LAYERS: dict[str, int] = {
    "search.cli": 7,
    "search.selection": 6,
    "search.benchmarks": 6,
    "search.engine": 5,
    "search.results": 4,
    "search.config": 3,
    "search.cluster": 2,
    "search": 2,  # the package docstring only
    "models": 1,
    "kernels": 0,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (``a.b.c`` may be a module or a name in ``a.b``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}") or _resolve(base)
                if target:
                    yield target, node.lineno


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


GRAPH: dict[str, set[str]] = {}
EDGES: list[tuple[str, str, int]] = []
for _mod, _path in MODULES.items():
    GRAPH[_mod] = set()
    for _target, _line in _imports(_mod, _path):
        if _target != _mod:
            GRAPH[_mod].add(_target)
            EDGES.append((_mod, _target, _line))


def test_the_walk_sees_the_package() -> None:
    # Guards the test itself: it must find the modules and their imports, or it would pass on nothing.
    assert {"search.engine.runner", "search.results.store", "models.trial", "kernels.msda"} <= set(MODULES)
    assert "search.results.store" in GRAPH["search.engine.runner"]
    assert any(t.startswith("models") for t in GRAPH["search.engine.model_trial"])


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        assert any(module == p or module.startswith(p + ".") for p in LAYERS), module


def test_imports_run_one_way() -> None:
    upward = [
        f"{src} (line {line}) imports {dst}: layer {_layer(src)} -> {_layer(dst)}"
        for src, dst, line in EDGES
        if _layer(dst) > _layer(src)
    ]
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module-to-module edges; a package ``__init__`` that re-exports its own modules is not a circle."""
    out: dict[str, set[str]] = {}
    for src, dsts in graph.items():
        out[src] = {d for d in dsts if not src.startswith(d + ".") and not d.startswith(src + ".")}
    return out


def test_no_import_circles() -> None:
    cycle = _find_cycle(_without_packages(GRAPH))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    "graph, has_cycle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a.x"}, "a.x": {"a"}}, False),  # a package and its own module
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], has_cycle: bool) -> None:
    assert (_find_cycle(_without_packages(graph)) is not None) is has_cycle
