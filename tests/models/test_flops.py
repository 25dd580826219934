"""The analytic FLOP count of a VATT training step equals what FlopCounterMode measures on the real step (tiny shapes)."""

from __future__ import annotations

import pytest
import torch

from cmgh import losses
from cmgh.models import VATT
from cmgh.models.flops import flop_counter, kept_tokens, sequence_lengths, train_flops
from tests.helpers import make_batch
from tests.models.test_vatt import vatt

CFG = {"width": 32, "depth": 2, "heads": 4, "video_patch": [2, 8, 8], "audio_patch": 200, "va_dim": 24, "vat_dim": 16,
       "text_embed_dim": 16, "droptoken": 0.5}
B, K, L = 3, 4, 6


def measured_per_sample(model: VATT) -> float:
    """Forward + plain backward of the two objectives, as counted by the project's counter."""
    batch = make_batch(B, K, L)
    with flop_counter() as counter:
        out = model(batch)
        valid = losses.text_valid(batch["text_mask"], batch["has_text"])
        l_va = losses.nce(out["z_va_video"], out["z_va_audio"], 0.07)
        l_vt = losses.mil_nce(out["z_vat_video"], out["z_vat_text"], batch["text_mask"], 0.07, valid=valid)
        losses.objective(l_va, l_vt, valid, 1.0).total.backward()
    return counter.get_total_flops() / B


@pytest.mark.parametrize("backbone", ["ms", "ma"])
@pytest.mark.parametrize("audio_tokenizer", ["waveform", "logmel"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_analytic_equals_measured(backbone: str, audio_tokenizer: str, dropout: float) -> None:
    torch.manual_seed(0)
    model = vatt({**CFG, "dropout": dropout, "audio_tokenizer": audio_tokenizer}, backbone).train()
    # On CPU, dropout > 0 sends attention to the explicit-softmax path (no recompute in its backward);
    # without dropout it runs the fused kernel, which recomputes the scores.
    analytic = train_flops(model, B, K, L, attention_recompute=dropout == 0.0)
    assert measured_per_sample(model) == pytest.approx(analytic.total, rel=1e-9)


def test_counter_sees_the_fused_cpu_attention() -> None:
    torch.manual_seed(0)
    model = vatt({**CFG, "dropout": 0.0}, "ma").train()
    no_attention = train_flops(model, B, K, L).total - train_flops(model, B, K, L).parts["attention"]
    assert measured_per_sample(model) > no_attention


def test_sequence_lengths_follow_droptoken() -> None:
    model = vatt(CFG, "ma")  # video 4x4x4 = 64 patches, audio 16000 / 200 = 80 segments
    assert sequence_lengths(model, K, L) == {"video": (1, 33), "audio": (1, 41), "text": (K, L + 1)}
    assert sequence_lengths(model, K, L, training=False)["video"] == (1, 65)
    assert kept_tokens(1568, 0.5) == 784 and kept_tokens(5, 0.0) == 5 and kept_tokens(3, 0.9) == 1


@pytest.mark.parametrize("rule", ["none", "cmgh"])
def test_counter_runs_the_trainers_step(rule: str) -> None:
    """The harmonizer's autograd.grad at the meeting point works under the counter; its extra head passes are small."""
    from cmgh.harmonize import Harmonizer
    from cmgh.train.step import train_step

    torch.manual_seed(0)
    model = vatt({**CFG, "dropout": 0.1}, "ma").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    harmonizer = Harmonizer(rule)
    with flop_counter() as counter:
        train_step(model, make_batch(B, K, L), optimizer, None, harmonizer, step=0, temperature=0.07)
    analytic = train_flops(model, B, K, L)
    assert analytic.total <= counter.get_total_flops() / B <= analytic.total * 1.001
