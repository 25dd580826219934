"""The MLflow UI, optuna-dashboard and results/report.html of a finished tiny DAG, opened in headless
Chromium as a user opens them (the README's commands, servers on 127.0.0.1), checked from each page's text.

CMGH_SCREENSHOTS=docs/figures saves the pages as PNGs on the way (workflow/scripts/screenshots.py
does the same from a finished `make reproduce`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cmgh import config as config_mod
from cmgh import layout
from tests.e2e import browser
from tests.e2e.dag import TinyDag, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.skipif(browser.missing_browser() is not None, reason=str(browser.missing_browser()))]
SHOTS = Path(os.environ["CMGH_SCREENSHOTS"]).resolve() if os.environ.get("CMGH_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def cfg(tiny_dag: TinyDag) -> config_mod.Config:
    return config_mod.load([config_mod.DEFAULT_CONFIG, tiny_dag.configfile])


@pytest.fixture(scope="module")
def servers(cfg: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both servers start at once (MLflow's takes ~35 s on 2 loaded cores) and stop at the end, whatever
    failed; ``runs_link`` is the runs-table link `cmgh browse` prints."""
    from cmgh import sweep

    logs = tmp_path_factory.mktemp("ui")
    started: dict[str, browser.Server] = {}
    started_link: dict[str, str] = {}
    try:
        port = browser.free_port()
        command, started_link["runs"] = browser.mlflow_ui(cfg, port)
        started["mlflow"] = browser.start(command, port, logs / "mlflow.log")
        port = browser.free_port()
        started["optuna"] = browser.start(browser.dashboard_command(sweep.dashboard_command(cfg), port), port, logs / "optuna.log")
        yield {**started, "runs_link": started_link["runs"]}
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def report_html(tiny_dag: TinyDag, servers: dict[str, browser.Server], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`snakemake --report` as `make reproduce` runs it, while the servers start (the run's folder stays untouched)."""
    html = tmp_path_factory.mktemp("report") / "report.html"
    result = snakemake(tiny_dag.workdir, "--configfile", str(tiny_dag.configfile), "--report", str(html))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return html


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    with browser.chromium() as chromium:
        yield chromium


def test_mlflow_ui_lists_the_experiment_and_its_runs_with_metrics(cfg, servers, report_html, driver) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{cfg.path('results') / layout.MLFLOW_DB}")
    experiment = client.get_experiment_by_name(str(cfg.name))
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'pretrain'", order_by=["attributes.run_name"])
    assert len(runs) == 2, [r.info.run_name for r in runs]
    run = runs[0]
    pages = browser.mlflow_pages(driver, servers["mlflow"].wait(), servers["runs_link"], str(cfg.name), run.info.run_name, "loss_va", SHOTS)
    assert str(cfg.name) in pages["experiments"].splitlines()
    for other in runs:
        assert other.info.run_name in pages["runs"]
    assert "sweep/default" in pages["runs"]
    sidebar = pages["runs"].splitlines()
    assert "Model registry" in sidebar and "Judges" not in sidebar  # the model-training view's sidebar, not GenAI's
    assert "howto100m" in pages["runs"]  # the Datasets column: what the pre-training runs read
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert {m.name for m in models} == {f"ms-{r.data.tags['variant']}-seed0" for r in runs}
    assert any(m.name in pages["runs"] for m in models)  # the Models column
    lines = pages["run"].splitlines()
    assert "Finished" in lines
    for metric in ("loss_va", "loss_vt", "conflict_fraction"):
        value = run.data.metrics[metric]
        position = lines.index(metric)
        assert float(lines[position + 1]) == pytest.approx(value, rel=1e-9), (metric, lines[position : position + 2])


def test_optuna_dashboard_shows_the_study_and_its_trials(cfg, servers, driver) -> None:
    import optuna

    from cmgh import sweep

    name = sweep.study_name(cfg)
    study = optuna.load_study(study_name=name, storage=sweep.storage_url(cfg))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == int(cfg.sweep.n_trials)
    pages = browser.dashboard_pages(driver, servers["optuna"].wait(), name, len(trials), SHOTS)
    assert f"Best Trial (number={study.best_trial.number})" in pages["study"].splitlines()
    lines = pages["trials"].splitlines()
    for trial in trials:
        assert f"Trial {trial.number}" in lines
    first = lines.index("Value")
    assert float(lines[first + 1]) == pytest.approx(trials[0].value)


def test_report_html_shows_the_ablation_table_and_figures(cfg, report_html, driver) -> None:
    tables = cfg.path("results") / "tables"
    pages = browser.report_pages(driver, report_html.as_uri(), "ablation.md", "noise_roc.png", SHOTS)
    assert str(tables / "ablation.md") in pages["tables"].splitlines()
    assert pages["ablation.md"] == (tables / "ablation.md").read_text(encoding="utf-8")
    rows = [line.split("|")[2].strip() for line in pages["ablation.md"].splitlines() if line.startswith("| ms |")]
    assert rows == ["random", "baseline", "gr_gcl"]
    assert pages["figure"].startswith("data:image/png;") and len(pages["figure"]) > 10_000
