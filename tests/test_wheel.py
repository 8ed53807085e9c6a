"""The wheel is a real package: installed into a fresh venv and run from another folder, it works."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import FIXTURE_CONSTITUTION, ROOT, TEST_KEY, fast_config
from fake_anthropic import FakeAnthropic

pytestmark = pytest.mark.slow


def test_wheel_installed_outside_the_repo_runs_catalog_plan_and_a_build(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("sdf-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # else pip finds src/sdf "installed"
    subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300, env=clean)
    # The dependencies come from the test's own environment; the editable sdf there is not on this path.
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("ANTHROPIC_")}
    env["TQDM_DISABLE"] = "1"

    def sdf(*args: str | Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([venv / "bin" / "sdf", *map(str, args)], cwd=elsewhere, env={**env, **extra},
                              capture_output=True, text=True, timeout=300)

    where = subprocess.run([py, "-c", "import sdf; print(sdf.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where
    catalog = sdf("catalog")
    assert catalog.returncode == 0, catalog.stderr
    assert "23 genres" in catalog.stdout and str(venv) in catalog.stdout
    plan = sdf("plan", "--constitution", FIXTURE_CONSTITUTION.resolve(), "--docs", "5")
    assert plan.returncode == 0, plan.stderr
    bundled = sdf("plan", "--docs", "3", "--name", "bundled")  # the bundled claude.md is the default
    assert bundled.returncode == 0 and "3 documents" in bundled.stdout, bundled.stderr
    config = fast_config(tmp_path, docs=4)
    with FakeAnthropic() as fake:
        build = sdf("build", "--constitution", FIXTURE_CONSTITUTION.resolve(), "--config", config,
                    ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY=TEST_KEY)
    assert build.returncode == 0, build.stderr
    assert (elsewhere / "corpus" / "fixture_constitution" / "report.html").is_file()
