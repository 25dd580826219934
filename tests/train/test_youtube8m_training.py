"""HowTo100M + YouTube-8M pre-training on real extracted files, decoded and packed: a YouTube-8M
video without captions is a video-audio pair (no video-text loss, no gradient from it, left alone by
the harmonizer), and the mixture trains to the end with both corpora in its batches."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cmgh import config as config_mod
from cmgh import layout, losses
from cmgh.data.stream import augment
from cmgh.data.stream.pretrain import collate
from cmgh.data.extract.text import Vocabulary
from cmgh.harmonize import Harmonizer, forward_losses, harmonized_backward
from cmgh.models import build_model
from cmgh.train.loop import RunSpec, pretrain
from cmgh.train.setup import corpus_sources, seed_everything
from cmgh.train.step import train_step
from tests.data.youtube8m_tree import captioned_ids, youtube8m_world
from tests.train.tiny_runs import small

FORMATS = ("decoded", "packed")
HARMONIZED = ("pretrain.harmonize.rule=cmgh", "pretrain.curriculum.rule=cmgh", "pretrain.curriculum.warmup_steps=0",
              "pretrain.curriculum.schedule=constant", "pretrain.curriculum.start_keep=0.5", "pretrain.curriculum.end_keep=0.5")


@pytest.fixture(scope="module", params=FORMATS)
def world(request: pytest.FixtureRequest, tiny_world: config_mod.Config, tmp_path_factory: pytest.TempPathFactory) -> config_mod.Config:
    return youtube8m_world(tiny_world, tmp_path_factory.mktemp(f"yt8m_{request.param}"), fmt=request.param)


def youtube8m_batch(cfg: config_mod.Config, captioned: bool | None, size: int = 6) -> dict:
    """``size`` samples of the YouTube-8M source training reads (``captioned``: only videos with or
    without captions, None: alternating), jitter applied as the trainer does."""
    vocab = Vocabulary.load(layout.vocab(cfg.path("features")))
    source = dict((name, s) for name, _, s in corpus_sources(cfg, vocab))["youtube8m"]
    root = layout.dataset_dir(cfg.path("data"), "youtube8m")
    index = source.index if hasattr(source, "index") else source.clips.index
    with_text = index["video_id"].isin(captioned_ids(root)).to_numpy()
    pools = {True: np.flatnonzero(with_text), False: np.flatnonzero(~with_text)}
    assert len(pools[True]) and len(pools[False])
    wanted = [captioned if captioned is not None else k % 2 == 0 for k in range(size)]
    samples = [source.sample(int(pools[w][k % len(pools[w])]), np.random.default_rng(k)) for k, w in enumerate(wanted)]
    batch = collate(samples, step=0)
    batch["video"] = augment.apply_jitter(batch["video"], batch["jitter"])
    assert batch["has_text"].tolist() == wanted
    return batch


def model_for(cfg: config_mod.Config) -> torch.nn.Module:
    seed_everything(0)
    return build_model(cfg, "ms", vocab_size=len(Vocabulary.load(layout.vocab(cfg.path("features")))))


def test_uncaptioned_batch_trains_with_the_video_audio_loss_only(world: config_mod.Config) -> None:
    cfg = small(world, *HARMONIZED)
    batch = youtube8m_batch(cfg, captioned=False)
    temperature = float(cfg.pretrain.temperature)
    harmonized, plain = model_for(cfg), model_for(cfg)
    plain.load_state_dict(copy.deepcopy(harmonized.state_dict()))
    harmonizer = Harmonizer.from_config(cfg.to_dict()["pretrain"])
    result = train_step(harmonized, batch, torch.optim.SGD(harmonized.parameters(), lr=0.0), None, harmonizer, step=5, temperature=temperature)
    assert result.finite and float(result.stats.objective.vt) == 0.0
    assert not result.forward.valid_vt.any() and (result.forward.l_vt == 0).all()
    assert (result.stats.cosine == 0).all() and result.stats.weights is not None and result.stats.weights.kept.all()
    # The reference: the plain gradient of the video-audio loss alone, no cut, no harmonizer.
    z = plain.heads(plain.encode(batch))
    losses.nce(z["z_va_video"], z["z_va_audio"], temperature).mean().backward()
    for (name, p), (_, q) in zip(harmonized.named_parameters(), plain.named_parameters(), strict=True):
        if q.grad is None or not q.grad.any():  # the text tower and the video-text heads: untouched
            assert p.grad is None or not p.grad.any(), name
        else:
            torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert any(name.startswith("backbone.text") or "vat" in name for name, q in plain.named_parameters() if q.grad is None or not q.grad.any())


def test_the_harmonizer_leaves_uncaptioned_rows_alone(world: config_mod.Config) -> None:
    cfg = small(world, *HARMONIZED)
    batch = youtube8m_batch(cfg, captioned=None)
    unc = ~batch["has_text"]
    model = model_for(cfg)
    fwd = forward_losses(model, batch, float(cfg.pretrain.temperature))
    assert fwd.valid_vt.tolist() == batch["has_text"].tolist()
    assert (fwd.l_vt[unc] == 0).all() and (fwd.l_vt[~unc] > 0).all()
    (g_vt,) = torch.autograd.grad(fwd.l_vt.sum(), fwd.meet, retain_graph=True)
    assert (g_vt[unc] == 0).all() and g_vt[~unc].abs().sum() > 0  # no video-text gradient from an uncaptioned row
    combined = []
    fwd.video_rep.register_hook(lambda grad: combined.append(grad.detach().clone()))
    harmonizer = Harmonizer.from_config(cfg.to_dict()["pretrain"])
    stats = harmonized_backward(fwd.video_rep, fwd.meet, fwd.l_va, fwd.l_vt, fwd.valid_vt, vt_weight=harmonizer.vt_weight,
                                rule="cmgh", curriculum=harmonizer.curriculum, step=5)
    assert (stats.cosine[unc] == 0).all() and stats.weights.kept[unc].all() and not stats.weights.kept[~unc].all()
    # meet.grad is the objective's own gradient; the backbone got the rule's: equal on the rows without text.
    torch.testing.assert_close(combined[0][unc], fwd.meet.grad[unc])
    assert not torch.allclose(combined[0][~unc], fwd.meet.grad[~unc])


def test_the_mixture_trains_with_uncaptioned_pairs_outside_the_video_text_loss(world: config_mod.Config, tmp_path: Path) -> None:
    cfg = small(world, "pretrain.steps=4", "pretrain.score_every=1")
    run = tmp_path / "run"
    pretrain(cfg, RunSpec("ms", "gr_gcl", 0, run))
    assert (run / layout.CHECKPOINT).is_file()
    scores = pd.concat([pd.read_csv(f) for f in layout.score_files(run)], ignore_index=True)
    assert set(scores["dataset"]) == {"howto100m", "youtube8m"}
    yt = scores[scores["dataset"] == "youtube8m"]
    video = yt["item_id"].str.replace(r"_\d{3}$", "", regex=True) if cfg.features.format == "decoded" else yt["item_id"]
    with_text = video.isin(captioned_ids(layout.dataset_dir(cfg.path("data"), "youtube8m")))
    assert with_text.any() and (~with_text).any()
    pairs, triplets = yt[~with_text], yt[with_text]
    assert (pairs["loss_vt"] == 0).all() and (pairs["cos"] == 0).all() and pairs["kept"].all() and (pairs["loss_va"] > 0).all()
    assert (triplets["loss_vt"] > 0).all()
