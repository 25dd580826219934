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

    from cmgh.track import views

    client = mlflow.MlflowClient(f"sqlite:///{cfg.path('results') / layout.MLFLOW_DB}")
    experiment = client.get_experiment_by_name(str(cfg.name))
    landing = layout.landing(cfg.path("results"), "md").read_text()
    assert experiment.tags["mlflow.note.content"].startswith(landing.rstrip())  # the report's front page is the experiment's description
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'pretrain'", order_by=["attributes.run_name"])
    assert len(runs) == 2, [r.info.run_name for r in runs]
    run = runs[0]
    pages = browser.mlflow_pages(driver, servers["mlflow"].wait(), servers["runs_link"], str(cfg.name), run.info.run_name, "loss_va", SHOTS)
    assert str(cfg.name) in pages["experiments"].splitlines()
    for other in runs:
        assert other.info.run_name in pages["runs"]
    assert "sweep/default" not in pages["runs"]  # the link opens the saved view of the pre-training runs
    driver.get("about:blank")  # loaded afresh without the view: the whole table, the study's run in it too
    browser.open_page(driver, servers["runs_link"].replace(f"&{views.VIEW_PARAMETER}", ""), "the study's run in the whole table",
                      lambda text: "sweep/default" in text, "Something went wrong")
    sidebar = pages["runs"].splitlines()
    assert "Model registry" in sidebar and "Judges" not in sidebar  # the model-training view's sidebar, not GenAI's
    assert "howto100m" in pages["run"]  # the datasets the run read (the runs link's saved view leaves that column out)
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert {m.name for m in models} == {f"ms-{r.data.tags['variant']}-seed0" for r in runs}
    assert any(m.name in pages["run"] for m in models)  # the run's model
    lines = pages["run"].splitlines()
    assert "Finished" in lines
    for metric in ("loss_va", "loss_vt", "conflict_fraction"):
        value = run.data.metrics[metric]
        position = lines.index(metric)
        assert float(lines[position + 1]) == pytest.approx(value, rel=1e-9), (metric, lines[position : position + 2])


def runs_table(driver) -> dict[str, dict[str, str]]:
    """MLflow's runs table as rendered: each row's cells by column id (``metrics.`loss_va```), by run name."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    rows: dict[str, dict[str, str]] = {}
    try:
        for cell in driver.find_elements(By.CSS_SELECTOR, "[role=gridcell][col-id]"):
            row = cell.find_element(By.XPATH, "./ancestor::*[@row-index][1]").get_attribute("row-index")
            rows.setdefault(row, {})[cell.get_attribute("col-id")] = cell.text
    except StaleElementReferenceException:  # the grid re-rendered meanwhile: the caller asks again
        return {}
    return {cells["attributes.`Run Name`"].splitlines()[-1]: cells for cells in rows.values() if cells.get("attributes.`Run Name`")}


def test_mlflow_runs_link_lists_the_pretraining_runs_with_their_downstream_metrics(cfg, servers, driver) -> None:
    """`cmgh browse`'s link opens cmgh's saved view: one row per pre-training run, a column for each task's headline
    metric (put there by the run's evaluations) and the final losses, each cell the store's value."""
    import urllib.parse

    import mlflow

    from cmgh.track import views
    from cmgh.track.names import headline_keys

    client = mlflow.MlflowClient(f"sqlite:///{cfg.path('results') / layout.MLFLOW_DB}")
    experiment = client.get_experiment_by_name(str(cfg.name))
    runs = client.search_runs([experiment.experiment_id], views.RUN_FILTER)
    columns = [f"metrics.`{key}`" for key in [*headline_keys(), *views.TRAINING_METRICS]]
    assert len(runs) == 2 and servers["runs_link"].endswith(views.VIEW_PARAMETER)
    servers["mlflow"].wait()
    browser.open_page(driver, servers["runs_link"], "the pre-training runs", lambda text: all(r.info.run_name in text for r in runs),
                      "Something went wrong")
    browser.close_assistant(driver)
    names = {r.info.run_name for r in runs}
    shown = browser.wait_for(driver, "every headline column filled",
                             lambda _: (table := runs_table(driver)).keys() == names and all(table[n].get(c) for n in names for c in columns))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(driver.current_url).fragment.partition("?")[2])
    assert views.VIEW_NAME in shown and query["searchFilter"] == [views.RUN_FILTER]  # the saved view is the one open, its filter applied
    table = runs_table(driver)
    for run in runs:
        cells = table[run.info.run_name]
        assert {c: float(cells[c]) for c in columns} == pytest.approx({c: run.data.metrics[c[9:-1]] for c in columns}, rel=1e-6), cells
    browser.screenshot(driver, SHOTS, "mlflow_pretraining_runs.png")


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


def test_report_html_opens_on_the_headline_table(cfg, report_html, driver) -> None:
    """The report answers on its first page: the title and the headline table `cmgh report` wrote (the
    rows of landing.md, whose numbers are the summary's), then every table readable in the page (HTML,
    not a Markdown download) and the per-task figure."""
    results = cfg.path("results")
    pages = browser.report_pages(driver, report_html.as_uri(), f"cmgh results: {cfg.name}", "ablation.html", "variants_per_task.png", SHOTS)
    landing = [line for line in layout.landing(results, "md").read_text().splitlines() if line.startswith("| ") and not line.startswith("| task |")]
    assert [row for row in pages["landing"] if row] == [[cell.strip().replace("**", "") for cell in line.strip().strip("|").split(" | ")][1:]
                                                        for line in landing]
    assert "Kinetics top-1 (higher is better)" in pages["home"].splitlines()
    listed = pages["tables"].splitlines()
    for name in ("ablation.html", "summary.html", "noise_over_training.html"):
        assert any(line.endswith(name) for line in listed), name
    assert not any(line.endswith(".md") for line in listed)  # no raw Markdown downloads left
    tables = layout.tables_dir(results)
    assert pages["ablation.html"] == (tables / "ablation.html").read_text(encoding="utf-8")
    rows = [line.split()[1] for line in pages["ablation.html shown"].splitlines() if line.startswith("ms ")]
    assert rows == ["random", "baseline", "gr_gcl"] and "**" not in pages["ablation.html shown"]
    assert pages["figure"].startswith("data:image/png;") and len(pages["figure"]) > 10_000
