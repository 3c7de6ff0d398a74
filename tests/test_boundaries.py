"""Architecture rules: pure modules import no I/O library; workers never import the HTTP layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_LIBRARIES = {"dramatiq", "redis", "sqlalchemy", "starlette", "socketio", "uvicorn",
                "httpx", "aiosqlite", "psycopg"}
PURE_MODULES = ["server/jobs.py", "server/events.py", "server/keys.py", "server/signing.py",
                "server/validation.py", "server/metrics.py", "server/headers.py",
                "server/audit.py", "server/logs.py", "server/openapi.py", "workers/imaging.py",
                "server/client_address.py", "server/cron.py", "server/mail_limits.py"]
HTTP_MODULES = {"server.app", "server.routes", "server.sockets", "server.relay", "server.auth",
                "server.uploads", "server.error_handlers", "server.sweeper", "server.dispatch",
                "server.request_ids"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_no_io_library(module: str) -> None:
    imported = {name.split(".")[0] for name in _imports(ROOT / module)}
    assert not imported & IO_LIBRARIES, imported & IO_LIBRARIES


@pytest.mark.integration  # a fresh interpreter per module: a process each
@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_pull_in_no_io_library_indirectly(module: str) -> None:
    name = module.removesuffix(".py").replace("/", ".")
    probe = (f"import sys, {name}; "
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    assert not set(loaded) & IO_LIBRARIES, set(loaded) & IO_LIBRARIES


@pytest.mark.parametrize("module", sorted(str(p.relative_to(ROOT))
                                          for p in (ROOT / "workers").glob("*.py")))
def test_workers_never_import_the_http_layer(module: str) -> None:
    for name in _imports(ROOT / module):
        assert not any(name == h or name.startswith(h + ".") for h in HTTP_MODULES), name
