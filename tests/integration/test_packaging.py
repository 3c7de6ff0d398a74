"""The wheel ships everything a deployment runs: both packages, the migrations and the
browser client, and an installed copy finds its client files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_wheel_ships_the_client_and_the_migrations(tmp_path: Path) -> None:
    # The project's venv has no pip; the one `make` bootstraps uv with (.uv) has.
    builder = ROOT / ".uv" / "bin" / "python"
    if not builder.exists():
        pytest.skip("no .uv/bin/python (made by `make`): wheel not built")
    subprocess.run([str(builder), "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--disable-pip-version-check", str(ROOT), "-w", str(tmp_path)],
                   check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("darkroom-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    tracked = subprocess.run(["git", "ls-files", "web", "server/data/migrations"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert tracked and set(tracked) <= names, sorted(set(tracked) - names)
    assert "workers/app.py" in names and "server/cli.py" in names
    found = subprocess.run(
        [sys.executable, "-c", "from server.web.client_files import WEB_DIR; print(WEB_DIR)"],
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")}, capture_output=True,
        text=True, check=True).stdout.strip()
    assert Path(found) == tmp_path / "site" / "web"
    assert (Path(found) / "index.html").is_file()
