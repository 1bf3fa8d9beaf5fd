"""The package's import graph: no cycles, and the data flow reads one way in the imports too.

Every ``import`` / ``from ... import`` in the package and the built-in plugins counts, at module
level and inside functions (a function-level import is still a dependency, only a later one);
imports under ``if TYPE_CHECKING:`` are annotations and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"recbole_bundlellm": REPO / "recbole_bundlellm", "bundlellm_builtin": REPO / "plugins" / "bundlellm_builtin"}


def _module_name(root_name: str, root: Path, path: Path) -> str:
    parts = [root_name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(name, root, path): path for name, root in ROOTS.items() for path in root.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module named by an import statement of ``tree``, outside ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = _imports(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py")
        graph[module] = {t for t in targets if t in modules and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_the_walker_sees_function_level_imports_and_skips_type_checking():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a.b import C\n"
              "def f():\n    from a.d import e\n    import a.g\n")
    assert _imports(ast.parse(source), "a.x", False) == {"typing", "typing.TYPE_CHECKING", "a.d", "a.d.e", "a.g"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40  # the walker found the package
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


#: The data flow, lowest first: a module may import from its own layer and the layers before it,
#: never from a later one. Modules not listed here (compat, fileio, settings, lookup, progress,
#: hookspecs, registry, embedded, evaluation) are shared helpers below every layer: they import no
#: layer at all.
LAYERS: list[tuple[str, ...]] = [
    ("recbole_bundlellm.data",),
    ("recbole_bundlellm.teacher",),
    ("recbole_bundlellm.knowledge", "recbole_bundlellm.frequent_patterns"),
    ("recbole_bundlellm.sampling",),
    ("recbole_bundlellm.adaptation",),
    ("recbole_bundlellm.fusion",),
    ("recbole_bundlellm.llm", "recbole_bundlellm.generation"),
    ("recbole_bundlellm.models", "recbole_bundlellm.trainer", "recbole_bundlellm.neural_trainer",
     "recbole_bundlellm.sft_trainer"),
    # the plugin host and the commands: they wire the layers together
    ("recbole_bundlellm.plugins", "recbole_bundlellm.config", "recbole_bundlellm.runner",
     "recbole_bundlellm.distill", "recbole_bundlellm.compare", "recbole_bundlellm.benchmark",
     "recbole_bundlellm.benchmark_report", "recbole_bundlellm.cli"),
    # policy: the built-in plugins use the core through the same hooks as a third party's
    ("bundlellm_builtin",),
    # the testing kit drives all of it (hosts, distill, run), as a plugin author's tests do
    ("recbole_bundlellm.testing",),
]


def _layer(module: str) -> int | None:
    for number, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return number
    return None


def test_imports_follow_the_data_flow():
    wrong = []
    for module, targets in sorted(import_graph().items()):
        here = _layer(module)
        later = sorted(t for t in targets if (layer := _layer(t)) is not None and (here is None or layer > here))
        if later:
            wrong.append(f"{module} (layer {here}) imports {', '.join(later)}")
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)
