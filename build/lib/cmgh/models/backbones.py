"""Transformer backbones of VATT (VATT Sec. 3.1-3.2): modality-specific (``ms``) and -agnostic (``ma``).

Both share the same pre-LN block (LayerNorm -> multi-head self-attention -> residual, LayerNorm
-> MLP -> residual) computed with :func:`torch.nn.functional.scaled_dot_product_attention`,
with a key padding mask for text. Each modality's sequence is prefixed with a learned
``[AGG]`` token whose output is the modality's representation (VATT's aggregation).

* ``ms``: one Transformer per modality (VATT-BBS/MBS/LBS).
* ``ma``: one Transformer shared by the three modalities, each modality processed as its own
  sequence with its own tokenizer and ``[AGG]`` token (VATT-MA, the model CMGH studies).

Every operation is per sample (no batch statistics), so representation ``i`` depends only on
input ``i``. ``start``/``stop`` let callers run a block range, which the ``parameters`` meeting
point of :mod:`cmgh.harmonize.gradients` uses to re-run the last blocks functionally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODALITIES = ("video", "audio", "text")


class Attention(nn.Module):
    """Multi-head self-attention with an optional key padding mask (True = attend)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"heads={heads} does not divide width={width}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout
        # False = explicit softmax attention (same maths): used under torch.func.vmap, which has
        # no batching rule for the fused CPU kernel and would fall back to a slow loop.
        self.fused = True

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        p = self.dropout if self.training else 0.0
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        else:
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            y = F.dropout(scores.softmax(dim=-1), p=p, training=p > 0) @ v
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN Transformer block (as in ViT and VATT)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), key_mask))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of :class:`Block` followed by a final LayerNorm."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor, key_mask: Tensor | None = None, start: int = 0, stop: int | None = None) -> Tensor:
        """Run blocks ``[start, stop)``; the final norm is applied only when running to the end."""
        stop = self.depth if stop is None else stop
        for block in self.blocks[start:stop]:
            x = block(x, key_mask)
        return self.norm(x) if stop == self.depth else x


class Backbone(nn.Module):
    """Prefix ``[AGG]`` tokens, run the modality's Transformer, return the ``[AGG]`` output.

    Subclasses decide which Transformer serves which modality (:meth:`transformer`).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.agg = nn.ParameterDict(
            {m: nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, width), std=0.02)) for m in MODALITIES}
        )

    def transformer(self, modality: str) -> Transformer:  # pragma: no cover - abstract
        raise NotImplementedError

    def prefix(self, modality: str, tokens: Tensor, key_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Prepend the modality's ``[AGG]`` token (always attendable) to tokens and mask."""
        x = torch.cat([self.agg[modality].expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        if key_mask is not None:
            key_mask = torch.cat([key_mask.new_ones(key_mask.shape[0], 1), key_mask], dim=1)
        return x, key_mask

    def forward(
        self, modality: str, tokens: Tensor, key_mask: Tensor | None = None, hidden_blocks: int = 0
    ) -> tuple[Tensor, Tensor | None]:
        """Representation ``[N, D]`` of each sequence, and optionally the hidden state before the last blocks.

        With ``hidden_blocks = k > 0`` the second output is the ``[N, 1+T, D]`` input of the last
        ``k`` blocks (for the ``parameters`` meeting point), else ``None``.
        """
        net = self.transformer(modality)
        x, mask = self.prefix(modality, tokens, key_mask)
        hidden = None
        if hidden_blocks > 0:
            if hidden_blocks > net.depth:
                raise ValueError(f"hidden_blocks={hidden_blocks} exceeds the depth {net.depth}")
            split = net.depth - hidden_blocks
            x = net(x, mask, 0, split)
            hidden = x
            x = net(x, mask, split)
        else:
            x = net(x, mask)
        return x[:, 0], hidden


class ModalitySpecific(Backbone):
    """``ms``: one Transformer per modality."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__(width)
        self.nets = nn.ModuleDict({m: Transformer(width, depth, heads, mlp_ratio, dropout) for m in MODALITIES})

    def transformer(self, modality: str) -> Transformer:
        return self.nets[modality]


class ModalityAgnostic(Backbone):
    """``ma``: one Transformer shared by all modalities (modality-specific tokenizers and ``[AGG]``)."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__(width)
        self.net = Transformer(width, depth, heads, mlp_ratio, dropout)

    def transformer(self, modality: str) -> Transformer:
        return self.net


class Tail(nn.Module):
    """The last blocks of a modality's Transformer as a module: hidden ``[N,1+T,D]`` -> representation ``[N,D]``.

    Shares its parameters with the backbone (it holds references, not copies); used with
    :func:`torch.func.functional_call` for per-sample parameter gradients.
    """

    def __init__(self, transformer: Transformer, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(transformer.blocks[transformer.depth - blocks :])
        self.norm = transformer.norm

    def forward(self, hidden: Tensor, key_mask: Tensor | None = None) -> Tensor:
        x = hidden
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x)[:, 0]


BACKBONES: dict[str, type[Backbone]] = {"ms": ModalitySpecific, "ma": ModalityAgnostic}


def build_backbone(name: str, width: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r} (expected one of {', '.join(BACKBONES)})")
    return BACKBONES[name](width, depth, heads, mlp_ratio, dropout)
