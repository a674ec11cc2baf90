"""The import graph keeps the architecture: the core never imports what sits on top of it.

Core modules are ``aiotimer/_*.py`` except the Kamailio façade's (``_kamailio_*``), plus
``aiotimer/testing``. Imports under ``if TYPE_CHECKING:`` are type-only and do not count; imports
inside functions do (they run).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aiotimer"
INTEGRATIONS = (
    "aiotimer.process",
    "aiotimer.cluster",
    "aiotimer.aiohttp",
    "aiotimer.prometheus",
    "aiotimer.leader",
    "aiotimer.cli",
    "aiotimer.kamailio",
    "aiohttp",
    "prometheus_client",
    "redis",
    "asyncpg",
)


def core_modules() -> dict[str, Path]:
    modules = {
        f"aiotimer.{path.stem}": path
        for path in PACKAGE.glob("_*.py")
        if not path.stem.startswith("_kamailio") and path.stem != "__main__"
    }
    modules.update({f"aiotimer.testing.{p.stem}": p for p in (PACKAGE / "testing").glob("*.py")})
    return modules


def runtime_imports(module: str, path: Path) -> set[str]:
    """The modules ``path`` imports at run time (type-only imports left out)."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for child in node.body for n in ast.walk(child))
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def test_no_core_module_imports_an_integration() -> None:
    offenders = {
        module: sorted(i for i in runtime_imports(module, path) if i.startswith(INTEGRATIONS))
        for module, path in core_modules().items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_no_import_cycle_runs_through_the_scheduler() -> None:
    modules = core_modules()
    graph = {
        m: {i for i in runtime_imports(m, p) if i in modules and i != m} for m, p in modules.items()
    }
    scheduler = "aiotimer._scheduler"
    seen: set[str] = set()
    stack = list(graph[scheduler])
    while stack:  # everything the scheduler imports, directly or not
        module = stack.pop()
        if module in seen:
            continue
        seen.add(module)
        stack.extend(graph[module])
    assert scheduler not in seen, "a module the scheduler imports imports the scheduler back"
    assert "aiotimer._dispatch" in seen  # (the walk does find the scheduler's own imports)
