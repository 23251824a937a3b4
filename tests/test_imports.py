"""The module structure: no import circle through the batch engines or the model registry (every ``import`` counts,
also those inside functions; imports of a package's ``__init__`` are left out, they are the public surface), and
every public error class in ``vos.errors``."""
from __future__ import annotations

import ast

import pytest
from conftest import ROOT


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict:
    """``module → the vos modules it imports`` (not packages), for every module of ``vos``."""
    files = {module_name(p): p for p in (ROOT / "vos").rglob("*.py")}
    packages = {name for name, p in files.items() if p.name == "__init__.py"}
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
        graph[name] = {m for m in found if m in files and m not in packages and m != name}
    return graph


def circle_through(graph: dict, start: str) -> list | None:
    """An import path from ``start`` back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        name, path = stack.pop()
        for dep in graph[name]:
            if dep == start:
                return [*path, start]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, [*path, dep]))
    return None


@pytest.mark.parametrize("module", ["vos.batch.run", "vos.batch.ray", "vos.batch.engines", "vos.models.registry",
                                    "vos.models.sam2", "vos.models.checkpoint", "vos.models.spec"])
def test_no_import_circle_through(module):
    graph = import_graph()
    assert module in graph
    assert circle_through(graph, module) is None, " → ".join(circle_through(graph, module))


def test_every_public_error_class_is_defined_in_vos_errors():
    import vos.errors

    errors = {name for name, value in vars(vos.errors).items() if isinstance(value, type)}
    outside = []
    for path in (ROOT / "vos").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            bases = [getattr(b, "id", getattr(b, "attr", "")) for b in getattr(node, "bases", [])]
            if (isinstance(node, ast.ClassDef) and not node.name.startswith("_")
                    and any(b in errors or b.endswith(("Error", "Exception")) for b in bases)):
                outside.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert [o for o in outside if not o.startswith("vos/errors.py")] == []
