"""The package stands alone: a wheel built from the checkout, installed in a fresh venv, validates
configs from a folder that is not the checkout (the schema and default config are package data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ("cmgh/defaults/config.schema.yaml", "cmgh/defaults/config.yaml")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # nothing of the checkout
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the built wheel; the project venv's packages (torch, ...) reach it through a
    ``.pth`` line, so nothing is downloaded or reinstalled. Returns the venv's ``bin``."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"  # what the wheel is built from, so the build leaves nothing in the checkout
    shutil.copytree(REPO / "cmgh", source / "cmgh", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(source), "-w", str(root / "dist")], cwd=root)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (root / "dist").glob("cmgh-*.whl")
    assert set(PACKAGE_DATA) <= set(zipfile.ZipFile(wheel).namelist())

    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / Path(sys.executable).name
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).stdout.strip()
    Path(site, "project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # appended after the venv's own
    done = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    return bin_dir


@pytest.mark.slow
def test_an_installed_wheel_validates_configs_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    where = _run([str(installed / "python"), "-c", "import cmgh, cmgh.config as c; print(cmgh.__file__); print(c.load().path('data'))"], cwd=project)
    assert where.returncode == 0, where.stderr[-2000:]
    module, data = where.stdout.split()
    assert Path(module).is_relative_to(installed.parent) and not Path(module).is_relative_to(REPO)  # the wheel's copy
    assert Path(data) == project / "results" / "data"  # relative config paths hang off the working directory

    shown = _run([str(installed / "cmgh"), "config", "show"], cwd=project)  # the default config, from the package
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "name: mini" in shown.stdout

    (project / "mine.yaml").write_text("pretrain: {steps: 7}\n")
    mine = _run([str(installed / "cmgh"), "config", "show", "--config", "mine.yaml"], cwd=project)
    assert mine.returncode == 0, mine.stderr[-2000:]
    assert "steps: 7" in mine.stdout and "warmup_steps: 15" in mine.stdout  # the schema's defaults filled in

    (project / "bad.yaml").write_text("pretrain: {steps: 0}\n")
    bad = _run([str(installed / "cmgh"), "config", "show", "--config", "bad.yaml"], cwd=project)
    assert bad.returncode != 0
    assert bad.stderr.strip() == "cmgh: error: pretrain.steps: 0 is less than the minimum of 1"
