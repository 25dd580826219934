"""The oracle positive control end to end on the tiny world: the stream carries the generator's
ground truth only when the curriculum's scorer needs it, the oracle at full strength drops exactly
the misaligned triplets' terms, and a run without ground truth is refused before it starts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cmgh import checkpoint as ckpt
from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config
from cmgh.data.datasets import noise_labels
from cmgh.data.datasets.noise_labels import MISALIGNED_AUDIO, MISALIGNED_TEXT
from cmgh.data.extract.text import Vocabulary
from cmgh.data.stream.pretrain import PretrainStream
from cmgh.errors import DataError
from cmgh.train.loop import RunSpec, load_metrics_log, pretrain
from cmgh.train.setup import corpus_sources
from tests.train.tiny_runs import small

# The oracle at full strength: from the first step, every misaligned triplet loses its misaligned pair's term.
ORACLE = "variants.oracle={pretrain: {curriculum: {rule: threshold, scorer: oracle, granularity: loss, warmup_steps: 0}}}"
STEPS = 4


def oracle_config(world: Config, *extra: str) -> Config:
    return small(world, ORACLE, f"pretrain.steps={STEPS}", "pretrain.score_every=1", *extra)


def test_oracle_at_full_strength_keeps_exactly_the_aligned_triplets(tiny_world: Config, tmp_path: Path) -> None:
    cfg = oracle_config(tiny_world)
    run = tmp_path / "run"
    pretrain(cfg, RunSpec("ms", "oracle", 0, run))
    log = load_metrics_log(run)
    # The batches the run trained on: the stream is a pure function of (seed, step).
    run_cfg = config_mod.for_variant(cfg, "oracle")
    sources = corpus_sources(run_cfg, Vocabulary.load(cfg.path("features") / "vocab.json"), truth=True)
    stream = PretrainStream(sources, int(cfg.pretrain.batch_size), seed=0, stop=STEPS)
    misaligned_rows = 0
    for step, batch in enumerate(stream):
        misaligned = (batch[MISALIGNED_AUDIO] | batch[MISALIGNED_TEXT]).numpy()
        eligible = batch["has_text"].numpy()
        expected = 1.0 - (misaligned & eligible).sum() / eligible.sum()
        assert log.loc[log.step == step, "kept_fraction"].item() == pytest.approx(expected, abs=1e-12)
        dump = pd.read_csv(layout.scores_file(run, step))  # the rows the step trained on, and which it kept
        assert dump["item_id"].astype(str).tolist() == batch["item_id"]
        assert (dump["kept"].to_numpy() == ~(misaligned & eligible)).all()
        misaligned_rows += int(misaligned.sum())
    assert misaligned_rows > 0 and (log["kept_fraction"] < 1).any()


def test_oracle_on_data_without_ground_truth_is_refused_in_one_line(tiny_world: Config, tmp_path: Path) -> None:
    # The same features, but a data folder without the generator's noise_labels.csv (as downloaded data would be).
    cfg = oracle_config(tiny_world, f"paths.data={tmp_path / 'downloaded'}")
    with pytest.raises(DataError) as err:
        pretrain(cfg, RunSpec("ms", "oracle", 0, tmp_path / "run"))
    message = str(err.value)
    assert "\n" not in message and "'oracle'" in message and "(howto100m)" in message and "data.source: synth" in message
    assert not (tmp_path / "run" / "resume.pt").exists()


@pytest.mark.parametrize("variant", ["gr_gcl", "oracle_off"])
def test_runs_without_a_ground_truth_scorer_never_read_the_labels(tiny_world: Config, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    def refuse(path: object) -> pd.DataFrame:
        raise AssertionError(f"training read {path}")

    monkeypatch.setattr(noise_labels, "read_noise_labels", refuse)
    # oracle_off names the oracle scorer but selects nothing (rule none): no scorer runs, nothing is read.
    cfg = oracle_config(tiny_world, "variants.oracle_off={pretrain: {curriculum: {rule: none, scorer: oracle}}}")
    pretrain(cfg, RunSpec("ms", variant, 0, tmp_path / "run"), stop_after=2)
    assert ckpt.load(tmp_path / "run" / "resume.pt")["position"]["step"] == 2
