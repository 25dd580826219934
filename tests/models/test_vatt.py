"""VATT tokenizers, backbones and heads: shapes, DropToken, padding masks, per-sample independence."""

from __future__ import annotations

import pytest
import torch

from cmgh.models import VATT, ModelInputs, ModelSpec, build_model, drop_tokens
from tests.helpers import make_batch

CFG = {"width": 32, "depth": 2, "heads": 4, "video_patch": [2, 8, 8], "audio_patch": 200, "va_dim": 24, "vat_dim": 16,
       "text_embed_dim": 16}


def vatt(model: dict, backbone: str, vocab_size: int = 100) -> VATT:
    """A model of the ``model`` keys given (the schema's defaults for the rest) on the default input shapes."""
    return VATT(ModelSpec.from_config(model), backbone, ModelInputs.from_config({}, vocab_size=vocab_size))


@pytest.mark.parametrize("backbone", ["ms", "ma"])
@pytest.mark.parametrize("droptoken", [0.0, 0.5])
@pytest.mark.parametrize("audio_tokenizer", ["waveform", "logmel"])
def test_forward_shapes(backbone: str, droptoken: float, audio_tokenizer: str) -> None:
    torch.manual_seed(0)
    model = vatt({**CFG, "droptoken": droptoken, "audio_tokenizer": audio_tokenizer}, backbone)
    model.train()
    out = model(make_batch())
    assert out["video_rep"].shape == (3, 32) and out["audio_rep"].shape == (3, 32)
    assert out["text_rep"].shape == (3, 4, 32)
    assert out["z_va_video"].shape == (3, 24) and out["z_va_audio"].shape == (3, 24)
    assert out["z_vat_video"].shape == (3, 16) and out["z_vat_text"].shape == (3, 4, 16)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_backbones_share_or_not() -> None:
    ms, ma = vatt(CFG, "ms"), vatt(CFG, "ma")
    assert ms.backbone.transformer("video") is not ms.backbone.transformer("audio")
    assert ma.backbone.transformer("video") is ma.backbone.transformer("text")
    assert sum(p.numel() for p in ma.parameters()) < sum(p.numel() for p in ms.parameters())


def test_drop_tokens_keeps_a_random_subset() -> None:
    x = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10, 1).expand(2, 10, 3)
    y = drop_tokens(x, 0.5, torch.Generator().manual_seed(0))
    assert y.shape == (2, 5, 3)
    for row in range(2):  # kept tokens are a subset, in order
        vals = y[row, :, 0]
        assert set(vals.tolist()) <= set(x[row, :, 0].tolist()) and torch.all(vals[1:] > vals[:-1])
    assert drop_tokens(x, 0.0) is x


def test_droptoken_only_in_training() -> None:
    torch.manual_seed(0)
    model = vatt({**CFG, "droptoken": 0.5}, "ms").eval()
    batch = make_batch()
    a, b = model.encode(batch)["video_rep"], model.encode(batch)["video_rep"]
    torch.testing.assert_close(a, b)
    model.train()
    torch.manual_seed(1)
    c = model.encode(batch)["video_rep"]
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_text_padding_is_masked(backbone: str) -> None:
    torch.manual_seed(0)
    model = vatt(CFG, backbone).eval()
    ids = torch.tensor([[5, 7, 9, 0, 0, 0], [3, 0, 0, 0, 0, 0]])
    full = model.text_rep(ids)
    torch.testing.assert_close(full[0], model.text_rep(ids[:1, :3])[0], atol=1e-5, rtol=1e-5)  # padding == absent
    torch.testing.assert_close(full[1], model.text_rep(ids[1:, :1])[0], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # whatever the padding embeds to, it is not attended to
        model.text_tok.embed.weight[0].normal_()
        model.text_tok.pos[3:].normal_()
    torch.testing.assert_close(model.text_rep(ids), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_sample_independence(backbone: str) -> None:
    torch.manual_seed(0)
    model = vatt(CFG, backbone).eval()
    a, b = make_batch(seed=0), make_batch(seed=1)
    mixed = {k: torch.cat([a[k][:1], b[k][1:]]) for k in a}
    out_a, out_m = model(a), model(mixed)
    for key in ("video_rep", "audio_rep", "text_rep", "z_vat_video", "z_vat_text"):
        torch.testing.assert_close(out_a[key][0], out_m[key][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["ms", "ma"])
def test_video_tail_reproduces_video_rep(backbone: str) -> None:
    torch.manual_seed(0)
    model = vatt(CFG, backbone).eval()
    reps = model.encode(make_batch(), hidden_blocks=1)
    assert reps["video_hidden"].shape == (3, 1 + 4 * 4 * 4, 32)
    torch.testing.assert_close(model.video_tail(1)(reps["video_hidden"]), reps["video_rep"])
    assert all(p is q for p, q in zip(model.video_tail(2).parameters(), model.backbone.transformer("video").parameters(), strict=True))


def test_embed_methods() -> None:
    torch.manual_seed(0)
    model = vatt(CFG, "ms").eval()
    batch = make_batch()
    assert model.embed_video(batch["video"]).shape == (3, 32)
    assert model.embed_video(batch["video"], space="vat").shape == (3, 16)
    assert model.embed_audio(batch["audio"], space="va").shape == (3, 24)
    assert model.embed_text(batch["text"][:, 0]).shape == (3, 16)
    torch.testing.assert_close(model.embed_video(batch["video"], space="vat"), model(batch)["z_vat_video"])
    with pytest.raises(ValueError):
        model.embed_video(batch["video"], space="nope")


def test_build_model_from_config(tiny_config) -> None:
    model = build_model(tiny_config, "ma", vocab_size=128)
    assert model.video_tok.video_shape == (8, 32, 32)
    assert model.audio_tok.samples == 16000
    out = model(make_batch(k=tiny_config.features.text.candidates))
    assert out["z_vat_text"].shape[-1] == tiny_config.model.vat_dim
