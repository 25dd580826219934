"""VATT tokenizers: raw inputs -> sequences of width-``D`` tokens (VATT Sec. 3.1, "Tokenization").

VATT feeds (almost) raw signals to Transformers: video is cut into non-overlapping 3-D patches
``t x h x w x 3`` that a linear layer maps to the model width, with learned position
embeddings; the audio waveform is cut into 1-D segments of ``audio_patch`` samples, likewise
projected; text is a sequence of word ids looked up in an embedding table and projected. Every
tokenizer acts on each sample independently (no batch statistics), so that a sample's tokens
depend only on that sample: the per-sample gradients of :mod:`cmgh.harmonize` rely on it.

DropToken (VATT Sec. 3.1, "DropToken") keeps a random subset of the video and audio tokens at
training time, which cuts the quadratic attention cost on redundant signals. It is applied by
:func:`drop_tokens` (used by :class:`cmgh.models.vatt.VATT`), not inside the tokenizers, so that
evaluation always sees every token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _trunc_normal(t: Tensor, std: float = 0.02) -> Tensor:
    return nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


class VideoTokenizer(nn.Module):
    """uint8 ``[B,T,H,W,3]`` -> tokens ``[B, (T/t)(H/h)(W/w), D]``.

    Pixels are scaled to ``[0, 1]`` (VATT's input range), cut into ``t x h x w`` patches and
    linearly projected. The learned spatio-temporal position embedding is factorised as in
    VATT: one table per axis (time, height, width), summed per patch, which keeps the number of
    position parameters small at paper scale (8 x 14 x 14 patches).
    """

    def __init__(self, width: int, patch: Sequence[int], video_shape: Sequence[int]) -> None:
        super().__init__()
        pt, ph, pw = (int(p) for p in patch)
        t, h, w = (int(s) for s in video_shape)
        if t % pt or h % ph or w % pw:
            raise ValueError(f"video patch {tuple(patch)} does not divide the video shape {tuple(video_shape)}")
        self.patch = (pt, ph, pw)
        self.video_shape = (t, h, w)
        self.grid = (t // pt, h // ph, w // pw)
        self.proj = nn.Linear(pt * ph * pw * 3, width)
        self.pos_t = nn.Parameter(_trunc_normal(torch.empty(self.grid[0], width)))
        self.pos_h = nn.Parameter(_trunc_normal(torch.empty(self.grid[1], width)))
        self.pos_w = nn.Parameter(_trunc_normal(torch.empty(self.grid[2], width)))

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    def forward(self, video: Tensor) -> Tensor:
        if tuple(video.shape[1:4]) != self.video_shape or video.shape[-1] != 3:
            raise ValueError(f"expected video [B,{','.join(map(str, self.video_shape))},3], got {list(video.shape)}")
        b = video.shape[0]
        pt, ph, pw = self.patch
        gt, gh, gw = self.grid
        x = video.to(self.proj.weight.dtype) / 255.0 if not video.is_floating_point() else video.to(self.proj.weight.dtype)
        x = x.reshape(b, gt, pt, gh, ph, gw, pw, 3).permute(0, 1, 3, 5, 2, 4, 6, 7)
        x = self.proj(x.reshape(b, gt * gh * gw, pt * ph * pw * 3))
        pos = self.pos_t[:, None, None] + self.pos_h[None, :, None] + self.pos_w[None, None, :]
        return x + pos.reshape(1, gt * gh * gw, -1)


class WaveformTokenizer(nn.Module):
    """float ``[B,S]`` waveform in ``[-1, 1]`` -> tokens ``[B, S // patch, D]`` (VATT's raw audio)."""

    def __init__(self, width: int, patch: int, samples: int) -> None:
        super().__init__()
        if samples < patch:
            raise ValueError(f"audio of {samples} samples is shorter than one patch of {patch}")
        self.patch = int(patch)
        self.samples = int(samples)
        self.proj = nn.Linear(self.patch, width)
        self.pos = nn.Parameter(_trunc_normal(torch.empty(self.num_tokens, width)))

    @property
    def num_tokens(self) -> int:
        return self.samples // self.patch

    def forward(self, audio: Tensor) -> Tensor:
        if audio.shape[-1] != self.samples:
            raise ValueError(f"expected audio [B,{self.samples}], got {list(audio.shape)}")
        n = self.num_tokens
        x = audio[:, : n * self.patch].to(self.proj.weight.dtype).reshape(audio.shape[0], n, self.patch)
        return self.proj(x) + self.pos


class LogMelTokenizer(nn.Module):
    """float ``[B,S]`` -> log-mel frames ``[B, frames, D]``: the spectrogram alternative to VATT's waveform.

    One token per STFT frame, with hop ``patch`` samples and a window of ``2 * patch``, so the
    token rate matches the waveform tokenizer's. Each frame's ``n_mels`` log energies are
    linearly projected.
    """

    def __init__(self, width: int, patch: int, samples: int, sample_rate: int, n_mels: int = 64) -> None:
        super().__init__()
        import torchaudio  # imported lazily: only this option needs it

        self.samples = int(samples)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=2 * int(patch), hop_length=int(patch), n_mels=n_mels, center=True
        )
        frames = self.samples // int(patch) + 1
        self.proj = nn.Linear(n_mels, width)
        self.pos = nn.Parameter(_trunc_normal(torch.empty(frames, width)))

    @property
    def num_tokens(self) -> int:
        return self.pos.shape[0]

    def forward(self, audio: Tensor) -> Tensor:
        if audio.shape[-1] != self.samples:
            raise ValueError(f"expected audio [B,{self.samples}], got {list(audio.shape)}")
        spec = torch.log(self.mel(audio.float()) + 1e-6)  # [B, n_mels, frames]
        return self.proj(spec.transpose(1, 2).to(self.proj.weight.dtype)) + self.pos


class TextTokenizer(nn.Module):
    """int64 ``[N, L]`` word ids -> tokens ``[N, L, D]`` and the key mask ``[N, L]`` (True = real token).

    Id 0 is padding (masked out of attention), id 1 the unknown word. VATT initialises the
    table from word2vec; here it is learned from scratch, then projected to the model width.
    """

    def __init__(self, width: int, vocab_size: int, embed_dim: int, max_tokens: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        _trunc_normal(self.embed.weight)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.proj = nn.Linear(embed_dim, width)
        self.pos = nn.Parameter(_trunc_normal(torch.empty(max_tokens, width)))
        self.max_tokens = int(max_tokens)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        if ids.shape[-1] > self.max_tokens:
            raise ValueError(f"text of {ids.shape[-1]} tokens exceeds max_tokens={self.max_tokens}")
        mask = ids != 0
        x = self.proj(self.embed(ids)) + self.pos[: ids.shape[-1]]
        return x, mask


def drop_tokens(tokens: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """VATT's DropToken: keep a random ``ceil((1 - rate) * N)`` tokens of each sample (order preserved).

    Each sample draws its own subset; the kept tokens keep their position embeddings (already
    added by the tokenizer), so the Transformer still knows where they came from.
    """
    if rate <= 0.0:
        return tokens
    b, n, d = tokens.shape
    keep = max(1, math.ceil((1.0 - rate) * n))
    if keep >= n:
        return tokens
    noise = torch.rand(b, n, generator=generator, device=tokens.device)
    idx = noise.argsort(dim=1)[:, :keep].sort(dim=1).values
    return tokens.gather(1, idx.unsqueeze(-1).expand(b, keep, d))
