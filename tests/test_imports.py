"""The import rules docs/architecture.md states, checked on the source: no import circle, no import from a higher
floor, lm-eval only behind its boundary.  Module-level and function-level imports count alike."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "roma_eval"

# Floors, lowest first (docs/architecture.md, "Rules that keep it this way").  A module imports only from its own
# floor or below; within a floor, the graph has no circle.
FLOORS = (
    ("ground", None),  # the top-level modules, routing/, results/, training/
    ("methods", ("methods", "toy", "report")),
    ("pipeline", ("pipeline",)),
    ("entry", ("commands", "demo")),
    ("cli", ("cli", "lm_eval_cli", "_registration")),
)
# Besides harness.py (the boundary), these may import lm-eval: its models of ours, the registration of them, and the
# readers of its task objects.
LM_EVAL_ALLOWED = ("roma_eval.harness", "roma_eval.lm_eval_cli", "roma_eval._registration.", "roma_eval.samples",
                   "roma_eval.methods.oracle.tasks", "roma_eval.methods.oracle.generation")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (annotations only: never imported when the code runs)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path, name: str):
    """(imported module, line) for every import the file runs, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            yield base, node.lineno
            yield from ((f"{base}.{alias.name}", node.lineno) for alias in node.names)


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        targets = edges.setdefault(name, {})
        for target, line in _imports(path, name):
            if target.split(".")[0] == "lm_eval":
                targets.setdefault("lm_eval", line)
            elif target in modules and target not in (name, "roma_eval"):
                targets.setdefault(target, line)
    return edges


def floor(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for level, (_, packages) in enumerate(FLOORS):
        if packages and top in packages:
            return level
    return 0


def test_no_module_imports_from_a_higher_floor(graph):
    upward = [f"{a} -> {b} (line {line})" for a, targets in graph.items() for b, line in targets.items()
              if b != "lm_eval" and floor(b) > floor(a)]
    assert not upward, "imports from a higher floor:\n" + "\n".join(upward)


def test_the_import_graph_has_no_circle(graph):
    # Tarjan's strongly connected components; a component of more than one module is a circle.
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w == "lm_eval":
                continue
            if w not in index:
                visit(w)
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
                circles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


def test_lm_eval_is_imported_only_behind_its_boundary(graph):
    def allowed(module):
        return (module.startswith(LM_EVAL_ALLOWED) or module.endswith(".lm_eval")) and "lm_eval" in graph[module]

    leaks = sorted(m for m, targets in graph.items() if "lm_eval" in targets and not allowed(m))
    assert not leaks, f"import lm-eval outside harness.py and the adapters: {leaks}"


def test_the_rules_catch_what_they_forbid(graph):
    # The checks above would pass on an empty graph: each rule must see a violation when one is made.
    assert floor("roma_eval.cli") > floor("roma_eval.commands.train") > floor("roma_eval.pipeline.stages")
    assert floor("roma_eval.pipeline.stages") > floor("roma_eval.methods.roma.train") > floor("roma_eval.storage")
    assert "lm_eval" in graph["roma_eval.harness"] and "lm_eval" in graph["roma_eval.methods.roma.lm_eval"]
    assert "roma_eval.harness" in graph["roma_eval.pipeline.experiment"]
