"""Which store MLflow accepts and what a first-time user sees: a file store refused before any run
starts, the experiment tagged as model training, and `cmgh browse` linking its runs table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cmgh import cli
from cmgh import config as config_mod
from cmgh.track import open_tracker, tracking_uri
from cmgh.track.ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, WORKFLOW
from cmgh.track.views import VIEW_ID, VIEW_TAG_PREFIX
from tests.helpers import REPO, run_cli

mlflow = pytest.importorskip("mlflow")
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

UI_JS = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"


pytestmark = pytest.mark.usefixtures("no_tracking_env")


def test_file_store_is_refused_before_the_run_starts(tiny_world: config_mod.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MlflowException, match="maintenance mode"):  # the installed MLflow refuses it itself
        MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri()).search_experiments()
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_world.to_dict(), sort_keys=False))
    out = tmp_path / "run"
    pretrain = ["pretrain", "--config", str(cfg_file), "--backbone", "ms", "--variant", "gr", "--seed", "0", "--out", str(out)]
    version = mlflow.__version__
    monkeypatch.chdir(REPO)  # where a user runs it: ./mlruns would be the checkout's

    code, _, err = run_cli(capsys, *pretrain, "--set", "tracking.uri=./mlruns")
    assert code == 2, err
    assert err.splitlines() == [
        f"cmgh: error: tracking.uri: file store './mlruns' is not supported by MLflow {version}; expected sqlite:///path/mlflow.db "
        "(empty = sqlite:///<paths.results>/mlflow.db) or a tracking server http(s)://host:port"
    ]
    assert not out.exists() and not (REPO / "mlruns").exists()

    store = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    code, _, err = run_cli(capsys, *pretrain)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"cmgh: error: MLFLOW_TRACKING_URI: file store '{store}' is not supported by MLflow {version};")
    assert not out.exists() and not (tmp_path / "store").exists()

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's own opt-out is honoured
    assert tracking_uri(config_mod.with_overrides(tiny_world, [f"tracking.uri={store}"])) == store


def test_experiment_opens_on_its_runs(tiny_world: config_mod.Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The names cmgh relies on are the installed UI's: the tag, the kind, the workflow parameter, the runs route.
    bundle = "".join(p.read_text(errors="replace") for p in UI_JS.glob("*.js"))
    for name in (f'"{EXPERIMENT_KIND_TAG}"', f'CUSTOM_MODEL_DEVELOPMENT="{EXPERIMENT_KIND}"', 'Runs="runs"',
                 '"/experiments/:experimentId/:tabName"', 'get("workflowType")', 'MACHINE_LEARNING="machine_learning"',
                 f'"{VIEW_TAG_PREFIX}"', '"viewStateShareKey"', '"Saved views"', '"selectedColumns","columnOrder"', '"searchFilter","orderByKey"'):
        assert name in bundle, name
    assert WORKFLOW == "workflowType=machine_learning"

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    cfg = config_mod.with_overrides(tiny_world, [f"tracking.uri={uri}", f"tracking.artifacts={tmp_path / 'mlruns'}"])
    browse = ["browse", "--set", f"tracking.uri={uri}", "--set", f"paths.results={tmp_path}", "--set", f"name={tiny_world.name}"]
    assert cli.main(browse) == 2  # nothing tracked yet: a one-line error, and no store made by asking
    assert f"no experiment {tiny_world.name!r}" in capsys.readouterr().err and not db.exists()

    with open_tracker(cfg, "eval/a", {}, stage="evaluate", out=tmp_path / "a") as tracker:
        tracker.log_metrics({"t2v_R@1": 0.5})
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(tiny_world.name)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert "group by `tags.variant`" in exp.tags["mlflow.note.content"]  # the experiment's description in the UI
    client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, "genai_development")  # e.g. chosen in the UI, or an old store
    with open_tracker(cfg, "eval/b", {}, stage="evaluate", out=tmp_path / "b"):
        pass
    assert client.get_experiment(exp.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND  # a reused experiment too

    assert cli.main([*browse, "--port", "5123"]) == 0
    printed = capsys.readouterr().out.splitlines()
    labelled = {line[:18].strip(): line[18:] for line in printed if line.startswith("  ")}
    assert labelled["report (HTML)"] == str(tmp_path / "report.html") and labelled["summary"].startswith(str(tmp_path / "tables" / "summary.md"))
    command, link = labelled["start the UI"], labelled["runs table"]
    assert command.split()[1:] == ["ui", "--backend-store-uri", uri, "--default-artifact-root", (tmp_path / "mlruns").as_uri(),
                                   "--host", "127.0.0.1", "--port", "5123"]
    assert Path(command.split()[0]).name == "mlflow"
    assert link == f"http://127.0.0.1:5123/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_ID}"


@pytest.mark.parametrize(("content", "why"), [(b"", "is empty (0 bytes), not a tracking store"),
                                              (b"SQLite format 3\x00" + b"\x07" * 4000, "is a damaged sqlite database"),
                                              (b"<html>not a db</html>", "is not a sqlite database")])
def test_runs_and_browse_read_a_broken_store_in_one_line_and_never_write_it(tiny_config: config_mod.Config, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str], content: bytes, why: str) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(content)
    for command in (["runs", "--tracking-uri", f"sqlite:///{db}"], ["browse", "--set", f"tracking.uri=sqlite:///{db}"]):
        code, _, err = run_cli(capsys, *command, "--set", f"paths.results={tmp_path}")
        lines = [line for line in err.splitlines() if line.strip()]
        assert code != 0 and len(lines) == 1 and f"{db} {why}" in lines[0].replace(f"{db}: ", f"{db} "), err
        assert db.read_bytes() == content  # a read-only listing writes no schema into it
