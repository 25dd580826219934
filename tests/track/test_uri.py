"""A password in a store URI never reaches a written file or a printed line, and a masked URI read
back is never used as a real one; an evaluation refuses overrides the checkpoint's config decides.

Real `cmgh` processes on the tiny world: a pre-training run tracked to an MLflow server on a
127.0.0.1 port where nothing listens (the tracker warns), then evaluations of it.
"""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from cmgh import config as config_mod
from cmgh import layout
from tests.helpers import cmgh_process, free_port, mlflow_store, untracked_env

SECRET = "s3cr3t-Pw"
SMALL = {"pretrain": {"batch_size": 8, "steps": 2, "warmup_steps": 1, "score_every": 1, "checkpoint_every": 1},
         "model": {"width": 32, "heads": 2, "depth": 1}, "evaluate": {"batch_size": 8}}


def cmgh(*args: str) -> subprocess.CompletedProcess[str]:
    return cmgh_process(*args, env=untracked_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2"))


def files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def tracked_run(tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A user's config naming a password-protected (dead) tracking server and sweep storage, and the
    pre-training run `cmgh pretrain` made with it."""
    base = tmp_path_factory.mktemp("secrets")
    port = free_port()  # nothing listens there
    user_cfg = {**tiny_world.to_dict(), **{k: {**tiny_world.to_dict()[k], **v} for k, v in SMALL.items()}}
    user_cfg["paths"] = {**user_cfg["paths"], "results": str(base / "results")}
    user_cfg["tracking"] = {**user_cfg["tracking"], "enabled": True, "uri": f"http://user:{SECRET}@127.0.0.1:{port}"}
    user_cfg["sweep"] = {**user_cfg["sweep"], "storage": f"postgresql://user:{SECRET}@127.0.0.1:{free_port()}/optuna"}
    (base / "input").mkdir()
    config_file = base / "input" / "mine.yaml"
    config_file.write_text(yaml.safe_dump(user_cfg, sort_keys=False))
    out = base / "results" / "run"
    proc = cmgh("pretrain", "--config", str(config_file), "--backbone", "ms", "--variant", "baseline", "--out", str(out), "--threads", "1")
    return {"base": base, "config": config_file, "out": out, "port": port, "proc": proc}


@pytest.mark.slow
def test_tracking_password_is_masked_in_every_written_file_and_message(tracked_run: dict[str, Any]) -> None:
    proc, out, port = tracked_run["proc"], tracked_run["out"], tracked_run["port"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"MLflow tracking (http://user:***@127.0.0.1:{port}) failed to open the run" in proc.stderr  # it warned
    assert SECRET not in proc.stderr and SECRET not in proc.stdout
    assert (out / layout.CHECKPOINT).is_file()
    assert files_holding(tracked_run["base"] / "results", SECRET) == []
    written = yaml.safe_load((out / layout.CONFIG).read_text())
    assert written["tracking"]["uri"] == f"http://user:***@127.0.0.1:{port}"
    assert written["sweep"]["storage"].startswith("postgresql://user:***@127.0.0.1:")


@pytest.mark.slow
def test_masked_uri_read_back_is_never_used(tracked_run: dict[str, Any]) -> None:
    written, port = tracked_run["out"] / layout.CONFIG, tracked_run["port"]
    again = tracked_run["base"] / "results" / "again"
    proc = cmgh("pretrain", "--config", str(written), "--backbone", "ms", "--variant", "baseline", "--out", str(again))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == (
        f"cmgh: error: tracking.uri: 'http://user:***@127.0.0.1:{port}' has a masked password (a config.yaml written "
        "beside results); expected the real URI (--set tracking.uri=... or MLFLOW_TRACKING_URI)"
    )
    assert not again.exists()
    sweep = cmgh("sweep", "--config", str(written), "--set", "tracking.enabled=false", "--n-trials", "1")
    assert sweep.returncode == 2 and "Traceback" not in sweep.stderr, sweep.stderr[-3000:]
    assert sweep.stderr.strip().startswith("cmgh: error: sweep.storage: 'postgresql://user:***@127.0.0.1:")


@pytest.mark.slow
def test_evaluation_tracks_with_its_own_config_not_the_checkpoints(tracked_run: dict[str, Any]) -> None:
    """The evaluation reads the run's config.yaml (masked URI) for its model; tracking is the command's own."""
    port = tracked_run["port"]
    eval_out = tracked_run["base"] / "results" / "eval"
    proc = cmgh("evaluate", "--config", str(tracked_run["config"]), "--task", "msrvtt", "--checkpoint", str(tracked_run["out"]),
                "--out", str(eval_out), "--random-init", "--threads", "1", "--set", "evaluate.batch_size=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"MLflow tracking (http://user:***@127.0.0.1:{port})" in proc.stderr and SECRET not in proc.stderr + proc.stdout
    assert files_holding(tracked_run["base"] / "results", SECRET) == []


@pytest.mark.slow
@pytest.mark.parametrize("override", ["model.width=16", "pretrain.temperature=0.1", "model={}", "variants.baseline.model.depth=2"])
def test_evaluate_refuses_overrides_the_checkpoint_decides(tracked_run: dict[str, Any], override: str) -> None:
    out = tracked_run["out"]
    for checkpoint in (out, out / layout.CHECKPOINT):
        proc = cmgh("evaluate", "--config", str(tracked_run["config"]), "--task", "msrvtt", "--checkpoint", str(checkpoint),
                    "--out", str(tracked_run["base"] / "refused"), "--set", override)
        assert proc.returncode == 2, proc.stderr[-3000:]
        key = override.split("=")[0]
        assert proc.stderr.strip() == (
            f"cmgh: error: --set {override}: {key} cannot change an evaluation: the checkpoint's config "
            f"({out / layout.CONFIG}) decides it (expected no override of model.*, pretrain.*, variants.*)"
        )
    assert not (tracked_run["base"] / "refused").exists()


def test_tracked_params_and_config_artifact_are_masked(tiny_world: config_mod.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the config's store, not the environment's
    from mlflow.tracking import MlflowClient

    from cmgh.track import open_tracker

    store = tmp_path / "store"
    uri = mlflow_store(store / "mlflow.db")
    cfg = config_mod.with_overrides(tiny_world, [f"tracking.uri={uri}", f"tracking.artifacts={store / 'mlruns'}",
                                                 f"sweep.storage=postgresql://user:{SECRET}@db.example/optuna"])
    with open_tracker(cfg, "pretrain/ms/baseline/seed0", {}, stage="pretrain", out=tmp_path / "run") as tracker:
        tracker.log_metrics({"loss": 1.0}, step=0)
    run = MlflowClient(tracking_uri=uri).get_run(tracker.run_id)
    assert run.data.params["sweep.storage"] == "postgresql://user:***@db.example/optuna"
    assert run.data.params["tracking.uri"] == uri  # nothing to mask: the real URI
    assert list(store.rglob("config.yaml")) and files_holding(store, SECRET) == []


@pytest.fixture
def auth_server() -> Iterator[tuple[int, list[str | None]]]:
    """An HTTP server on 127.0.0.1 answering /health, recording each request's Authorization header."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_tracking_server_with_credentials_is_reachable(auth_server: tuple[int, list[str | None]]) -> None:
    pytest.importorskip("mlflow")
    from cmgh.track.store import server_reachable

    port, seen = auth_server
    assert server_reachable(f"http://user:{SECRET}@127.0.0.1:{port}")  # urllib alone refuses userinfo in a URL
    assert seen == ["Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()]
    assert server_reachable(f"http://127.0.0.1:{port}/") and seen[-1] is None
    assert not server_reachable(f"http://user:{SECRET}@127.0.0.1:{free_port()}")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://user:{SECRET}@host:5432/db", "postgresql://user:***@host:5432/db"),
        (f"mysql+pymysql://user:{SECRET}@host/db?charset=utf8", "mysql+pymysql://user:***@host/db?charset=utf8"),
        (f"http://user:p@{SECRET}@host:5000", "http://user:***@host:5000"),  # an unescaped '@' in the password
        (f"https://host/api?token={SECRET}&x=1", "https://host/api?token=***&x=1"),
        (f"failed at http://a:{SECRET}@h1/x, then http://b:{SECRET}@h2", "failed at http://a:***@h1/x, then http://b:***@h2"),
        ("postgresql://user@host:5432/db", "postgresql://user@host:5432/db"),
        ("sqlite:///results/mlflow.db", "sqlite:///results/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_one_masking_of_urls(url: str, shown: str) -> None:
    from cmgh.io import is_masked, redacted
    from cmgh.track.uri import redacted as track_redacted

    assert track_redacted is redacted  # one masking function, shared by tracking and the sweep
    assert redacted(url) == shown and redacted(shown) == shown
    assert is_masked(shown) == (shown != url) and not is_masked(url)
