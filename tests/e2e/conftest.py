"""One run of the tiny DAG per session, shared by the tests that read a finished run (treat as read-only)."""

from __future__ import annotations

import pytest

from tests.e2e.dag import TinyDag, run_tiny_dag


@pytest.fixture(scope="session")
def tiny_dag(tmp_path_factory: pytest.TempPathFactory) -> TinyDag:
    return run_tiny_dag(tmp_path_factory.mktemp("dag"))
