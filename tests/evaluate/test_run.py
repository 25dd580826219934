"""The four evaluation tasks end to end on a tiny checkpoint, against its random initialization."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmgh import config as config_mod
from cmgh.evaluate import TASKS
from cmgh.evaluate.encoder import Encoder
from cmgh.evaluate import NOISE_INDICATORS
from cmgh.evaluate import TARGETS as NOISE_TARGETS
from cmgh.evaluate.run import TASK_REGISTRY, evaluate
from cmgh.errors import ConfigError
from cmgh.train.loop import RunSpec, pretrain
from tests.helpers import cmgh_process, run_cli

SMALL = ["pretrain.batch_size=8", "pretrain.steps=10", "pretrain.warmup_steps=2", "pretrain.score_every=5",
         "model.width=32", "model.heads=2", "model.depth=1",
         "evaluate.batch_size=8", "evaluate.probe_max_iter=50", "evaluate.noise.batch_size=8",
         "evaluate.kinetics.weight_decays=[0.01, 1.0]", "evaluate.audioset.weight_decays=[0.01, 1.0]",
         "evaluate.kinetics.finetune_epochs=1", "evaluate.kinetics.finetune_batch_size=4"]

KEYS = {
    "kinetics": ["top1", "top5", "val_top1"],
    "audioset": ["mAP", "mAUC", "d_prime", "val_mAP"],
    "msrvtt": [f"{d}_{m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MedR", "MnR")]
    + [f"t2v_concept_{m}" for m in ("mAP", "R@1", "R@5", "R@10")],
    "noise": [f"{kind}/{ind}/{t}" for kind in ("auroc", "ap") for ind in NOISE_INDICATORS for t in NOISE_TARGETS]
    + [f"noise_rate_{t}" for t in NOISE_TARGETS],
}


@pytest.fixture(scope="module")
def cfg(tiny_world: config_mod.Config) -> config_mod.Config:
    return config_mod.with_overrides(tiny_world, SMALL)


@pytest.fixture(scope="module")
def run(cfg: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evalrun") / "run"
    pretrain(cfg, RunSpec("ms", "baseline", 0, out))
    return out


@pytest.fixture(scope="module")
def results(cfg: config_mod.Config, run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], tuple[Path, dict]]:
    """Every task for the trained checkpoint and its random init, evaluated once for the module."""
    base = tmp_path_factory.mktemp("evalout")
    done = {}
    for task in KEYS:
        for random_init in (False, True):
            out = base / task / ("random" if random_init else "trained")
            done[(task, random_init)] = (out, evaluate(cfg, task, run, out, random_init=random_init))
    return done


@pytest.mark.parametrize("task", list(KEYS))
def test_task_writes_documented_keys_for_trained_and_random(task: str, results: dict) -> None:
    for random_init in (False, True):
        out, payload = results[(task, random_init)]
        on_disk = json.loads((out / "metrics.json").read_text())
        assert on_disk == json.loads(json.dumps(payload))
        for key in KEYS[task]:
            assert key in on_disk, key
            value = on_disk[key]
            # noise AP/AUROC are undefined (null) only when the tiny corpus has no noisy clip of a kind
            assert value is None and task == "noise" or math.isfinite(value), (key, value)
        assert on_disk["meta"]["task"] == task
        assert on_disk["meta"]["variant"] == ("random" if random_init else "baseline")
        assert on_disk["meta"]["random_init"] is random_init
        assert (out / "config.yaml").is_file()
        assert config_mod.load(out / "config.yaml").model.width == 32
    trained, random = results[(task, False)][1], results[(task, True)][1]
    assert trained["meta"]["checkpoint_sha256"] != random["meta"]["checkpoint_sha256"]


def test_value_ranges_and_side_outputs(results: dict) -> None:
    k = results[("kinetics", False)]
    assert 0 <= k[1]["top1"] <= k[1]["top5"] <= 100
    assert k[1]["params"]["weight_decay"] in (0.01, 1.0)
    preds = pd.read_csv(k[0] / "predictions.csv")
    assert len(preds) == k[1]["params"]["n_test"] and set(preds.columns) >= {"item_id", "label_index", "pred", "correct"}
    assert np.isclose(preds["correct"].mean() * 100, k[1]["top1"])
    a = results[("audioset", False)][1]
    assert 0 <= a["mAP"] <= 1 and 0 <= a["mAUC"] <= 1
    m = results[("msrvtt", False)][1]
    assert 1 <= m["t2v_MedR"] <= m["params"]["n_videos"] and m["params"]["n_queries"] == 4
    for k in ("R@1", "R@5", "R@10"):  # the query's own video is relevant at concept level too
        assert m[f"t2v_R{k[1:]}"] <= m[f"t2v_concept_{k}"] <= 100
    out, n = results[("noise", False)]
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == n["params"]["n_triplets"] == 24
    assert scores["cos_parameters"].between(-1, 1).all() and scores["cos_representation"].between(-1, 1).all()
    whole = scores["cos_all_parameters"]
    assert whole.between(-1, 1).all() and not whole.equals(scores["cos_parameters"])  # the whole pathway, not its last block
    roc = pd.read_csv(out / "roc.csv")
    assert set(roc["indicator"]) == set(NOISE_INDICATORS) and set(roc["target"]) == set(NOISE_TARGETS)
    assert np.isclose(n["noise_rate_either"], scores["either"].mean())


def test_rerun_hits_the_feature_cache_and_is_deterministic(cfg: config_mod.Config, run: Path, results: dict) -> None:
    out, first = results[("kinetics", False)]
    assert first["params"]["feature_cache_hit"] is False
    again = evaluate(cfg, "kinetics", run, out)
    assert again["params"]["feature_cache_hit"] is True
    assert "forward_s" not in again["timing"]
    for key in KEYS["kinetics"]:
        assert again[key] == first[key]
    # a fresh folder (no cache) computes the same numbers
    noise_out = results[("noise", False)][0]
    fresh = evaluate(cfg, "noise", run, noise_out.parent / "fresh")
    assert fresh["auroc/cos_parameters/either"] == results[("noise", False)][1]["auroc/cos_parameters/either"]


def test_finetune_protocol(cfg: config_mod.Config, run: Path, tmp_path: Path) -> None:
    ft = config_mod.with_overrides(cfg, ["evaluate.kinetics.protocol=finetune"])
    payload = evaluate(ft, "kinetics", run, tmp_path / "ft")
    assert payload["params"]["protocol"] == "finetune"
    assert all(math.isfinite(payload[k]) for k in KEYS["kinetics"])


def test_default_out_dir_encodes_the_variant(cfg: config_mod.Config, run: Path) -> None:
    results = cfg.path("results")
    assert Encoder(cfg, run).default_out(cfg, "msrvtt") == results / "eval" / "msrvtt" / "ms" / "baseline" / "seed0"
    assert Encoder(cfg, run, random_init=True).default_out(cfg, "noise") == results / "eval" / "noise" / "ms" / "random" / "seed0"


def test_registry_holds_exactly_the_import_free_task_names() -> None:
    assert TASK_REGISTRY.names() == sorted(TASKS) == sorted(KEYS)


def test_unknown_task_is_a_config_error(cfg: config_mod.Config, run: Path) -> None:
    with pytest.raises(ConfigError, match="--task: 'nope' is not one of audioset, kinetics, msrvtt, noise"):
        evaluate(cfg, "nope", run)


@pytest.mark.slow  # a real process: its exit codes and what it prints
def test_cli_evaluate_subprocess(run: Path, tmp_path: Path) -> None:
    # The run's config.yaml holds the tiny world's paths: use it as the CLI's config.
    out = tmp_path / "cli"
    proc = cmgh_process("evaluate", "--config", str(run / "config.yaml"), "--task", "msrvtt", "--checkpoint", str(run),
                        "--out", str(out), "--random-init", "--threads", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "msrvtt ms/random/seed0" in proc.stdout and "t2v_R@1=" in proc.stdout
    assert json.loads((out / "metrics.json").read_text())["meta"]["random_init"] is True
    bad = cmgh_process("evaluate", "--config", str(run / "config.yaml"), "--task", "kinetics", "--checkpoint", str(tmp_path / "nowhere"),
                       timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "checkpoint not found" in bad.stderr


def test_cli_evaluates_several_tasks_in_one_process_each_to_its_own_folder(run: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from cmgh import layout

    results = tmp_path / "results"
    base = ["evaluate", "--config", str(run / "config.yaml"), "--set", f"paths.results={results}",
            "--set", "tracking.enabled=false", "--checkpoint", str(run), "--random-init", "--threads", "1"]
    code, out, err = run_cli(capsys, *base, "--task", "msrvtt", "--task", "kinetics")
    assert code == 0, err
    assert [line.split(" ", 1)[0] for line in out.splitlines() if "ms/random/seed0:" in line] == ["msrvtt", "kinetics"]
    for task in ("msrvtt", "kinetics"):
        assert json.loads(layout.eval_metrics(results, task, "ms", "random", 0).read_text())["meta"]["task"] == task
    code, _, err = run_cli(capsys, *base, "--task", "msrvtt", "--task", "kinetics", "--out", str(tmp_path / "one"))
    assert code == 2 and err.strip().count("\n") == 0 and "--out with 2 tasks" in err


def test_audioset_evaluation_says_how_many_segments_it_left_out(
    cfg: config_mod.Config, run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A segment without a known label and a clip without an audio stream (a real mp4 with video only,
    as real downloads hold) are left out of tagging, counted and named."""
    from cmgh import layout
    from cmgh.cli import main
    from cmgh.data.datasets import audioset
    from cmgh.data.io import encode, media
    from cmgh.data.extract import shards

    root = tmp_path / "data" / "audioset"
    shutil.copytree(layout.dataset_dir(cfg.path("data"), "audioset"), root)
    segments = root / layout.AUDIOSET_SEGMENT_FILES["train"]
    table = audioset.read_audioset_segments(segments)
    table.at[0, "positive_labels"] = ["/m/not_a_class"]
    audioset.write_audioset_segments(segments, table)
    eval_table = audioset.read_audioset_segments(root / layout.AUDIOSET_SEGMENT_FILES["eval"])
    silent = audioset.audioset_clip_path(root, eval_table.iloc[0])
    encode.write_mp4(silent, media.decode_video(silent, 0.0, 16, 8.0), 8)
    assert not media.has_audio_stream(silent) and media.duration(silent) > 0
    sets = [f"paths.data={tmp_path / 'data'}", f"paths.features={tmp_path / 'features'}", f"paths.results={tmp_path / 'results'}",
            "tracking.enabled=false"]
    (tmp_path / "features").mkdir()
    shutil.copy(layout.vocab(cfg.path("features")), tmp_path / "features" / layout.VOCAB)
    options = [arg for o in sets for arg in ("--set", o)]
    with caplog.at_level(logging.INFO, logger="cmgh.data.extract.shards"):
        assert main(["data", "extract", "--dataset", "audioset", "--config", str(run / "config.yaml"), *options]) == 0
    assert f"'{shards.NO_AUDIO}': 1" in caplog.text  # the extraction's summary line counts it
    features = tmp_path / "features" / "audioset"
    index = pd.read_parquet(features / layout.FEATURE_INDEX).set_index("source")
    assert not index.loc[os.path.relpath(silent, root), "has_audio"] and index["has_audio"].sum() == len(index) - 1
    manifest = pd.read_csv(features / layout.FEATURE_MANIFEST).set_index("source")
    assert manifest.loc[os.path.relpath(silent, root), "status"] == shards.NO_AUDIO == "ok: no audio stream"
    out = tmp_path / "eval"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", "--config", str(run / "config.yaml"), "--task", "audioset", "--checkpoint", str(run), "--out", str(out),
                     "--random-init", *options]) == 0
    named = "1 ok: no audio stream, 1 skipped: no known label"
    assert f"(2 left out: {named}; see the feature manifest)" in capsys.readouterr().out.splitlines()[-1]
    params = json.loads((out / "metrics.json").read_text())["params"]
    assert params["left_out"] == 2 and params["left_out_statuses"] == {"skipped: no known label": 1, shards.NO_AUDIO: 1}
    assert params["n_fit"] + params["n_val"] == len(table) - 1 and params["n_eval"] == len(eval_table) - 1
    assert f"segments left out of the evaluation: 2 ({named}; see" in caplog.text
