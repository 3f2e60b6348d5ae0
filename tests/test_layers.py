"""The layering of ARCHITECTURE.md: no module imports one from a higher layer, and no imports form a cycle
(function-level imports included)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "minidiffusion"

# top-level module (or package) -> layer; a module may import its own layer or lower ones
LAYERS = {
    "errors": 0,
    "data.registry": 1,  # the table of dataset facts, which config validates against (it imports nothing)
    "diffusion": 1, "models": 1, "images": 1, "devices": 1, "distributed": 1, "rundir": 1,
    "config": 2, "presets": 2, "weights": 2,
    "data": 3, "checkpoint": 3, "features": 3, "logging_backends": 3,
    "sampling": 4,
    "training": 5, "evaluate": 5, "visualize": 5, "interop": 5, "api": 5,
    "cli": 6, "__main__": 6, "__init__": 6,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every minidiffusion module ``path`` imports, anywhere in the file, as dotted names inside the package."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                found.add(target)
            else:  # from . import x, y
                found.update(f"{target}.{alias.name}".lstrip(".") for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minidiffusion."):
            found.add(node.module.removeprefix("minidiffusion."))
    return {name for name in found if name}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(modules)
    edges = {}
    for name, path in modules.items():
        targets = set()
        for t in imports(path):
            while t and t not in known:  # "diffusion.registry.SAMPLERS"-style names: the module part
                t = t.rpartition(".")[0]
            if t and t != name:
                targets.add(t)
        edges[name] = targets
    return edges


def layer(module: str) -> int:
    """The layer of the longest entry of LAYERS that ``module`` is or lies inside."""
    parts = module.split(".")
    return next(LAYERS[".".join(parts[:k])] for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in LAYERS)


def test_every_module_has_a_layer():
    assert {m.split(".")[0] for m in graph()} <= set(LAYERS)


def upward(edges: dict[str, set[str]]) -> list[str]:
    return [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
            for a, targets in edges.items() for b in targets if layer(b) > layer(a) and a != "__init__"]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    found = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own submodules
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node, [node])
    return found


def test_no_module_imports_a_higher_layer():
    assert upward(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_see_a_planted_upward_import_and_cycle():
    edges = graph()
    planted = {**edges, "config": edges["config"] | {"training"}}
    assert upward(planted) == ["config (layer 2) imports training (layer 5)"]
    assert upward({**edges, "data.registry": {"data"}}) == ["data.registry (layer 1) imports data (layer 3)"]
    assert cycles({**edges, "sampling": edges["sampling"] | {"training"}})  # training imports sampling
