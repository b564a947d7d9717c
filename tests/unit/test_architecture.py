"""The layout is the architecture, and these tests keep it so: the domain is pure, models/ never imports Prefect,
no package reaches into another's private modules, and no two files import each other (directly or round a
cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "flows", "notifications", "endpoint", "cli")
# The pure domain does no I/O and knows no database or orchestrator.
NOT_IN_DOMAIN = {"sqlalchemy", "sqlmodel", "alembic", "psycopg", "prefect", "httpx", "yaml", "subprocess",
                 "socket", "smtplib", "os", "pathlib"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Every module `name` imports, anywhere in the file (function-level imports too), made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if node.module:  # `from . import a` loads the submodules, not the package's own names
                found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


ALL = modules()
GRAPH = {name: {i for i in imports_of(name, path) if i in ALL and i != name} for name, path in ALL.items()}


def _private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split("."))


def test_no_package_imports_another_packages_private_modules():
    offences = [f"{name} imports {target}" for name, targets in GRAPH.items() for target in targets
                if target.split(".")[0] != name.split(".")[0] and _private(target)]
    assert offences == []


def test_nothing_outside_a_models_layer_imports_its_private_modules():
    layers = ("models.domain", "models.config", "models.storage", "models.services")
    offences = [f"{name} imports {target}" for name, targets in GRAPH.items() for target in targets
                for layer in layers if target.startswith(layer + "._") and not name.startswith(layer)]
    assert offences == []


def test_models_never_imports_prefect_and_the_domain_does_no_io():
    for name, path in ALL.items():
        external = {i.split(".")[0] for i in imports_of(name, path)}
        if name.startswith("models"):
            assert "prefect" not in external, name
        if name.startswith("models.domain"):
            assert not external & NOT_IN_DOMAIN, f"{name} imports {external & NOT_IN_DOMAIN}"


def test_no_import_cycles_between_files():
    """Tarjan's strongly connected components over the file graph: every component is a single file."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert cycles == []


def test_no_source_file_is_past_400_lines():
    """A file past ~400 lines holds two ideas: the product, its tests and its benchmarks alike (issue 29)."""
    files = [*ALL.values(), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    long = {str(path.relative_to(ROOT)): n for path in files if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_no_product_module_imports_test_or_benchmark_code():
    """What ships (the packages the wheel holds) runs without the repository's tests/ and benchmarks/."""
    reaching = {name: sorted(found) for name, path in ALL.items()
                if (found := {m for m in imports_of(name, path) if m.split(".")[0] in ("tests", "benchmarks")})}
    assert reaching == {}


def test_the_cli_does_not_import_prefect_at_start():
    """Prefect fixes its settings when first imported; `changeflow demo` sets PREFECT_API_URL for its own server
    after start-up, so loading the commands must not import Prefect (else a temporary server answers)."""
    import subprocess
    import sys

    code = "import sys, cli._app, cli.dev, flows.traffic; print('prefect' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
