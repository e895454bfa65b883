"""The package's import graph: printed with `python tests/test_architecture.py`, and a test that
fails on a cycle. Imports inside functions count too (they only hide a cycle), and so do
imports that exist only for type checkers.
"""

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "incident_rpc"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> Iterator[str]:
    """The package's modules that `path` imports, resolved to module names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from . import x` names a module x; `from .m import f` names m.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            if target in modules and target != name:
                yield target


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): set(imported(path, modules)) for path in paths}
    for name, targets in graph.items():  # a package's __init__ runs before its modules
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that starts and ends on the same module, or None."""
    state: dict[str, str] = {}  # "open" while on the stack, "done" after
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# From the top down: a module imports its own layer and the ones below, never one above.
# The registry is below the handlers (they declare themselves with it) though it lives
# in dispatch/; errors, extensions and config are the foundation everything stands on.
LAYERS = [
    [
        "incident_rpc",
        "incident_rpc.cli",
        "incident_rpc.startup",
        "incident_rpc.healthcheck",
        "incident_rpc.notifier",
    ],
    ["incident_rpc.http", "incident_rpc.board"],
    ["incident_rpc.dispatch"],
    ["incident_rpc.actions"],
    ["incident_rpc.dispatch.registry", "incident_rpc.dispatch.openrpc"],
    ["incident_rpc.schemas", "incident_rpc.access", "incident_rpc.events", "incident_rpc.notify"],
    ["incident_rpc.models"],
    ["incident_rpc.runtime", "incident_rpc.telemetry"],
    ["incident_rpc.errors", "incident_rpc.extensions", "incident_rpc.config"],
]


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix that names `module` or a package of it
    (the package itself names only its __init__: a new folder must be given a layer)."""
    matches = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or (prefix != "incident_rpc" and module.startswith(prefix + "."))
    ]
    assert matches, f"{module} is in no layer of LAYERS: add its folder there"
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    packages = {module for module in graph if (PACKAGE.parent / module.replace(".", "/")).is_dir()}
    return [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets - packages)  # a package's __init__ is its docstring
        if layer(target) < layer(module)
    ]


def test_imports_point_down_the_layers() -> None:
    assert upward_imports(import_graph()) == []


def test_an_upward_import_is_found() -> None:
    graph = {"incident_rpc.models": {"incident_rpc.http.rpc"}, "incident_rpc.http.rpc": set()}
    assert upward_imports(graph) == ["incident_rpc.models -> incident_rpc.http.rpc"]


def test_every_package_init_is_only_a_docstring() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent == PACKAGE or init.parent.name == "actions":
            continue  # create_app; the package that registers every action
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{init} holds code"


def test_the_graph_resolves_relative_imports() -> None:
    graph = import_graph()
    assert "incident_rpc.dispatch.registry" in graph["incident_rpc.actions.incidents"]
    assert "incident_rpc.dispatch.registry" in graph["incident_rpc.dispatch.dispatcher"]


if __name__ == "__main__":
    for module, targets in sorted(import_graph().items()):
        print(f"[{layer(module)}] {module} ->", ", ".join(sorted(targets)) or "-")
    sys.exit(1 if find_cycle(import_graph()) or upward_imports(import_graph()) else 0)
