"""Every test here is slow (Snakemake runs as a process); one run of the tiny DAG per session, shared
by the tests that read a finished run (treat as read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.dag import TinyDag, run_tiny_dag

E2E = Path(__file__).parent
DAG_TIMEOUT = 1800  # seconds: whichever test asks first for the run waits for the whole DAG within its own timeout


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(E2E):  # Snakemake as a process, dry runs included: not the fast tier
            item.add_marker(pytest.mark.slow)
        if "tiny_dag" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(DAG_TIMEOUT))


@pytest.fixture(scope="session")
def tiny_dag(tmp_path_factory: pytest.TempPathFactory) -> TinyDag:
    return run_tiny_dag(tmp_path_factory.mktemp("dag"))
