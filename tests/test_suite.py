"""The suite's own shape: every test folder is a package (modules are ``tests.<folder>.test_x``, so
files of the same name in different folders never collide), and each folder mirrors a package of
cmgh (tests/e2e runs the workflow end to end)."""

from __future__ import annotations

from tests.helpers import REPO

TESTS = REPO / "tests"
NOT_A_PACKAGE_OF_CMGH = {"e2e"}  # the workflow end to end, across packages


def test_every_test_folder_is_a_package() -> None:
    folders = {p.parent for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts}
    assert sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").is_file()) == []


def test_test_folders_mirror_the_packages_of_cmgh() -> None:
    folders = {p.parent for p in TESTS.rglob("test_*.py")} - {TESTS}
    for folder in folders:
        top = folder.relative_to(TESTS).parts[0]
        assert top in NOT_A_PACKAGE_OF_CMGH or (REPO / "cmgh" / folder.relative_to(TESTS) / "__init__.py").is_file(), folder
