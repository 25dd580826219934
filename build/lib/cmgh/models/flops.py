"""Matmul FLOPs of one VATT training step: counted from the model's shapes, and measured on the real step.

Why: the data loader has to keep up with the model, and the clips per second a model consumes
are the FLOP/s it achieves divided by the FLOPs of a sample. The analytic count needs no run
(``meta`` weights suffice, so paper shapes cost nothing); :func:`flop_counter` measures the
trainer's real step to check it. ``benchmarks/model_demand.py`` does both.

What is counted: every matrix product (linear layers, attention scores and values, the loss
similarities), 2 FLOPs per multiply-add, as :class:`torch.utils.flop_counter.FlopCounterMode`
does; norms, activations, softmax and the optimizer update are pointwise and left out. Per
Transformer block and sequence of ``n`` tokens of width ``d`` with MLP hidden size ``r``:
``(8 d^2 + 4 d r) n`` for the linear layers (``24 n d^2`` at ``r = 4d``) and ``4 n^2 d`` for
attention, forward. The backward costs twice the forward (input and weight gradients), except
where no input gradient is needed (the video and audio patch projections, whose inputs are raw
signals), and except that fused attention kernels (flash, memory-efficient) recompute the scores
in their backward: ``attention_recompute=True`` counts that extra ``2 n^2 d``, as the counter
does for those kernels (explicit-softmax attention, which PyTorch uses on CPU under dropout, has
no recompute).

Not counted: the extra passes the harmonizer makes through the heads and losses only (per-sample
gradients at the meeting point); they are a fraction of the heads' cost, itself about ``1e-5``
of a step at paper shapes. The ``parameters`` meeting point re-runs the tail blocks per sample
and is not covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cmgh.models.tokenizers import LogMelTokenizer
from cmgh.models.vatt import VATT


@dataclass(frozen=True)
class StepFlops:
    """FLOPs per training sample of forward + backward, by part, and the sequences they come from."""

    sequences: dict[str, tuple[int, int]]  # modality -> (sequences per sample, tokens per sequence incl. [AGG])
    parts: dict[str, float]  # "linear" (blocks), "attention" (blocks), "tokenizers", "heads", "losses"

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def kept_tokens(n: int, rate: float) -> int:
    """Tokens DropToken keeps of ``n`` (the rule of :func:`cmgh.models.tokenizers.drop_tokens`)."""
    if rate <= 0.0:
        return n
    return min(n, max(1, math.ceil((1.0 - rate) * n)))


def sequence_lengths(model: VATT, captions: int, text_tokens: int, training: bool = True) -> dict[str, tuple[int, int]]:
    """(sequences per sample, tokens per sequence with the ``[AGG]`` token) for each modality's pass."""
    rate = model.droptoken if training else 0.0
    return {
        "video": (1, kept_tokens(model.video_tok.num_tokens, rate) + 1),
        "audio": (1, kept_tokens(model.audio_tok.num_tokens, rate) + 1),
        "text": (captions, text_tokens + 1),  # padded captions are computed (masked in attention only)
    }


def train_flops(model: VATT, batch_size: int, captions: int, text_tokens: int, *, attention_recompute: bool = False) -> StepFlops:
    """FLOPs per sample of forward + backward of ``model`` in training mode on batches of ``batch_size``.

    ``captions`` x ``text_tokens``: the text of a sample (``[B, K, L]``). The batch size only
    enters through the losses, whose similarity matrices are ``B x B`` (video-audio) and
    ``B x B*K`` (video-text).
    """
    d = model.width
    first = model.backbone.transformer("video").blocks[0]
    hidden = first.mlp[0].out_features
    depth = model.backbone.transformer("video").depth
    seqs = sequence_lengths(model, captions, text_tokens)
    attn_backward = 2.5 if attention_recompute else 2.0
    linear = attention = 0.0
    for count, n in seqs.values():
        linear += 3 * depth * count * (8 * d * d + 4 * d * hidden) * n
        attention += (1 + attn_backward) * depth * count * 4 * n * n * d

    # Patch projections see every token (DropToken comes after); raw-signal inputs need no input gradient.
    vt = model.video_tok
    tokenizers = 2 * 2 * vt.num_tokens * vt.proj.in_features * d
    at = model.audio_tok
    tokenizers += 2 * 2 * at.num_tokens * at.proj.in_features * d
    if isinstance(at, LogMelTokenizer):  # mel filterbank on the power spectrogram, forward only
        n_freqs, n_mels = at.mel.mel_scale.fb.shape
        tokenizers += 2 * at.num_tokens * n_freqs * n_mels
    tokenizers += 3 * 2 * captions * text_tokens * model.text_tok.proj.in_features * d  # embeddings need the input gradient

    h = model.head
    va, vat = h.video_va.out_features, h.text_vat.out_features
    heads = 3 * 2 * (sum(_size(lin) for lin in (h.video_va, h.audio_va, h.va_vat[0], h.va_vat[2])) + captions * _size(h.text_vat))
    losses = 3 * 2 * batch_size * (va + captions * vat)  # per sample: its row of B x B and B x B*K similarities
    return StepFlops(seqs, {"linear": linear, "attention": attention, "tokenizers": tokenizers, "heads": heads, "losses": losses})


def _size(linear: nn.Linear) -> int:
    return linear.in_features * linear.out_features


def _sdpa_forward(query: tuple[int, ...], key: tuple[int, ...], value: tuple[int, ...], *args: object, **kwargs: object) -> int:
    b, h, s_q, d_q = query
    return 2 * b * h * s_q * key[2] * (d_q + value[3])


def _sdpa_backward(grad_out: tuple[int, ...], query: tuple[int, ...], key: tuple[int, ...], value: tuple[int, ...], *args: object, **kwargs: object) -> int:
    # as torch's formula for the GPU kernels: recomputed scores, then the gradients of scores, values, queries, keys
    b, h, s_q, d_q = query
    s_k, d_v = key[2], value[3]
    return 2 * b * h * s_q * s_k * (3 * d_q + 2 * d_v)


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP is counted under "Global" only."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    """:class:`FlopCounterMode` that works on the trainer's step, and also counts the fused CPU attention kernel.

    Its module tracker hooks every module's tensors for backward, which makes
    ``torch.autograd.grad`` at a leaf fail ("A leaf node was passed to _will_engine_execute_node",
    pytorch/pytorch#131753), and the harmonizer takes exactly such gradients at the detached
    meeting point; without the tracker there is no per-module table, the totals are the same.
    PyTorch has FLOP formulas for the GPU attention kernels only; the CPU one gets the same formulas.
    """
    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward,
    }
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    return counter
