"""The pre-training loop on the generated data: determinism, resume, NaN guard, learning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmgh import config as config_mod
from cmgh import checkpoint as ckpt
from cmgh.train.cost import MACHINE_METRICS
from cmgh.train.loop import RunSpec, TrainingError, load_metrics_log, pretrain
from cmgh.train.schedule import lr_at
from tests.train.tiny_runs import SMALL, assert_same_state, small, state_of


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_same_seed_gives_identical_checkpoints(tiny_world: config_mod.Config, tmp_path: Path, backbone: str) -> None:
    cfg = small(tiny_world, "pretrain.steps=6")
    a = pretrain(cfg, RunSpec(backbone, "gr_gcl", 3, tmp_path / "a"))
    b = pretrain(cfg, RunSpec(backbone, "gr_gcl", 3, tmp_path / "b"))
    c = pretrain(cfg, RunSpec(backbone, "gr_gcl", 4, tmp_path / "c"))
    assert_same_state(state_of(a), state_of(b))
    assert not torch.equal(state_of(a)["head.video_va.weight"], state_of(c)["head.video_va.weight"])
    assert (tmp_path / "a" / "train_log.jsonl").read_text() .count("\n") == 6


@pytest.mark.parametrize("variant", [
    "{pretrain: {harmonize: {rule: gradvac}, curriculum: {rule: cmgh}}}",
    # the rivals' state: FAMO's logits and Adam moments, the loss mixture's window
    "{pretrain: {balance: {method: famo}, curriculum: {rule: threshold, scorer: mixture, granularity: loss, threshold: 0.5}}}",
], ids=["gradvac", "famo-mixture"])
def test_resume_equals_uninterrupted(tiny_world: config_mod.Config, tmp_path: Path, variant: str) -> None:
    cfg = small(tiny_world, f"variants.gv={variant}")
    full = pretrain(cfg, RunSpec("ms", "gv", 0, tmp_path / "full"))
    # Killed after step 5: only the checkpoint of step 4 survives; the resumed run redoes step 4.
    pretrain(cfg, RunSpec("ms", "gv", 0, tmp_path / "cut"), stop_after=6)
    assert ckpt.load(tmp_path / "cut" / "resume.pt")["step"] == 6
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()  # only a finished run has one (Snakemake output)
    resumed = pretrain(cfg, RunSpec("ms", "gv", 0, tmp_path / "cut"))
    assert_same_state(state_of(full), state_of(resumed))
    full_log = load_metrics_log(tmp_path / "full").drop(columns=list(MACHINE_METRICS))
    cut_log = load_metrics_log(tmp_path / "cut").drop(columns=list(MACHINE_METRICS))
    assert full_log.equals(cut_log)
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["median_step_time_s"] > 0 and summary["peak_memory_mb"] > 100  # torch alone
    assert summary["loss_va_last10_mean"] > 0 and "final_loss_va" not in summary  # named for what it is: a mean of 10 steps


def test_a_state_saved_under_another_config_is_replaced_only_on_restart(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    from cmgh.errors import DataError

    pretrain(small(tiny_world), RunSpec("ms", "baseline", 0, tmp_path / "run"), stop_after=4)
    changed = small(tiny_world, "pretrain.lr=3e-3")
    with pytest.raises(DataError, match="another configuration"):
        pretrain(changed, RunSpec("ms", "baseline", 0, tmp_path / "run"))
    restarted = pretrain(changed, RunSpec("ms", "baseline", 0, tmp_path / "run"), resume=False)
    assert restarted.name == "checkpoint.pt" and not (tmp_path / "run" / "resume.pt").exists()
    fresh = pretrain(changed, RunSpec("ms", "baseline", 0, tmp_path / "fresh"))
    assert_same_state(state_of(restarted), state_of(fresh))
    assert load_metrics_log(tmp_path / "run")["step"].tolist() == list(range(12))
    assert sorted(p.name for p in (tmp_path / "run" / "scores").iterdir()) == sorted(p.name for p in (tmp_path / "fresh" / "scores").iterdir())


def test_training_lowers_both_losses(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = small(tiny_world, "pretrain.steps=40", "pretrain.lr=2e-3")
    pretrain(cfg, RunSpec("ms", "baseline", 0, tmp_path / "run"))
    log = load_metrics_log(tmp_path / "run")
    first, last = log.head(5).mean(numeric_only=True), log.tail(5).mean(numeric_only=True)
    assert last["loss_va"] < first["loss_va"] - 0.1
    assert last["loss_vt"] < first["loss_vt"] - 0.1
    for column in ("cos_mean", "cos_q50", "conflict_fraction", "kept_fraction", "lr"):
        assert column in log.columns
    scores = sorted((tmp_path / "run" / "scores").glob("step_*.csv"))
    assert [p.name for p in scores][:2] == ["step_000000.csv", "step_000005.csv"]


def test_curriculum_drops_samples_after_warmup(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = small(tiny_world, "pretrain.curriculum.end_keep=0.5", "pretrain.curriculum.schedule=constant", "pretrain.curriculum.start_keep=0.5")
    pretrain(cfg, RunSpec("ms", "gcl", 0, tmp_path / "run"))
    log = load_metrics_log(tmp_path / "run")
    assert (log.loc[log.step < 3, "kept_fraction"] == 1.0).all()
    assert np.allclose(log.loc[log.step >= 3, "kept_fraction"], 0.5)


def test_nonfinite_losses_stop_with_a_clear_error(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    shutil.copytree(tiny_world.path("features"), tmp_path / "features")
    for audio in (tmp_path / "features" / "howto100m" / "shards").glob("*.audio.npy"):
        array = np.load(audio)
        array[:] = np.nan
        np.save(audio, array)
    cfg = small(tiny_world, f"paths.features={tmp_path / 'features'}", "pretrain.max_nonfinite_steps=3")
    with pytest.raises(TrainingError, match=r"3 non-finite losses in a row at step 2"):
        pretrain(cfg, RunSpec("ms", "baseline", 0, tmp_path / "run"))
    assert ckpt.load(tmp_path / "run" / "resume.pt")["nonfinite_total"] == 3


def test_corrupt_checkpoint_is_reported(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    from cmgh.errors import DataError

    with pytest.raises(DataError, match="checkpoint.pt: not a readable cmgh checkpoint"):
        ckpt.load(tmp_path)


def test_vatt_learning_rate_schedule() -> None:
    assert lr_at(0, 1e-4, 5e-5, 10, 110) == pytest.approx(1e-5)
    assert lr_at(9, 1e-4, 5e-5, 10, 110) == pytest.approx(1e-4)
    assert lr_at(10, 1e-4, 5e-5, 10, 110) == pytest.approx(1e-4)
    assert lr_at(60, 1e-4, 5e-5, 10, 110) == pytest.approx(5e-5 + 5e-5 * np.cos(np.pi / 4))
    assert lr_at(110, 1e-4, 5e-5, 10, 110) == pytest.approx(5e-5)


def test_pretrain_never_overwrites_a_finished_run_of_another_config(tiny_world: config_mod.Config, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from cmgh import cli, layout

    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_world.to_dict(), sort_keys=False))
    out = tmp_path / "run"
    sets = [a for s in [*SMALL, "pretrain.steps=4", "tracking.enabled=false"] for a in ("--set", s)]
    args = ["pretrain", "--config", str(cfg_file), "--backbone", "ms", "--variant", "baseline", "--out", str(out), *sets]
    assert cli.main(args) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    assert cli.main([*args, "--set", "pretrain.lr=3e-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cmgh: error: "), err
    assert str(out / layout.CHECKPOINT) in err and "finished run" in err and "pretrain.pretrain.lr" not in err
    assert "pretrain.lr" in err and "--restart" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files  # checkpoint, log, summary, config.yaml untouched

    assert cli.main([*args, "--variant", "gr"]) == 2  # another variant's run in this folder: what differs is the run itself
    assert "variant" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files

    assert cli.main([*args, "--set", "pretrain.lr=3e-3", "--restart"]) == 0  # --restart replaces it
    assert ckpt.load(out / layout.CHECKPOINT)["step"] == 4 and (out / layout.CHECKPOINT).read_bytes() != files[out / layout.CHECKPOINT]
    assert cli.main([*args, "--set", "pretrain.lr=3e-3"]) == 0  # and that run is now the folder's: a re-run resumes it (nothing to do)


def test_pretrain_never_overwrites_a_run_in_progress_of_another_config(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    from cmgh.errors import DataError

    pretrain(small(tiny_world), RunSpec("ms", "baseline", 0, tmp_path / "run"), stop_after=4)
    saved = (tmp_path / "run" / "resume.pt").read_bytes()
    with pytest.raises(DataError, match=r"resume\.pt: a run in progress of another configuration .*pretrain\.lr: 0\.001 -> 0\.003.*--restart"):
        pretrain(small(tiny_world, "pretrain.lr=3e-3"), RunSpec("ms", "baseline", 0, tmp_path / "run"))
    assert (tmp_path / "run" / "resume.pt").read_bytes() == saved


def test_stop_after_below_the_resumed_step_is_an_error_not_a_false_ok(tiny_world: config_mod.Config, tmp_path: Path) -> None:
    cfg = small(tiny_world)
    pretrain(cfg, RunSpec("ms", "baseline", 0, tmp_path / "run"), stop_after=4)
    with pytest.raises(TrainingError, match=r"the run is already at step 4, past --stop-after 2; nothing trained \(resume without"):
        pretrain(cfg, RunSpec("ms", "baseline", 0, tmp_path / "run"), stop_after=2)
    assert pretrain(cfg, RunSpec("ms", "baseline", 0, tmp_path / "run"), stop_after=4) == tmp_path / "run" / "resume.pt"  # at the step: ok


def test_the_log_says_how_far_a_run_is(tiny_world: config_mod.Config, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="cmgh.train.loop"):
        pretrain(small(tiny_world, "pretrain.steps=6", "pretrain.log_every=4"), RunSpec("ms", "gr", 0, tmp_path / "run"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pretrain ms/gr/seed0: step")]
    assert [line.split(",")[0] for line in lines] == ["pretrain ms/gr/seed0: step 4/6 (67 %)", "pretrain ms/gr/seed0: step 6/6 (100 %)"]
    assert "loss " in lines[-1] and "samples/s" in lines[-1] and lines[-1].endswith("0m00s left")
