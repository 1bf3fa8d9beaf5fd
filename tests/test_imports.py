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


#: The package's folders in the data flow's order, lowest first (with the built-in plugins, their
#: own root, between the commands and the testing kit). A module may import its own folder and the
#: folders before it, never a later one. The modules directly in ``recbole_bundlellm/`` (errors,
#: fileio, lookup, progress, compat, embedded, settings) are the helpers below every folder: they
#: import no folder at all; the one exception is :data:`ENTRY`, the command line's old address.
FOLDERS: list[str] = [
    "data",        # raw files -> RecBole atomic files, category predictors, cards
    "evaluation",  # bundle metrics and their RecBole registration, significance
    "llm",         # the student LLM: loading, LoRA adapters, checkpoints, batches
    "teacher",     # the teacher client over any call cache, the embedded server, settings
    "knowledge",   # extractor contract, store, extraction, frequent patterns
    "sampling",    # sampler contract, knowledge sets
    "adaptation",  # strategy contract, retrieval, the student's knowledge source
    "fusion",      # RouteDK's mechanism: routers, experts, mixture, representation, vote
    "generation",  # prompt, parser, generator
    "extension",   # hookspecs, the plugin host, the model registry
    "models",      # floors/, baselines/, students/: one file + its YAML each
    "training",    # the trainers, distributed
    "config",      # BundleConfig: RecBole's Config + our YAML, checks, secrets
    "commands",    # runner, distill, compare, benchmark/, cli
    "bundlellm_builtin",  # policy: the built-in plugins use the core through the same hooks as a third party's
    "testing",     # the testing kit drives all of it (hosts, distill, run), as a plugin author's tests do
]
#: A thin re-export of :mod:`recbole_bundlellm.commands.cli` (``python -m recbole_bundlellm.cli``).
ENTRY = "recbole_bundlellm.cli"


def _prefix(folder: str) -> str:
    return folder if folder in ROOTS else f"recbole_bundlellm.{folder}"


def _layer(module: str) -> int:
    """The position of ``module``'s folder in :data:`FOLDERS`; -1 for a helper; the top for :data:`ENTRY`."""
    if module == ENTRY:
        return len(FOLDERS)
    for number, folder in enumerate(FOLDERS):
        prefix = _prefix(folder)
        if module == prefix or module.startswith(prefix + "."):
            return number
    return -1


def test_every_folder_of_the_package_has_its_place_in_the_order():
    package = ROOTS["recbole_bundlellm"]
    on_disk = {p.parent.name for p in package.glob("*/__init__.py")}
    assert on_disk == set(FOLDERS) - {"bundlellm_builtin"}, "place a new folder in FOLDERS (or drop a gone one)"
    loose = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert all(_layer(f"recbole_bundlellm.{name}") == -1 for name in loose - {ENTRY.rpartition(".")[2]})


def test_imports_follow_the_data_flow():
    wrong = []
    for module, targets in sorted(import_graph().items()):
        here = _layer(module)
        later = sorted(t for t in targets if _layer(t) > here)
        if later:
            where = FOLDERS[here] if 0 <= here < len(FOLDERS) else ("helper" if here < 0 else "entry")
            wrong.append(f"{module} ({where}) imports {', '.join(later)}")
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def test_the_project_imports_moved_modules_at_their_new_addresses():
    from recbole_bundlellm.moved import MOVED

    old = sorted(f"{module} imports {target}" for module, path in _modules().items()
                 for target in _imports(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py")
                 if target in MOVED)
    assert not old, "old addresses (see recbole_bundlellm/moved.py):\n" + "\n".join(old)


def test_an_old_address_is_the_module_at_its_new_one():
    import importlib
    import warnings

    from recbole_bundlellm.moved import MOVED

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from recbole_bundlellm.hookspecs import hookimpl  # what every installed plugin imports
        for old, new in MOVED.items():
            module = importlib.import_module(old)
            assert module is importlib.import_module(new) and module.__spec__.name == new, old
    from recbole_bundlellm.extension.hookspecs import hookimpl as new_hookimpl

    assert hookimpl is new_hookimpl


def test_the_readme_reads_the_folders_in_this_order():
    """The README's "What is here" diagram names the folders in the order the imports follow."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What is here", 1)[1].split("\n## ", 1)[0]
    diagram = section.split("```", 2)[1]
    positions = []
    for folder in FOLDERS:
        name = "plugins/bundlellm_builtin" if folder == "bundlellm_builtin" else f"{folder}/"
        assert name in diagram, f"the README's diagram does not name {name}"
        positions.append(diagram.index(name))
    assert positions == sorted(positions), "the README's diagram names the folders out of order"
