"""The package's shape: no module imports itself back through others (function-level imports
included), and outside a family's own module nothing branches on that family's name."""

from __future__ import annotations

import ast
from pathlib import Path

from sentiment import registry

PACKAGE = Path(__file__).resolve().parent.parent / "sentiment"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in it (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return {m for m in found if m in known and m != name}


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def _is_kind(node: ast.AST) -> bool:
    """`kind == "image"` is about a run's kind, `schedule == "linear"` about a schedule: words some
    families share their names with."""
    text = ast.unparse(node)
    return "kind" in text or "schedule" in text


def test_no_branch_on_a_family_name_outside_its_module():
    names = {f.name for f in registry.families()}
    found = []
    for name, path in _modules().items():
        own = name.rpartition(".")[2] if name.startswith("sentiment.families.") else None
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            sides = []
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
            elif isinstance(node, ast.match_case):
                sides = [node.pattern]
            constants = {
                c.value
                for side in sides
                for c in ast.walk(side)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            } | {
                c.value.value
                for side in sides
                for c in ast.walk(side)
                if isinstance(c, ast.MatchValue) and isinstance(c.value, ast.Constant)
            }
            hit = (constants & names) - {own}
            if hit and not any(_is_kind(s) for s in sides):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert found == []


def test_generic_code_does_not_probe_classifiers():
    generic = ["cli.py", "serve.py", "explain.py", "api.py", "registry.py", "recipe.py", "tasks.py"]
    probes = [f for f in generic if "hasattr(" in (PACKAGE / f).read_text(encoding="utf-8")]
    assert probes == []
