"""Data parallelism under torchrun on CPU (gloo): 2 processes equal 1 process on the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmgh import config as config_mod
from cmgh import checkpoint as ckpt
from cmgh.models import build_model
from cmgh.train.loop import RunSpec, load_metrics_log, pretrain, seed_everything
from tests.helpers import REPO

SETTINGS = ["pretrain.batch_size=8", "pretrain.steps=4", "pretrain.warmup_steps=1", "model.width=32", "model.heads=2",
            "model.depth=1", "tracking.enabled=false", "pretrain.grad_clip=0"]


# the rivals composed, two runs for all: a batch-level rule over every shared parameter (the Gram of the global batch's
# averaged gradients), FAMO's weights from the global batch's losses, the loss mixture fitted to the global batch's
# window, its dropped rows spread unevenly over the ranks (each rank's objective scaled by its share of the weight:
# cmgh.harmonize.harmonizer.rank_shares); and alternating objectives (every rank takes the same objective). Co-teaching
# and the cmgh curriculum keep a fraction of each rank's rows (a per-rank quota), so they select differently.
RIVALS = ["pretrain.harmonize.rule=cagrad", "pretrain.harmonize.granularity=batch", "pretrain.balance.method=famo",
          "pretrain.curriculum.rule=threshold", "pretrain.curriculum.scorer=mixture", "pretrain.curriculum.granularity=loss",
          "pretrain.curriculum.threshold=0.5", "pretrain.curriculum.warmup_steps=0", "pretrain.curriculum.mixture.window_steps=2"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "meeting_point", "extra"),
    [("baseline", "representation", []), ("gr", "representation", []), ("gr", "all_parameters", []),
     ("baseline", "all_parameters", RIVALS), ("baseline", "representation", ["pretrain.balance.method=alternate"])],
    ids=["baseline", "gr", "gr-all_parameters", "rivals-all_parameters", "alternate"],
)
def test_two_gloo_ranks_match_one_process(tiny_world: config_mod.Config, tmp_path: Path, variant: str, meeting_point: str,
                                          extra: list[str]) -> None:
    """At ``all_parameters`` each rank assembles its rows' combined gradients (global negatives), then they are averaged."""
    cfg = config_mod.with_overrides(tiny_world, [*SETTINGS, f"pretrain.harmonize.meeting_point={meeting_point}", *extra])
    config_file = cfg.write(tmp_path, "tiny.yaml")
    pretrain(cfg, RunSpec("ms", variant, 0, tmp_path / "single"))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "cmgh", "pretrain", "--config", str(config_file), "--backbone", "ms", "--variant", variant,
        "--seed", "0", "--out", str(tmp_path / "ddp"), "--threads", "1",
    ]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_matches_one_process(cfg, tmp_path / "single", tmp_path / "ddp", steps=4)


def assert_matches_one_process(cfg: config_mod.Config, single: Path, ranks: Path, steps: int) -> None:
    """The ``ms`` seed-0 run in ``ranks`` (several processes) trained what the one in ``single`` did (one process)."""
    a, b = ckpt.load(single / "checkpoint.pt")["model"], ckpt.load(ranks / "checkpoint.pt")["model"]
    seed_everything(0)
    init = build_model(cfg, "ms", vocab_size=ckpt.load(single / "checkpoint.pt")["meta"]["vocab_size"]).state_dict()
    # Gradients agree to ~1e-5 relative; Adam turns float noise on zero-gradient entries (e.g. key
    # biases, which softmax ignores) into full-size steps, so compare each tensor's update.
    for key in a:
        update = (a[key] - init[key]).abs().sum()
        assert update > 0, f"{key} did not train"
        assert (a[key] - b[key]).abs().sum() <= 0.05 * update, key
    # The logged global-batch losses agree too: every rank saw the global batch's negatives.
    one, two = load_metrics_log(single), load_metrics_log(ranks)
    assert len(two) == steps
    torch.testing.assert_close(torch.tensor(one["loss_va"].to_numpy()), torch.tensor(two["loss_va"].to_numpy()), rtol=1e-4, atol=1e-5)
