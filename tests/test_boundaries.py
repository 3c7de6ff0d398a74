"""Architecture rules, checked on every module: each layer of ``server/`` is a folder and
dependencies run one way (workers → server; web → services → infra → data → core), the
core imports no I/O library, and routes do not import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_LIBRARIES = {"dramatiq", "redis", "sqlalchemy", "starlette", "socketio", "uvicorn",
                "httpx", "aiosqlite", "psycopg", "alembic", "multipart",
                "python_multipart", "prometheus_client"}
# What each folder may import from the project (its own folder included).
LAYERS = {
    "server/core": {"server.core"},
    "server/data": {"server.core", "server.data"},
    "server/infra": {"server.core", "server.data", "server.infra"},
    "server/services": {"server.core", "server.data", "server.infra", "server.services"},
    "server/web": {"server.core", "server.data", "server.infra", "server.services",
                   "server.web"},
    "workers": {"server.core", "server.data", "server.infra", "server.services", "workers"},
}
# Pure modules outside the core: no I/O library, directly or indirectly.
PURE_ELSEWHERE = ["server/infra/logs.py", "server/infra/metrics.py", "server/infra/charts.py",
                  "server/web/http/headers.py", "server/web/http/openapi.py"]


def _modules(folder: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*.py")
                  if "migrations" not in p.parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from server import x` imports the module server.x
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _project(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in ("server", "workers")}


PURE_MODULES = _modules("server/core") + PURE_ELSEWHERE


def test_every_module_is_in_a_layer() -> None:
    top = {p.name for p in (ROOT / "server").glob("*.py")}
    # The entry points: the `darkroom` command, `python -m server`, the launcher of
    # `make run`, and the command line's HTTP client.
    assert top == {"__init__.py", "__main__.py", "cli.py", "launcher.py", "client.py"}, top


@pytest.mark.parametrize("module", [m for layer in LAYERS for m in _modules(layer)])
def test_dependencies_run_one_way(module: str) -> None:
    layer = next(name for name in sorted(LAYERS, key=len, reverse=True)
                 if module.startswith(name + "/"))
    allowed = LAYERS[layer]
    for name in _project(_imports(ROOT / module)):
        if name in ("server", "workers"):
            continue
        assert any(name == a or name.startswith(a + ".") for a in allowed), (
            f"{module} ({layer}) imports {name}")


@pytest.mark.parametrize("module", _modules("server"))
def test_server_never_imports_workers(module: str) -> None:
    assert not any(n.split(".")[0] == "workers" for n in _imports(ROOT / module)), module


@pytest.mark.parametrize("module", ["server/cli.py", "server/client.py"])
def test_the_command_line_never_imports_the_web_process(module: str) -> None:
    # An operator's command starts in about a second: the web app (Starlette, Socket.IO's
    # server, every route) is not imported for it, in its functions either (`darkroom run`
    # starts the web process through `server.__main__`, as it should).
    assert not any(name == "server.web" or name.startswith("server.web.")
                   for name in _imports(ROOT / module)), module


@pytest.mark.parametrize("module", _modules("server/web/http/routes"))
def test_routes_do_not_import_each_other(module: str) -> None:
    for name in _imports(ROOT / module):
        assert not name.startswith("server.web.http.routes."), f"{module} imports {name}"


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_no_io_library(module: str) -> None:
    imported = {name.split(".")[0] for name in _imports(ROOT / module)}
    assert not imported & IO_LIBRARIES, imported & IO_LIBRARIES


@pytest.mark.integration  # a fresh interpreter per module: a process each
@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_pull_in_no_io_library_indirectly(module: str) -> None:
    name = module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    probe = (f"import sys, {name}; "
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    assert not set(loaded) & IO_LIBRARIES, set(loaded) & IO_LIBRARIES
