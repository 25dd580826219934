"""Screenshots of the three UIs of a finished run for the README (docs/figures/*.png), taken the way
tests/e2e/test_browser.py opens them: the MLflow UI's runs table and a pre-training run, optuna-dashboard's
study and trials, the HTML report's front page (the headline table) and its per-task figure.

Usage, after `make reproduce` (needs chromium + chromium-driver, and selenium from the dev extra):
    .venv/bin/python workflow/scripts/screenshots.py [--config FILE ...] [--report results/report.html] [--out docs/figures]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cmgh import config as config_mod  # noqa: E402
from cmgh import layout  # noqa: E402
from tests.e2e import browser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None, metavar="FILE", help="the run's config files (default cmgh/defaults/config.yaml)")
    parser.add_argument("--report", type=Path, default=None, help="the HTML report (default: report.html in the results folder)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    reason = browser.missing_browser()
    if reason:
        parser.error(reason)

    import mlflow
    import optuna

    from cmgh import sweep

    cfg = config_mod.load(args.config)
    results = cfg.path("results")
    report = args.report or results / "report.html"
    client = mlflow.MlflowClient(f"sqlite:///{results / layout.MLFLOW_DB}")
    experiment = client.get_experiment_by_name(str(cfg.name))
    if experiment is None:
        parser.error(f"{results / layout.MLFLOW_DB}: no experiment {cfg.name!r}: run the DAG first (make reproduce)")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'pretrain'", order_by=["attributes.run_name"], max_results=1)
    if not runs or not report.is_file():
        parser.error(f"no finished pre-training run in {results / layout.MLFLOW_DB} or no {report}: run `make reproduce` first")
    logs = Path(tempfile.mkdtemp(prefix="cmgh-screenshots-"))  # the servers' logs, named in any error
    servers: list[browser.Server] = []
    try:
        port = browser.free_port()
        command, runs_link = browser.mlflow_ui(cfg, port)
        mlflow_ui = browser.start(command, port, logs / "mlflow.log")
        servers.append(mlflow_ui)
        port = browser.free_port()
        dashboard = browser.start(browser.dashboard_command(sweep.dashboard_command(cfg), port), port, logs / "optuna.log")
        servers.append(dashboard)
        trials = len(optuna.load_study(study_name=sweep.study_name(cfg), storage=sweep.storage_url(cfg)).get_trials(deepcopy=False))
        with browser.chromium() as driver:
            browser.report_pages(driver, report.resolve().as_uri(), f"cmgh results: {cfg.name}", "ablation.html", "variants_per_task.png", args.out)
            browser.mlflow_pages(driver, mlflow_ui.wait(), runs_link, str(cfg.name), runs[0].info.run_name, "loss_va", args.out)
            browser.dashboard_pages(driver, dashboard.wait(), sweep.study_name(cfg), trials, args.out)
    finally:
        for server in servers:
            server.stop()
    for png in (args.out / name for name in browser.SCREENSHOTS):
        print(f"{png} ({png.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
