"""Plain helpers shared by the tests (fixtures live in conftest.py): the repository root, the tiny
config, a free port, an environment without a tracking store, a new MLflow store, `cmgh` in-process
and as a real process, a random VATT batch."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # neither is needed to import this module (workflow/scripts/screenshots.py imports it too)
    import pytest
    import torch

REPO = Path(__file__).resolve().parents[1]
# Variables that point a run at a tracking store or say which rule runs it: tests start without them.
TRACKING_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
                "MLFLOW_SYSTEM_METRICS_NODE_ID", "CMGH_RULE", "SNAKEMAKE_RULE")


def tiny_overrides(root: Path) -> list[str]:
    """Overrides that shrink the default config to test size and put every path under ``root``."""
    return [
        f"paths.data={root / 'data'}",
        f"paths.features={root / 'features'}",
        f"paths.results={root / 'results'}",
        "data.synth.concepts=4",
        "data.synth.howto100m.videos=12",
        "data.synth.kinetics.classes=4",
        "data.synth.kinetics.train_per_class=2",
        "data.synth.kinetics.val_per_class=1",
        "data.synth.kinetics.test_per_class=1",
        "data.synth.audioset.train=6",
        "data.synth.audioset.eval=4",
        "data.synth.msrvtt.train=4",
        "data.synth.msrvtt.val=2",
        "data.synth.msrvtt.test=4",
        "data.synth.msrvtt.captions_per_video=3",
        "data.synth.youtube8m.videos=8",
        "features.shard_size=8",
        "features.workers=0",
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def untracked_env(**extra: str) -> dict[str, str]:
    """This process's environment without :data:`TRACKING_ENV`, importing this checkout's cmgh, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in TRACKING_ENV}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def mlflow_store(db: Path) -> str:
    """The URI of the MLflow sqlite store at ``db``, made empty if there is none: a copy of one made once
    per test process, because MLflow takes seconds to create a store's tables (the copy is the file it
    would have made)."""
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_empty_mlflow_db(), db)
    return f"sqlite:///{db}"


@functools.cache
def _empty_mlflow_db() -> Path:
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="cmgh-tests-mlflow-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    db = folder / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # creates the tables
    return db


def cmgh_process(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m cmgh ARGS` as a real process from the repository root (for exit codes, signals and
    what only a fresh interpreter shows); ``env`` replaces the inherited environment when given."""
    return subprocess.run([sys.executable, "-m", "cmgh", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``cmgh argv`` in-process: (exit code, stdout, stderr); argparse's exits count as exit codes.
    torch's thread count is put back afterwards (``--threads`` sets it for the whole process)."""
    import torch

    from cmgh import cli

    threads = torch.get_num_threads()
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return code, out, err


def make_batch(b: int = 3, k: int = 4, l: int = 16, seed: int = 0, *, vocab: int = 100, words: int = 6,
               ragged: bool = False) -> dict[str, torch.Tensor]:
    """A random VATT batch: ``b`` clips of 8 RGB frames at 32x32 with one second of audio, ``k`` captions
    of ``l`` tokens of which the first ``words`` are real; ``ragged`` drops about a third of the
    captions (never the first) and leaves clips 1 and 4 without any."""
    import torch

    g = torch.Generator().manual_seed(seed)
    text = torch.randint(2, vocab, (b, k, l), generator=g)
    text[:, :, words:] = 0
    text_mask = torch.ones(b, k, dtype=torch.bool)
    has_text = torch.ones(b, dtype=torch.bool)
    if ragged:
        text_mask = torch.rand(b, k, generator=g) > 0.3
        text_mask[:, 0] = True
        has_text[1] = has_text[4] = False
    return {
        "video": torch.randint(0, 256, (b, 8, 32, 32, 3), dtype=torch.uint8, generator=g),
        "audio": torch.rand(b, 16000, generator=g) * 2 - 1,
        "text": text,
        "text_mask": text_mask,
        "has_text": has_text,
    }
