"""One venv serving two projects: `cmgh` run in a project writes there and records that project's
commit, never the folder of the checkout the package was installed from (here: this checkout, an
editable install, as `make setup` makes it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cmgh.config import apply_overrides
from tests.helpers import REPO, tiny_overrides

RESULTS = "results-of-this-project"  # a folder name no other test or run uses: its absence in the checkout is checked
CMGH = Path(sys.executable).with_name("cmgh")  # the shared venv's console script (it puts no project folder on sys.path)
GIT = ["git", "-c", "user.name=cmgh tests", "-c", "user.email=tests@cmgh.invalid", "-c", "commit.gpgsign=false"]


def git_project(root: Path, name: str) -> str:
    """A project folder of its own (a git repository holding its config of relative paths); its commit."""
    root.mkdir()
    tree = apply_overrides({}, [*tiny_overrides(Path(RESULTS)), f"name={name}"])
    (root / "config.yaml").write_text(yaml.safe_dump(tree))
    for args in (["init", "--quiet"], ["add", "config.yaml"], ["commit", "--quiet", "-m", name]):
        subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)
    return subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_provenance_describes_the_project_of_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cmgh import __version__
    from cmgh.config import load
    from cmgh.track.provenance import git_state, provenance_tags

    commit = git_project(tmp_path / "project", "project")
    monkeypatch.chdir(tmp_path / "project")
    tags = provenance_tags(load(overrides=tiny_overrides(Path(RESULTS))), "pretrain")
    assert (tags["git_commit"], tags["git_dirty"], tags["cmgh.version"]) == (commit, "false", __version__)
    (tmp_path / "project" / "config.yaml").write_text("edited: true\n")
    assert git_state()["git_dirty"] == "true"
    (tmp_path / "plain").mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git looks no further up, whatever holds the temp folder
    monkeypatch.chdir(tmp_path / "plain")  # not a repository (nor inside one): no commit, rather than the package checkout's
    assert git_state() == {} and provenance_tags(load(), "pretrain")["cmgh.version"] == __version__


@pytest.mark.slow  # real `cmgh` processes
@pytest.mark.skipif(shutil.which("git") is None or not CMGH.is_file(), reason="needs git and the venv's cmgh script")
def test_two_projects_sharing_one_venv_each_get_their_own_outputs_and_commit(tmp_path: Path) -> None:
    commits = {name: git_project(tmp_path / name, name) for name in ("first", "second")}
    assert commits["first"] != commits["second"]
    probe = "import json, cmgh; from cmgh.track.provenance import git_state; print(json.dumps([cmgh.__file__, git_state()]))"
    snapshots = {}
    for name, commit in commits.items():
        project = tmp_path / name
        done = subprocess.run([str(CMGH), "data", "synth", "--dataset", "kinetics", "--config", "config.yaml"], cwd=project,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (project / RESULTS / "data" / "kinetics" / ".complete").is_file()
        # -P: the interpreter's packages only (not the working directory's), as the console script sees them
        seen = subprocess.run([sys.executable, "-P", "-c", probe], cwd=project, capture_output=True, text=True, timeout=120, check=True)
        module, state = json.loads(seen.stdout)
        assert Path(module).resolve().is_relative_to(REPO) and not Path(module).resolve().is_relative_to(project)
        assert state["git_commit"] == commit  # the project's code version, not the installed checkout's
        snapshots[name] = tree_state(project)
    assert tree_state(tmp_path / "first") == snapshots["first"]  # the second project's run left the first one alone
    assert not (REPO / RESULTS).exists()  # and wrote nothing beside the installed package


def tree_state(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its modification time."""
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}
